"""Benchmarks of one CPU worker iteration against its baselines (docs/method.md §4).

Groups (per size ``c<chains>-b<batch>`` and thread count ``t<n>``):

``iteration``
    (a) snep: ``SnepWorker.step`` with Adam-SGLD and with SGLD — minibatch gather,
    ``CpuMLP.loglik_and_grad``, the fused sampler + site pass with in-kernel noise, the
    anchor refresh every ``n_inner`` = 10 and, every ``n_sync`` = 10, the push to an
    in-process ``PosteriorServer`` and its reply (so the *median* is an iteration without
    sync and the *mean* includes the amortised sync); with 8 chains (``--bench-large``) the
    same hot path batched over chains.  Also the sync alone (push + server + reply).
    (b) the same iteration written plainly in PyTorch eager (``bench/torch_reference.py``);
    (b'') the same iteration compiled with ``torch.compile`` (``CompiledTorchSnepWorker``);
    (b-foreach) eager autograd with the update in ``torch._foreach_*`` multi-tensor ops
    (``ForeachTorchSnepWorker``, as ``torch.optim`` with ``foreach=True``);
    (b') the same iteration as one ``jax.jit`` function (``bench/jax_reference.py``), the
    strongest CPU peer (skipped without JAX).
``fwd+bwd``
    (c) the bare GEMMs of the forward + backward in numpy (3 forward, 3 weight-gradient,
    2 input-gradient ``np.matmul`` into preallocated outputs);
    (d) ``CpuMLP.loglik_and_grad`` alone; (e) the torch forward + autograd backward alone.

Threads: ``--bench-threads`` (default 1) for BLAS (threadpoolctl), PyTorch and the snep
fused pass.  The PyTorch benchmarks are skipped when torch is not installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from benchutil import (
    LAYERS,
    BatchedSnepIteration,
    NumpyGemms,
    bench_call,
    cpu_mlp_call,
    make_default_worker,
    make_shard,
    make_worker,
    sampler_kind,
)
from snep.model.spec import ParamSpec

SAMPLERS = ["adam_sgld", "sgld"]


@pytest.fixture(scope="module")
def spec() -> ParamSpec:
    return ParamSpec(LAYERS)


@pytest.fixture(scope="module")
def shard() -> tuple[np.ndarray, np.ndarray]:
    return make_shard()


@pytest.fixture
def torch(threads):
    """PyTorch (skipped when absent), with ``threads`` intra-op threads."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(threads)
    return torch


def _info(spec: ParamSpec, size: tuple[int, int], threads: int, **kw) -> dict:
    chains, batch = size
    return {"P": spec.size, "threads": threads, "batch": batch, "chains": chains, **kw}


def _snep_iteration(spec, shard, sampler, size, threads):
    chains, batch = size
    if chains == 1:
        return make_worker(spec, shard, sampler, batch, threads), "SnepWorker.step + sync"
    return (
        BatchedSnepIteration(spec, shard, sampler, chains, batch, threads),
        "batched hot path of SnepWorker.step",
    )


def _peer(worker_class, spec, shard, sampler, size, threads):
    """A peer's worker (``torch_reference`` / ``jax_reference`` API) with the snep
    benchmark's configuration and starting state."""
    it, _ = _snep_iteration(spec, shard, sampler, size, threads)
    single = size[0] == 1
    scalars = it.worker.scalars if single else it.scalars
    peer = worker_class(
        spec, sampler_kind(sampler), scalars, shard[0], shard[1],
        n_chains=size[0], batch_size=size[1], n_inner=it.config.snep.n_inner,
    )  # fmt: skip
    peer.load(it.worker.arrays if single else it.arrays)
    return peer


def _time_peer(benchmark, step, spec, size, threads, sampler, impl, backend, what):
    """Time a peer's iteration in the snep iteration's group."""
    bench_call(
        benchmark,
        step,
        group=f"iteration c{size[0]}-b{size[1]} t{threads}",
        warmup=5,  # torch.compile compiles at the first call (~20 s)
        **_info(spec, size, threads, bench="iteration", impl=impl, backend=backend,
                sampler=sampler, what=what),
    )  # fmt: skip


# ------------------------------------------------------------------ (a) snep iteration
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_snep_iteration(benchmark, spec, shard, sampler, size, threads):
    it, what = _snep_iteration(spec, shard, sampler, size, threads)
    bench_call(
        benchmark,
        it.step,
        group=f"iteration c{size[0]}-b{size[1]} t{threads}",
        warmup=5,
        **_info(
            spec,
            size,
            threads,
            bench="iteration",
            impl="snep",
            backend="cpu",
            sampler=sampler,
            what=what,
            n_sync=it.config.snep.n_sync,
            n_inner=it.config.snep.n_inner,
        ),
    )
    assert it.finite(), "the snep chain became non-finite during the benchmark"


def test_snep_default_iteration(benchmark, spec, shard, size, threads):
    """``SnepWorker.step`` with the dataclass defaults (SGHMC, 8 chains, the score control
    variate and the pooled site step on the local posterior): the default sampler's
    whole iteration; ``extra_info["chains"]`` gives the per-chain cost."""
    if size[0] != 1:
        pytest.skip("the default worker runs its own chain count (8); timed once per batch")
    it = make_default_worker(spec, shard, size[1], threads)
    chains = it.worker.n_chains
    bench_call(
        benchmark,
        it.step,
        group=f"iteration default c{chains}-b{size[1]} t{threads}",
        warmup=3,
        **_info(
            spec,
            (chains, size[1]),
            threads,
            bench="iteration",
            impl="snep",
            backend="cpu",
            sampler="sghmc",
            what="SnepWorker.step, the defaults (SGHMC, score control variate) + sync",
            n_sync=it.config.snep.n_sync,
        ),
    )
    assert it.finite(), "the default worker's chains became non-finite during the benchmark"


