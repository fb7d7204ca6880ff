"""Benchmarks of the fused sampler + SNEP site pass over P = 545,810 (docs/method.md §4).

Groups per thread count ``t1`` / ``t2``:

* the fused pass (``backend.fused_step``) of each sampler kind with in-kernel Philox
  noise, the site step on, one sample per iteration (the worker's configuration), at 1
  and 2 threads (and 8 chains with ``--bench-large``);
* the pass with its noise passed in (``test_fused_pass_noise_given``, one thread, Adam-SGLD
  and SGLD with and without the site step): the update's own cost;
* baselines for drawing the noise alone: ``torch.randn(P)`` (a fresh tensor, and into a
  preallocated one), ``numpy.random.default_rng().standard_normal(P, dtype=float32,
  out=...)`` (single-threaded), and snep's own ``_native.fill_normal``.

Target: the pass <= 1 ms on 2 threads and >= 2x faster than ``torch.randn`` alone.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchutil import LAYERS, bench_call
from snep import _native
from snep.backends import get_backend
from snep.model.spec import ParamSpec
from snep.state import ChainArrays, PassScalars, SamplerKind

P = ParamSpec(LAYERS).size  # 545,810
KINDS = list(SamplerKind)
THREADS = [1, 2]


def _state(n_chains: int, seed: int = 0) -> tuple[ChainArrays, np.ndarray]:
    """A worker-like state: proper site/cavity/anchor, Adam/RMS state near 1."""
    rng = np.random.default_rng(seed)
    a = ChainArrays.zeros(n_chains, P)
    a.x[...] = rng.normal(0.0, 0.05, (n_chains, P))
    a.site_prec[...] = 1.0
    a.site_pm[...] = a.x
    a.cavity_prec[...] = 2.0
    a.anchor_prec[...] = 3.0
    a.anchor_pm[...] = a.x
    a.s1[...] = 1.0
    a.s2[...] = 1.0
    grad = rng.normal(0.0, 0.1, (n_chains, P)).astype(np.float32)
    return a, grad


def _scalars(update_site: int) -> PassScalars:
    """The pass's scalars in these benchmarks: a worker's, one sample per iteration."""
    return PassScalars(
        lik_scale=1.0, step_size=1e-3, beta1=0.0, bias_corr2=1.0, site_step=0.02,
        update_site=update_site, accumulate=0, seed=2017,
    )  # fmt: skip


def _info(threads: int, chains: int, **kw) -> dict:
    return {"P": P, "threads": threads, "chains": chains, **kw}


@pytest.mark.parametrize("n_threads", THREADS, ids=lambda t: f"t{t}")
@pytest.mark.parametrize("kind", KINDS, ids=[k.name.lower() for k in KINDS])
def test_fused_pass(benchmark, kind, n_threads, fused_chains):
    backend = get_backend("cpu", n_threads)
    a, grad = _state(fused_chains)
    s = _scalars(update_site=1)
    steps = itertools.count(1)

    def run() -> None:
        s.step = next(steps)  # fresh noise every call, as in a run
        backend.fused_step(kind, a, grad, s)

    bench_call(
        benchmark,
        run,
        group=f"fused pass t{n_threads}",
        warmup=5,
        **_info(
            n_threads,
            fused_chains,
            bench="fused_pass",
            impl="snep",
            backend="cpu",
            sampler=kind.name.lower(),
            noise="in-kernel philox",
        ),
    )
    assert np.isfinite(a.x).all() and np.isfinite(a.site_pm).all()


@pytest.mark.parametrize("site", [1, 0], ids=["site", "no_site"])
@pytest.mark.parametrize(
    "kind", [SamplerKind.ADAM_SGLD, SamplerKind.SGLD], ids=["adam_sgld", "sgld"]
)
def test_fused_pass_noise_given(benchmark, kind, site):
    """The pass with its noise passed in (one thread, one chain): what the update costs
    without the generator, with and without the site step (issue 14's breakdown: set
    against ``test_fused_pass`` and ``test_fill_normal``)."""
    backend = get_backend("cpu", 1)
    a, grad = _state(1)
    noise = np.random.default_rng(1).standard_normal((1, P), np.float32)
    labels = {"sampler": kind.name.lower(), "noise": "passed in", "site_step": bool(site)}
    s = _scalars(update_site=site)
    bench_call(
        benchmark,
        lambda: backend.fused_step(kind, a, grad, s, noise=noise),
        group="fused pass parts t1",
        warmup=5,
        **_info(1, 1, bench="fused_pass_parts", impl="snep", backend="cpu", **labels),
    )
    assert np.isfinite(a.x).all() and np.isfinite(a.site_pm).all()


@pytest.mark.parametrize("variant", ["alloc", "out"])
@pytest.mark.parametrize("n_threads", THREADS, ids=lambda t: f"t{t}")
def test_torch_randn(benchmark, variant, n_threads):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(n_threads)
    gen = torch.Generator().manual_seed(0)
    if variant == "alloc":

        def fn():
            return torch.randn(P, generator=gen)

    else:
        buf = torch.empty(P)

        def fn():
            return torch.randn(P, generator=gen, out=buf)

    bench_call(
        benchmark,
        fn,
        group=f"fused pass t{n_threads}",
        **_info(
            n_threads,
            1,
            bench="randn",
            impl="torch",
            backend=f"torch {torch.__version__}",
            variant=f"torch.randn(P{', out=buf' if variant == 'out' else ''})",
        ),
    )


def test_numpy_standard_normal(benchmark):
    rng = np.random.default_rng(0)
    buf = np.empty(P, np.float32)
    bench_call(
        benchmark,
        lambda: rng.standard_normal(P, dtype=np.float32, out=buf),
        group="fused pass t1",
        **_info(
            1,
            1,
            bench="randn",
            impl="numpy",
            backend=f"numpy {np.__version__} PCG64 ziggurat",
            variant="default_rng().standard_normal(P, float32, out=buf)",
        ),
    )


@pytest.mark.parametrize("n_threads", THREADS, ids=lambda t: f"t{t}")
def test_fill_normal(benchmark, n_threads, fused_chains):
    out = np.empty((fused_chains, P), np.float32)
    steps = itertools.count(1)
    bench_call(
        benchmark,
        lambda: _native.fill_normal(out, 2017, 0, next(steps), 0, n_threads),
        group=f"fused pass t{n_threads}",
        **_info(
            n_threads,
            fused_chains,
            bench="fill_normal",
            impl="snep",
            backend="cpu",
            noise="philox + float32 Box-Muller",
        ),
    )
    assert np.isfinite(out).all()
