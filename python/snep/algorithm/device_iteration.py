"""A SNEP worker's iteration on a device backend (docs/method.md §2).

On the host the worker loops over its samples in Python, each kernel reading its
inputs from host memory (:meth:`~snep.algorithm.worker.SnepWorker._host_samples`).
On a device the inputs of a whole iteration (every chain's minibatch indices and the
pass scalars of each sample) go into one host record that one asynchronous copy
takes to the device; the iteration's launches read them there only, so that nothing
synchronises with the host inside an iteration and the launches can be captured in a
CUDA graph and replayed (``train.cuda_graph``, :mod:`snep.backends.cuda.graph`).
This module holds that device path, apart from the worker's host logic; it is
checked on the CPU through a device double (``tests/algorithm/device_double.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from snep.backends.base import is_device, missing_device_methods
from snep.backends.cuda.fused import pack_params
from snep.errors import ConfigError

if TYPE_CHECKING:
    from snep.algorithm.worker import SnepWorker

__all__ = ["DeviceIteration"]


class DeviceIteration:
    """The staged inputs and the launches of a worker's iteration on a device backend.

    Parameters
    ----------
    worker : SnepWorker
        The worker whose arrays live on the device (its backend must implement
        :class:`~snep.backends.base.DeviceBackend`).
    """

    def __init__(self, worker: SnepWorker) -> None:
        backend = worker.backend
        if not is_device(backend):
            missing = missing_device_methods(backend)
            raise ConfigError(
                f"backend {getattr(backend, 'name', type(backend).__name__)!r} keeps its arrays "
                f"on a device but lacks {missing}: a device backend stages each iteration's "
                "inputs (see snep.backends.cuda.backend.CudaBackend)"
            )
        self.worker = worker
        # per sample, every chain's minibatch indices, chain after chain
        self.inputs = backend.step_inputs(
            worker._samples_per_iteration(), worker.n_chains * worker.batch_size
        )
        self._graphs: dict[bool, Any] = {}
        self._bodies: dict[bool, Any] = {}
        self._loglik = worker.xp.zeros((), np.float64)  # the mean per example, on the device

    def run(self, k_samples: int, refresh: bool) -> None:
        """One iteration: this iteration's indices and pass scalars into the host record,
        one asynchronous copy to the device, then the launches (:meth:`_body`), either
        now or, with ``train.cuda_graph``, as the replay of a CUDA graph captured at the
        first iteration of each variant (with or without the anchor refresh)."""
        w = self.worker
        record = self.inputs.host()
        for k in range(k_samples):
            w.shard.next_indices(record["idx"][k])
            w.sampler_steps += 1
            w._set_sample_scalars(k, k_samples)
            pack_params(w.scalars, record["params"][k : k + 1].reshape(()))
        self.inputs.upload()
        body = self._bodies.get(refresh)
        if body is None:
            body = self._bodies[refresh] = lambda: self._body(k_samples, refresh)
        if not w._graphed:
            w.backend.run_eager(body)
        elif refresh in self._graphs:
            self._graphs[refresh].launch()
        else:
            self._graphs[refresh] = w.backend.capture(body)
        w._last_loglik = self._loglik

    def _body(self, k_samples: int, refresh: bool) -> None:
        """The launches of one iteration, reading its inputs from the device record only
        (what a CUDA graph replays): per sample the minibatch gather, the MLP fwd+bwd and
        the fused pass; the pooled site step; then the anchor refresh when due."""
        w, inputs = self.worker, self.inputs
        xp, a, shard = w.xp, w.arrays, w.shard
        loglik = None
        for k in range(k_samples):
            shard.gather_device(xp, inputs.idx[k])
            loglik = shard.loglik_and_grad(a.x)
            if w._score_cv:
                w._accumulate_score()
            w.backend.fused_step_device_params(w.kind, a, shard.grad, inputs.params(k))
        if w._pooled:
            w._pooled_site_step(k_samples)
        xp.divide(loglik, w.batch_size, out=w._chain_loglik)
        self._loglik[...] = w._chain_loglik.mean()
        if refresh:
            w._refresh_anchor()
