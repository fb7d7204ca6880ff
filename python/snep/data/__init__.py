"""Data layer of snep: data sets, loaders, worker shards and minibatch streams.

The SNEP method (Hasenclever et al., JMLR 18, 2017) splits the training data into
disjoint shards, one per worker; each worker draws minibatches from its shard.
This package provides the validated :class:`Dataset` type, loaders for the
embedded 8x8 digits, MNIST and Omniglot, the sharding schemes and the minibatch
stream.
"""

from __future__ import annotations

from snep.data.dataset import Dataset, holdout_validation
from snep.data.loaders import (
    DATASET_NAMES,
    find_shared_data,
    flatten_unit,
    load_dataset,
    load_digits,
    load_idx,
    load_mnist,
    load_mnist_idx_dir,
    load_npz,
    load_omniglot,
    save_idx,
)
from snep.data.minibatch import MinibatchStream, gather_batch
from snep.data.sharding import SHARDING_METHODS, make_shards, shard_dirichlet, shard_iid

__all__ = [
    "DATASET_NAMES",
    "SHARDING_METHODS",
    "Dataset",
    "MinibatchStream",
    "find_shared_data",
    "flatten_unit",
    "gather_batch",
    "holdout_validation",
    "load_dataset",
    "load_digits",
    "load_idx",
    "load_mnist",
    "load_mnist_idx_dir",
    "load_npz",
    "load_omniglot",
    "make_shards",
    "save_idx",
    "shard_dirichlet",
    "shard_iid",
]