def test_snep_sync(benchmark, spec, shard, size, threads):
    """The sync alone: make_push, PosteriorServer.push (train.wire) and receive (cavity, shift)."""
    chains, batch = size
    if chains != 1:
        pytest.skip("a SnepWorker holds one chain")
    wb = make_worker(spec, shard, "adam_sgld", batch, threads)
    for _ in range(3):
        wb.step()
    bench_call(
        benchmark,
        wb.sync,
        group=f"iteration c{chains}-b{batch} t{threads}",
        **_info(spec, size, threads, bench="sync", impl="snep", backend="cpu"),
    )
    assert wb.finite()


def _torch_peer(benchmark, torch, peer, what, spec, shard, sampler, size, threads):
    """Time the ``torch_reference`` worker class of ``peer`` (its class name, ``impl`` and
    backend label); its chain stays finite."""
    import torch_reference

    cls_name, impl, label = peer
    tw = _peer(getattr(torch_reference, cls_name), spec, shard, sampler, size, threads)
    backend = f"{label} {torch.__version__}"
    _time_peer(benchmark, tw.step, spec, size, threads, sampler, impl, backend, what)
    assert torch.isfinite(tw.state["x"]).all()


# ------------------------------------------------------------- (b) PyTorch eager iteration
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_torch_iteration(benchmark, torch, spec, shard, sampler, size, threads):
    what = "TorchSnepWorker.step (no sync)"
    peer = ("TorchSnepWorker", "torch", "torch-eager")
    _torch_peer(benchmark, torch, peer, what, spec, shard, sampler, size, threads)


# --------------------------------------------------------- (b'') torch.compile iteration
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_torch_compile_iteration(benchmark, torch, spec, shard, sampler, size, threads):
    what = "CompiledTorchSnepWorker.step (torch.func.grad + update, compiled; no sync)"
    peer = ("CompiledTorchSnepWorker", "torch-compile", "torch.compile")
    _torch_peer(benchmark, torch, peer, what, spec, shard, sampler, size, threads)


# ---------------------------------------------------- (b-foreach) torch foreach iteration
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_torch_foreach_iteration(benchmark, torch, spec, shard, sampler, size, threads):
    what = "ForeachTorchSnepWorker.step (eager autograd, torch._foreach_* update; no sync)"
    peer = ("ForeachTorchSnepWorker", "torch-foreach", "torch-foreach")
    _torch_peer(benchmark, torch, peer, what, spec, shard, sampler, size, threads)


# ------------------------------------------------------------- (b') JAX jit iteration
@pytest.mark.parametrize("sampler", SAMPLERS)
def test_jax_iteration(benchmark, spec, shard, sampler, size, threads):
    jax = pytest.importorskip("jax")
    from jax_reference import JaxSnepWorker

    jw = _peer(JaxSnepWorker, spec, shard, sampler, size, threads)

    def step() -> None:
        jw.step()
        jw.block()  # asynchronous dispatch: time the computation, not its launch

    what = "JaxSnepWorker.step (one jax.jit function; no sync)"
    _time_peer(benchmark, step, spec, size, threads, sampler, "jax", f"jax-jit {jax.__version__}",
               what)  # fmt: skip
    assert bool(jax.numpy.isfinite(jw.state["x"]).all())


# ------------------------------------------------------------------ (c) bare numpy GEMMs
def test_numpy_gemms(benchmark, size, threads):
    chains, batch = size
    gemms = NumpyGemms(LAYERS, chains, batch)
    spec = ParamSpec(LAYERS)
    bench_call(
        benchmark,
        gemms,
        group=f"fwd+bwd c{chains}-b{batch} t{threads}",
        **_info(
            spec,
            size,
            threads,
            bench="gemm",
            impl="numpy",
            backend=f"numpy {np.__version__} BLAS",
            gflop=round(gemms.flops / 1e9, 4),
        ),
    )


# ------------------------------------------------------------- (d) CpuMLP fwd+bwd alone
def test_cpu_mlp_fwd_bwd(benchmark, spec, shard, size, threads):
    chains, batch = size
    fn = cpu_mlp_call(spec, shard, chains, batch)
    bench_call(
        benchmark,
        fn,
        group=f"fwd+bwd c{chains}-b{batch} t{threads}",
        **_info(spec, size, threads, bench="fwd_bwd", impl="snep", backend="cpu"),
    )
    assert np.isfinite(fn()).all()


# -------------------------------------------------------------- (e) torch fwd+bwd alone
def test_torch_fwd_bwd(benchmark, torch, spec, shard, size, threads):
    from snep.model.spec import init_params
    from torch_reference import TorchFwdBwd

    chains, batch = size
    rng = np.random.default_rng(2)
    params = np.stack([init_params(spec, rng) for _ in range(chains)])
    idx = rng.permutation(len(shard[1]))[: chains * batch].reshape(chains, batch)
    fb = TorchFwdBwd(spec, params, shard[0][idx], shard[1][idx])
    bench_call(
        benchmark,
        fb,
        group=f"fwd+bwd c{chains}-b{batch} t{threads}",
        **_info(
            spec,
            size,
            threads,
            bench="fwd_bwd",
            impl="torch",
            backend=f"torch-eager {torch.__version__}",
        ),
    )
    loglik, _ = fb()
    assert torch.isfinite(loglik).all()
