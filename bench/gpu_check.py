"""GPU check of snep's CUDA backend: every kernel against its float64 oracle, then timings.

Run on a machine with a CUDA GPU, CuPy and (for the baselines) PyTorch; ``bench/gpu_check.sh``
installs what is missing and runs this script.  Two parts:

1. **Correctness** (fresh random inputs, outputs poisoned with NaN before each launch,
   float64 numpy oracles; one PASS/FAIL line per check with its max error):

   * ``fill_normal_float32`` vs :func:`snep.maths.noise.reference_normals`;
   * ``fused_step_float32`` for every sampler kind and pass variant, noise passed in, vs
     :func:`snep.maths.oracles.fused_step_reference` (guard count equal, arrays
     within 5e-5 relative, read-only arrays untouched), a grid-stride launch, null
     accumulators, the deferred guard count, and in-kernel noise = passed-in noise; and
     the GPU pass against the ``cpu`` backend's pass (the same header compiled for the
     host) on the same state and seed, in-kernel noise on both (same guard count, arrays
     within 5e-5 relative; the fraction of bitwise-equal entries is printed);
   * the numba.cuda epilogue kernels on CuPy arrays vs numpy float64;
   * the hand-written batched GEMMs with fused epilogues, numba.cuda
     (:mod:`snep.backends.cuda.gemm`) and CUDA C++ fp32 / TF32 (``kernels/mlp_gemm.cu``,
     :mod:`snep.backends.cuda.gemm_raw`, AOT or NVRTC build), on every operand layout and
     the three GEMM shapes of an MLP layer on weight views of the flat parameters, vs numpy
     float64 with a per-entry bound (the measured TF32 error is printed);
   * :class:`snep.backends.cuda.backend.CudaMLP` ``loglik_and_grad`` and ``predict_proba`` vs
     :mod:`snep.model.mlp_numpy`, with cuBLAS GEMMs + epilogues and with each tiled GEMM
     (``tiled-cpp``/``tiled-tf32`` run the C++ softmax-cross-entropy, log-likelihood sum
     and bias-gradient kernels of ``kernels/mlp_gemm.cu`` too);
   * ``CudaBackend.apply_reply`` vs :func:`snep.maths.oracles.reply_update_reference`;
   * CUDA graphs (:mod:`snep.backends.cuda.graph`): ``fused_step_dparams_float32`` (scalars
     read from device memory) = ``fused_step_float32`` bitwise, and a SNEP run on digits
     with ``train.cuda_graph = true`` = the same run uncaptured;
   * ``train.cuda_aware_mpi``'s worker side: pushes computed in device memory equal the
     host-message worker's (bitwise).

2. **Timings** (docs/method.md §3: warm-up, CUDA events, synchronised; median of rounds) of the
   CUDA worker pieces on the paper's 784-500-300-10 MLP (Hasenclever et al., JMLR 18
   (2017), §6), float32, 8 chains: fwd+bwd at batch 100 and 1024 (cuBLAS and the tiled
   GEMMs: numba, C++ fp32, C++ TF32; with GFLOP/s), and the fused
   sampler/site pass over 8 × 545,810 parameters with in-kernel noise, and the whole worker
   iteration (minibatch gather from a device shard, fwd+bwd, fused pass) for 8 chains at
   batch 100 and 1024, uncaptured and replayed as a CUDA graph; each against PyTorch
   eager (``bench/torch_reference.py``: autograd, a per-tensor update with ``torch.randn``)
   and ``torch.compile`` of the same functions, when torch with CUDA is importable.

The card's own GEMM rate (a square fp32 ``cupy.matmul``, TF32 through ``torch.mm``) is
measured first, and the docs/method.md §4 GPU targets are printed from this run's timings
(:func:`target_ratios`).

Prints a table and writes JSON (device name, versions, checks, timings) to ``$OUT`` when set,
else ``bench/results/gpu_check-<time>.json``.  Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numba import cuda

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))  # torch_reference

from snep.maths.noise import reference_normals  # noqa: E402
from snep.maths.oracles import fused_step_reference, reply_update_reference  # noqa: E402
from snep.model import mlp_numpy  # noqa: E402
from snep.model.spec import ParamSpec, init_params  # noqa: E402
from snep.state import ChainArrays, PassScalars, SamplerKind  # noqa: E402

__all__ = ["main"]

LAYERS = (784, 500, 300, 10)
P_MNIST = ParamSpec(LAYERS).size  # 545,810
KINDS = list(SamplerKind)
#: relative tolerance of the fused pass vs the float64 oracle (the CPU test uses 2e-5 and
#: reaches 1.3e-5 on Adam's v; the GPU contracts to FMAs, so leave some room)
FUSED_TOL = 5e-5
VARIANTS: dict[str, dict[str, Any]] = {
    "site": {},
    "no-site": {"update_site": 0},
    "accumulate": {"accumulate": 1, "update_site": 0},
    "site-from-acc": {"accumulate": 1, "inv_n_acc": 0.25},
    "gamma+beta": {"gamma_term": 1, "inv_beta": 4.0},
    "optimiser": {"noise_scale": 0.0, "beta1": 0.0, "bias_corr1": 1.0},
}


# ---------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Check:
    name: str
    ok: bool
    max_err: float = float("nan")
    tol: float = float("nan")
    detail: str = ""


class Report:
    """Collects check results and timings; prints as it goes."""

    def __init__(self) -> None:
        self.checks: list[Check] = []
        self.timings: list[dict[str, Any]] = []
        self.t0 = time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def check(self, name: str, fn: Callable[[], tuple[float, float, str]]) -> None:
        """Run ``fn() -> (max_err, tol, detail)``; PASS when ``max_err <= tol``."""
        try:
            err, tol, detail = fn()
            ok = bool(np.isfinite(err) and err <= tol)
            c = Check(name, ok, float(err), float(tol), detail)
        except Exception as e:  # a crash is a failure of that check, not of the run
            tb = traceback.format_exc(limit=3)
            c = Check(name, False, detail=f"{type(e).__name__}: {e}\n{tb}")
        self.checks.append(c)
        status = "PASS" if c.ok else "FAIL"
        print(f"{status}  {c.name:<46} max err {c.max_err:.2e} (tol {c.tol:.0e})  {c.detail}")

    def timing(self, group: str, impl: str, result: dict[str, Any]) -> None:
        row = {"group": group, "impl": impl, **result}
        self.timings.append(row)
        if "error" in row:
            print(f"  {group:<30} {impl:<34} {row['error']}")
        else:
            rate = f"  {row['gflops']:8.0f} GFLOP/s" if "gflops" in row else ""
            print(
                f"  {group:<30} {impl:<34} {row['gpu_ms']:9.4f} ms (gpu)  "
                f"{row['wall_ms']:9.4f} ms (wall){rate}"
            )

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]


def rel_err(got: Any, want: np.ndarray) -> float:
    """max |got - want| / max |want|; inf when ``got`` has a non-finite entry."""
    got = np.asarray(got, np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.abs(got - want).max() / (np.abs(want).max() + 1e-30))


def abs_err(got: Any, want: np.ndarray) -> float:
    got = np.asarray(got, np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.abs(got - want).max())


# ---------------------------------------------------------------------------------------
# inputs
# ---------------------------------------------------------------------------------------
def random_state(rng: np.random.Generator, c: int, p: int) -> ChainArrays:
    """Random worker state (float32) with a few elements where the guard fires."""
    return ChainArrays.random(rng, c, p)


def scalars_for(kind: SamplerKind, **over: Any) -> PassScalars:
    s = PassScalars(
        lik_scale=3.0,
        inv_beta=1.0,
        prec_floor=0.1,
        step_size=1e-2 if kind != SamplerKind.SGHMC else 1e-3,
        noise_scale=1.0,
        beta1=0.9,
        bias_corr1=1 - 0.9**5,
        bias_corr2=1 - 0.999**5,
        site_step=0.05,
        seed=11,
        step=5,
    )
    for k, v in over.items():
        setattr(s, k, v)
    return s


def mlp_problem(sizes: tuple[int, ...], c: int, b: int, seed: int):
    spec = ParamSpec(sizes)
    rng = np.random.default_rng(seed)
    params = np.stack([init_params(spec, rng) for _ in range(c)])
    params = (params + 0.1 * rng.standard_normal(params.shape)).astype(np.float32)
    x = rng.random((c, b, spec.n_inputs), dtype=np.float32)
    y = rng.integers(0, spec.n_outputs, (c, b))
    return spec, params, x, y


# ---------------------------------------------------------------------------------------
# 1. correctness
# ---------------------------------------------------------------------------------------
@cuda.jit
def _add_one(a):
    i = cuda.grid(1)
    if i < a.shape[0]:
        a[i] += 1.0


def check_numba_cuda(rep: Report) -> None:
    def run() -> tuple[float, float, str]:
        a = cuda.to_device(np.arange(37, dtype=np.float32))
        _add_one[1, 64](a)
        got = a.copy_to_host()
        impl = getattr(cuda, "implementation", "?")
        return abs_err(got, np.arange(37) + 1.0), 0.0, f"numba.cuda ({impl})"

    rep.check("numba.cuda compiles and runs a kernel", run)


def check_noise(rep: Report, cupy: Any, backend: Any) -> None:
    from snep.backends.cuda import fused as cuda_fused

    for c, p, seed, stream, step, chain0, max_blocks in [
        (3, 10_001, 1234, 1, 77, 0, cuda_fused.MAX_BLOCKS),
        (2, 7, 2**40 + 7, 3, 12345, 9, cuda_fused.MAX_BLOCKS),
        (3, 10_001, 5, 0, 3, 2, 2),  # grid-stride: 2 blocks loop over 7,503 threads' work
    ]:

        def run(c=c, p=p, seed=seed, stream=stream, step=step, chain0=chain0, mb=max_blocks):
            out = cupy.full((c, p), np.nan, np.float32)
            cuda_fused.fill_normal(out, seed, stream, step, chain0, max_blocks=mb)
            ref = reference_normals(c, p, seed, stream, step, chain0=chain0)
            return abs_err(out.get(), ref), 3e-5, ""

        rep.check(f"fill_normal C={c} P={p} chain0={chain0} blocks<={max_blocks}", run)

    def same_as_backend() -> tuple[float, float, str]:
        a = backend.normals(2, 999, 7, 2, 3)
        b = cupy.full((2, 999), np.nan, np.float32)
        cuda_fused.fill_normal(b, 7, 2, 3)
        return abs_err(a.get(), b.get().astype(np.float64)), 0.0, ""

    rep.check("CudaBackend.normals = fill_normal", same_as_backend)

    def nvrtc_build() -> tuple[float, float, str]:
        # the NVRTC fallback of load_module, tested even where the AOT fatbin loaded
        mod = cuda_fused.compile_nvrtc()
        c, p = 2, 4099
        out = cupy.full((c, p), np.nan, np.float32)
        values = dict(out=out, n_chains=c, n_params=p, seed=99, stream=1, step=4, chain0=0)
        args = cuda_fused.build_args(cuda_fused.FILL_NORMAL_ARGS, values)
        blocks, threads = cuda_fused.grid_for(c, p)
        mod.get_function("fill_normal_float32")((blocks,), (threads,), args)
        ref = reference_normals(c, p, 99, 1, 4)
        return abs_err(out.get(), ref), 3e-5, f"loaded module: {cuda_fused.module_origin()}"

    rep.check("NVRTC build of fused_step.cu runs fill_normal", nvrtc_build)


def check_fused(rep: Report, cupy: Any, backend: Any) -> None:
    from snep.backends.cuda import fused as cuda_fused
    from snep.backends.cuda.backend import chain_arrays_to_device

    read_only = ("anchor_prec", "anchor_pm", "cavity_prec", "cavity_pm")

    def one(kind: SamplerKind, over: dict, *, c=2, p=3001, seed=0, nulls=False, mb=None):
        rng = np.random.default_rng(seed)
        a32 = random_state(rng, c, p)
        a64 = a32.astype(np.float64)
        grad = rng.normal(0, 1, (c, p)).astype(np.float32)
        noise = rng.normal(0, 1, (c, p)).astype(np.float32)
        s = scalars_for(kind, **over)
        fired_ref = fused_step_reference(
            kind, a64, grad.astype(np.float64), noise.astype(np.float64), s
        )
        ad = chain_arrays_to_device(a32)
        if nulls:
            ad.acc_x = ad.acc_x2 = None
        kw = {} if mb is None else {"max_blocks": mb}
        fired = cuda_fused.fused_step(
            kind, ad, cupy.asarray(grad), s, noise=cupy.asarray(noise), **kw
        )
        errs = {}
        for name, want in zip(ChainArrays.__dataclass_fields__, a64.arrays(), strict=True):
            got = getattr(ad, name)
            if got is None:
                continue
            got = got.get()
            if name in read_only and not np.array_equal(got, getattr(a32, name)):
                errs[name] = float("inf")  # must not be written
            else:
                errs[name] = rel_err(got, want)
        worst = max(errs, key=errs.get)
        if fired != fired_ref:
            return float("inf"), FUSED_TOL, f"guard fired {fired}, oracle {fired_ref}"
        return errs[worst], FUSED_TOL, f"fired {fired}; worst {worst}"

    for kind in KINDS:
        for variant, over in VARIANTS.items():
            rep.check(
                f"fused {kind.name}/{variant}",
                lambda kind=kind, over=over, variant=variant: one(
                    kind, over, seed=int(kind) * 100 + len(variant)
                ),
            )
    rep.check(
        "fused ADAM_SGLD grid-stride (3 blocks, C=3)",
        lambda: one(SamplerKind.ADAM_SGLD, {}, c=3, p=70_001, seed=5, mb=3),
    )
    rep.check(
        "fused SGHMC null accumulators",
        lambda: one(SamplerKind.SGHMC, {"accumulate": 0}, seed=6, nulls=True),
    )

    def deferred_count() -> tuple[float, float, str]:
        rng = np.random.default_rng(8)
        a32 = random_state(rng, 2, 5000)
        a64 = a32.astype(np.float64)
        grad = rng.normal(0, 1, a32.x.shape).astype(np.float32)
        noise = rng.normal(0, 1, a32.x.shape).astype(np.float32)
        s = scalars_for(SamplerKind.SGLD)
        want = 0
        ad = chain_arrays_to_device(a32)
        cuda_fused.take_fired()  # start from zero
        for _ in range(3):
            want += fused_step_reference(
                SamplerKind.SGLD, a64, grad.astype(np.float64), noise.astype(np.float64), s
            )
            gd, nd = cupy.asarray(grad), cupy.asarray(noise)
            r = cuda_fused.fused_step(SamplerKind.SGLD, ad, gd, s, noise=nd, return_fired=False)
            assert r is None
        got = cuda_fused.take_fired()
        again = cuda_fused.take_fired()
        err = 0.0 if (got == want and again == 0) else float("inf")
        return err, 0.0, f"3 passes: {got} (oracle {want}), then {again}"

    rep.check("fused return_fired=False, then take_fired", deferred_count)

    def in_kernel_noise(kind: SamplerKind) -> tuple[float, float, str]:
        rng = np.random.default_rng(7)
        c, p = 3, 2050
        a32 = random_state(rng, c, p)
        grad = cupy.asarray(rng.normal(0, 1, (c, p)).astype(np.float32))
        s = scalars_for(kind)
        a = chain_arrays_to_device(a32)
        b = chain_arrays_to_device(a32)
        backend.fused_step(kind, a, grad, s)
        noise = backend.normals(c, p, s.seed, s.stream, s.step)
        backend.fused_step(kind, b, grad, s, noise=noise)
        err = max(
            rel_err(x.get(), y.get().astype(np.float64))
            for x, y in zip(a.arrays(), b.arrays(), strict=True)
        )
        exact = all(
            np.array_equal(x.get(), y.get()) for x, y in zip(a.arrays(), b.arrays(), strict=True)
        )
        return err, 1e-6, "bitwise equal" if exact else "not bitwise equal"

    for kind in KINDS:
        rep.check(
            f"fused {kind.name} in-kernel noise = passed noise",
            lambda kind=kind: in_kernel_noise(kind),
        )

    def same_as_cpu(kind: SamplerKind) -> tuple[float, float, str]:
        # the cpu backend's pass (kernels/snep_fused.cuh compiled for the host) and the CUDA
        # pass on the same float32 state with the same seed: in-kernel noise on both
        from snep.backends import get_backend

        cpu = get_backend("cpu", 1)
        rng = np.random.default_rng(60 + int(kind))
        c, p = 2, 30_001
        a32 = random_state(rng, c, p)
        grad = rng.normal(0, 1, (c, p)).astype(np.float32)
        s = scalars_for(kind, seed=2**40 + 3, step=17)
        host = a32.astype(np.float32)
        fired_cpu = cpu.fused_step(kind, host, grad, s)
        dev = chain_arrays_to_device(a32)
        fired_gpu = backend.fused_step(kind, dev, cupy.asarray(grad), s, return_fired=True)
        pairs = list(zip(dev.arrays(), host.arrays(), strict=True))
        err = max(rel_err(g.get(), h.astype(np.float64)) for g, h in pairs)
        same = sum(int(np.sum(g.get() == h)) for g, h in pairs)
        total = sum(h.size for _, h in pairs)
        if fired_cpu != fired_gpu:
            err = float("inf")
        detail = f"{same / total:.4%} of the entries bitwise equal; fired {fired_gpu}/{fired_cpu}"
        return err, FUSED_TOL, detail

    for kind in KINDS:
        rep.check(
            f"fused {kind.name} GPU = cpu backend, same seed (in-kernel noise)",
            lambda kind=kind: same_as_cpu(kind),
        )


def check_epilogues(rep: Report, cupy: Any) -> None:
    from snep.backends.cuda import epilogues as ce
    from snep.backends.cuda.backend import current_numba_stream

    rng = np.random.default_rng(21)
    c, b, n, k, p_len, off = 3, 37, 301, 10, 1000, 123
    launches = {"default grid": {}, "looping grid": {"threads": 64, "max_blocks": 3}}
    for launch_name, launch in launches.items():
        kw = {**launch, "stream": current_numba_stream()}

        def bias(relu: bool, kw=kw) -> tuple[float, float, str]:
            z = rng.normal(0, 1, (c, b, n)).astype(np.float32)
            p = rng.normal(0, 1, (c, p_len)).astype(np.float32)
            want = z.astype(np.float64) + p[:, None, off : off + n]
            zd = cupy.asarray(z)
            if relu:
                want = np.maximum(want, 0)
                ce.bias_relu_(zd, cupy.asarray(p), off, **kw)
            else:
                ce.bias_(zd, cupy.asarray(p), off, **kw)
            return rel_err(zd.get(), want), 1e-6, ""

        rep.check(f"epilogue bias_relu_ ({launch_name})", lambda bias=bias: bias(True))
        rep.check(f"epilogue bias_ ({launch_name})", lambda bias=bias: bias(False))

        def xent(kw=kw) -> tuple[float, float, str]:
            logits = (3 * rng.normal(0, 1, (c, b, k))).astype(np.float32)
            y = rng.integers(0, k, (c, b)).astype(np.int32)
            d = cupy.full((c, b, k), np.nan, np.float32)
            rows = cupy.full((c * b,), np.nan, np.float64)
            tot = cupy.full((c,), np.nan, np.float64)
            ce.softmax_xent(cupy.asarray(logits), cupy.asarray(y), d, rows, **kw)
            ce.loglik_sum(rows, tot, **kw)
            logp = mlp_numpy.log_softmax(logits.astype(np.float64))
            onehot = np.eye(k)[y]
            want_rows = (logp * onehot).sum(-1)
            errs = [
                rel_err(d.get(), onehot - np.exp(logp)),
                rel_err(rows.get(), want_rows.ravel()),
                rel_err(tot.get(), want_rows.sum(1)),
            ]
            return max(errs), 1e-5, "dlogits, rows, sums"

        rep.check(f"epilogue softmax_xent + loglik_sum ({launch_name})", xent)

        def backward(fused: bool, kw=kw) -> tuple[float, float, str]:
            dz = rng.normal(0, 1, (c, b, n)).astype(np.float32)
            h = np.maximum(rng.normal(0, 1, (c, b, n)), 0).astype(np.float32)
            want_dz = dz.astype(np.float64) * (h > 0)
            dzd, hd = cupy.asarray(dz), cupy.asarray(h)
            g = cupy.full((c, p_len), np.nan, np.float32)
            if fused:
                ce.relu_backward_bias_grad(dzd, hd, g, off, **kw)
            else:
                ce.relu_backward_(dzd, hd, **kw)
                ce.bias_grad(dzd, g, off, **kw)
            gh = g.get()
            untouched = np.isnan(np.delete(gh, np.s_[off : off + n], axis=1)).all()
            err = max(rel_err(dzd.get(), want_dz), rel_err(gh[:, off : off + n], want_dz.sum(1)))
            return (err if untouched else float("inf")), 1e-5, ""

        rep.check(f"epilogue relu_backward_ + bias_grad ({launch_name})", lambda: backward(False))
        rep.check(f"epilogue relu_backward_bias_grad ({launch_name})", lambda: backward(True))

        def softmax(kw=kw) -> tuple[float, float, str]:
            z = (4 * rng.normal(0, 1, (c, b, k))).astype(np.float32)
            zd = cupy.asarray(z)
            ce.softmax_(zd, **kw)
            return rel_err(zd.get(), np.exp(mlp_numpy.log_softmax(z.astype(np.float64)))), 1e-5, ""

        rep.check(f"epilogue softmax_ ({launch_name})", softmax)


# -- the hand-written batched GEMMs -------------------------------------------------------
#: float32's unit roundoff
U32 = 2.0**-24
GEMM_IMPLS = ("numba", "cpp", "tf32")


def gemm_tol(impl: str, k: int) -> float:
    """Bound on ``|got - want| / (|A| |B| + |bias|)`` per entry of one GEMM.

    fp32 accumulation of ``K`` products: ``(K + 2) u`` (Higham, §3.1; the inputs are float32
    numbers, so the float64 oracle is exact); TF32 first rounds both inputs to 10-bit
    mantissas (relative ``2^-11`` each, so ``2^-10`` per product).
    """
    t = (k + 2) * U32
    return t + 2.0**-10 if impl == "tf32" else t


def run_gemm(impl: str, a: Any, b: Any, out: Any, **kw: Any) -> None:
    """One launch of ``impl`` ("numba", "cpp" or "tf32") on CuPy arrays."""
    if impl == "numba":
        from snep.backends.cuda import gemm as cuda_gemm

        kw.pop("module", None)
        cuda_gemm.gemm(a, b, out, **kw)
    else:
        from snep.backends.cuda import gemm_raw as cuda_gemm_raw

        cuda_gemm_raw.gemm(a, b, out, tf32=impl == "tf32", **kw)


def _gemm_err(got: np.ndarray, want: np.ndarray, scale: np.ndarray) -> float:
    got = np.asarray(got, np.float64)
    if not np.all(np.isfinite(got)):
        return float("inf")
    return float(np.max(np.abs(got - want) / (scale + 1e-30)))


def check_gemms(rep: Report, cupy: Any) -> None:
    from snep.backends.cuda import gemm_raw as cuda_gemm_raw
    from snep.backends.cuda.gemm_common import weight_view

    try:
        cuda_gemm_raw.load_module()
        tf32_on = cuda_gemm_raw.tf32_enabled()
        print(f"mlp_gemm kernels: {cuda_gemm_raw.module_origin()}; TF32 tensor cores: {tf32_on}")
    except Exception as e:
        print(f"mlp_gemm kernels: failed to load: {e}")
    tf32_errors: list[float] = []

    def general(
        impl: str, c: int, m: int, n: int, k: int, ta: bool, tb: bool, mb: int | None, seed: int
    ) -> tuple[float, float, str]:
        rng = np.random.default_rng(seed)
        a = rng.normal(0, 1, (c, k, m) if ta else (c, m, k)).astype(np.float32)
        b = rng.normal(0, 1, (c, n, k) if tb else (c, k, n)).astype(np.float32)
        out = cupy.full((c, m, n), np.nan, np.float32)
        kw = {} if mb is None else {"max_blocks": mb}
        run_gemm(impl, cupy.asarray(a), cupy.asarray(b), out, trans_a=ta, trans_b=tb, **kw)
        a64 = a.astype(np.float64).transpose(0, 2, 1) if ta else a.astype(np.float64)
        b64 = b.astype(np.float64).transpose(0, 2, 1) if tb else b.astype(np.float64)
        err = _gemm_err(out.get(), a64 @ b64, np.abs(a64) @ np.abs(b64))
        if impl == "tf32":
            tf32_errors.append(err)
        return err, gemm_tol(impl, k), "err / (|A||B|)"

    def layer(
        impl: str,
        kind: str,
        sizes: tuple[int, ...],
        c: int,
        bsz: int,
        seed: int,
        module: Any = None,
    ) -> tuple[float, float, str]:
        """One MLP-layer GEMM on weight views of a flat (C, P) array (layers[0])."""
        rng = np.random.default_rng(seed)
        spec = ParamSpec(sizes)
        lay = spec.layers[0]
        params = (0.1 * rng.normal(0, 1, (c, spec.size))).astype(np.float32)
        pd = cupy.asarray(params)
        w64 = params[:, lay.w_slice].reshape(c, lay.n_in, lay.n_out).astype(np.float64)
        kw: dict[str, Any] = {} if module is None else {"module": module}
        detail = ""
        if kind in ("bias_relu", "bias"):
            h = rng.random((c, bsz, lay.n_in), dtype=np.float32)
            out = cupy.full((c, bsz, lay.n_out), np.nan, np.float32)
            w = weight_view(pd, lay)
            off = lay.b_offset
            run_gemm(impl, cupy.asarray(h), w, out, epilogue=kind, bias=pd, bias_off=off, **kw)
            bias = params[:, None, lay.b_slice].astype(np.float64)
            z = h.astype(np.float64) @ w64 + bias
            want = np.maximum(z, 0.0) if kind == "bias_relu" else z
            scale = np.abs(h.astype(np.float64)) @ np.abs(w64) + np.abs(bias)
            got, k = out.get(), lay.n_in
        elif kind == "weight_grad":
            h = rng.random((c, bsz, lay.n_in), dtype=np.float32)
            dz = rng.normal(0, 1, (c, bsz, lay.n_out)).astype(np.float32)
            grad = cupy.full((c, spec.size), np.nan, np.float32)
            gw = weight_view(grad, lay)
            run_gemm(impl, cupy.asarray(h), cupy.asarray(dz), gw, trans_a=True, **kw)
            gh = grad.get()
            rest = np.delete(gh, np.s_[lay.w_slice], axis=1)
            if not np.isnan(rest).all():
                return float("inf"), 0.0, "wrote outside the layer's weight view"
            h64, dz64 = h.astype(np.float64), dz.astype(np.float64)
            want = h64.transpose(0, 2, 1) @ dz64
            scale = np.abs(h64).transpose(0, 2, 1) @ np.abs(dz64)
            got, k = gh[:, lay.w_slice].reshape(c, lay.n_in, lay.n_out), bsz
            detail = "rest of the flat gradient untouched; "
        else:  # input_grad with the ReLU mask
            dz = rng.normal(0, 1, (c, bsz, lay.n_out)).astype(np.float32)
            h = np.maximum(rng.normal(0, 1, (c, bsz, lay.n_in)), 0).astype(np.float32)
            out = cupy.full((c, bsz, lay.n_in), np.nan, np.float32)
            w = weight_view(pd, lay)
            hd = cupy.asarray(h)
            dzd = cupy.asarray(dz)
            run_gemm(impl, dzd, w, out, trans_b=True, epilogue="relu_grad", aux=hd, **kw)
            dz64 = dz.astype(np.float64)
            want = np.where(h > 0, dz64 @ w64.transpose(0, 2, 1), 0.0)
            scale = np.abs(dz64) @ np.abs(w64).transpose(0, 2, 1)
            got, k = out.get(), lay.n_out
        err = _gemm_err(got, want, scale)
        if impl == "tf32":
            tf32_errors.append(err)
        return err, gemm_tol(impl, k), detail + "err / (|A||B| + |bias|)"

    for impl in GEMM_IMPLS:
        for ta in (False, True):
            for tb in (False, True):
                name = f"gemm {impl} {'At' if ta else 'A'}{'Bt' if tb else 'B'} C=3 65x130x33"
                rep.check(
                    name,
                    lambda impl=impl, ta=ta, tb=tb: general(impl, 3, 65, 130, 33, ta, tb, None, 7),
                )
        rep.check(
            f"gemm {impl} tile loop (3 blocks) C=2 200x150x70",
            lambda impl=impl: general(impl, 2, 200, 150, 70, False, True, 3, 8),
        )
        for kind in ("bias_relu", "bias", "weight_grad", "input_grad"):
            for sizes, c, bsz in (((70, 45, 3), 3, 37), ((784, 500, 10), 8, 100)):
                rep.check(
                    f"gemm {impl} {kind} {sizes[0]}->{sizes[1]} C={c} B={bsz} (flat views)",
                    lambda impl=impl, kind=kind, sizes=sizes, c=c, bsz=bsz: layer(
                        impl, kind, sizes, c, bsz, seed=sizes[0] + bsz
                    ),
                )

    def gemm_nvrtc_build() -> tuple[float, float, str]:
        # the NVRTC fallback of cuda_gemm_raw.load_module, tested even where the fatbin loaded
        mod, how = cuda_gemm_raw.compile_nvrtc()
        on = cuda_gemm_raw.tf32_enabled(mod)
        err, tol, _ = layer("cpp", "bias_relu", (70, 45, 3), 2, 19, seed=3, module=mod)
        detail = f"{how}; TF32 tensor cores: {on}"
        if on:
            e2, tol2, _ = layer("tf32", "bias_relu", (70, 45, 3), 2, 19, seed=4, module=mod)
            detail += f"; TF32 err {e2:.1e} (tol {tol2:.0e})"
            if not e2 <= tol2:
                err = float("inf")
        return err, tol, detail

    rep.check("NVRTC build of mlp_gemm.cu (fp32 + TF32 bias_relu)", gemm_nvrtc_build)
    if tf32_errors:
        finite = [e for e in tf32_errors if np.isfinite(e)]
        worst = max(finite) if finite else float("nan")
        print(
            f"measured TF32 error: max |got - want| / (|A||B| + |bias|) = {worst:.2e} over "
            f"{len(tf32_errors)} checks (fp32 accumulation alone: ~(K + 2) * 6e-8; TF32 bound "
            f"2^-10 = {2.0**-10:.1e})"
        )


#: GEMMs of CudaMLP -> tolerance of loglik_and_grad (relative to the largest entry); TF32's
#: 10-bit mantissas make the gradients ~1e-3 off (the measured value is printed)
MLP_GEMMS = {"matmul": 1e-4, "tiled": 1e-4, "tiled-cpp": 1e-4, "tiled-tf32": 2e-2}


def check_mlp(rep: Report, cupy: Any, backend: Any) -> None:
    cases = [((5, 7, 3), 2, 5), ((20, 16, 12, 8), 3, 33), (LAYERS, 2, 100)]
    for (sizes, c, b), gemm in [(case, g) for g in MLP_GEMMS for case in cases]:

        def run(sizes=sizes, c=c, b=b, gemm=gemm) -> tuple[float, float, str]:
            spec, params, x, y = mlp_problem(sizes, c, b, seed=len(sizes) + b)
            mlp = backend.mlp(spec, c, b, gemm=gemm)
            grad = cupy.full(params.shape, np.nan, np.float32)
            pd = cupy.asarray(params)
            ll = mlp.loglik_and_grad(pd, x, y, grad)  # host x, y
            want_ll, want_g = mlp_numpy.loglik_and_grad(spec, params, x, y)
            err_g = rel_err(grad.get(), want_g)
            err_ll = rel_err(ll.get(), want_ll)
            grad2 = cupy.full(params.shape, np.nan, np.float32)
            ll2 = mlp.loglik_and_grad(pd, cupy.asarray(x), cupy.asarray(y, np.int32), grad2)
            same = np.array_equal(grad.get(), grad2.get()) and np.array_equal(ll.get(), ll2.get())
            err = max(err_g, err_ll) if same else float("inf")
            detail = f"grad {err_g:.1e}, loglik {err_ll:.1e}; device inputs same: {same}"
            return err, MLP_GEMMS[gemm], detail

        name = f"CudaMLP[{gemm}].loglik_and_grad {'-'.join(map(str, sizes))} C={c} B={b}"
        rep.check(name, run)

    for gemm in MLP_GEMMS:

        def proba(gemm=gemm) -> tuple[float, float, str]:
            spec, params, _, _ = mlp_problem((20, 16, 8), 2, 1, seed=3)
            x = np.random.default_rng(4).random((1001, 20))
            mlp = backend.mlp(spec, 2, 1, gemm=gemm)
            got = mlp.predict_proba(cupy.asarray(params), x, chunk=300)
            tol = 1e-5 if gemm != "tiled-tf32" else 1e-2
            return rel_err(got.get(), mlp_numpy.predict_proba(spec, params, x)), tol, ""

        rep.check(f"CudaMLP[{gemm}].predict_proba (chunks of 300)", proba)


def check_reply(rep: Report, cupy: Any, backend: Any) -> None:
    from snep.backends.cuda.backend import chain_arrays_to_device

    for momentum in (False, True):

        def run(momentum=momentum) -> tuple[float, float, str]:
            rng = np.random.default_rng(int(momentum) + 30)
            p = 70_001
            a32 = random_state(rng, 2, p)
            a64 = a32.astype(np.float64)
            cavity_prec = rng.uniform(1, 50, p).astype(np.float32)
            cavity_pm = (cavity_prec * rng.normal(0, 1, p)).astype(np.float32)
            ad = chain_arrays_to_device(a32)
            backend.apply_reply(ad, (cavity_prec, cavity_pm), momentum)
            reply_update_reference(a64, cavity_prec, cavity_pm, momentum)
            errs = [rel_err(g.get(), w) for g, w in zip(ad.arrays(), a64.arrays(), strict=True)]
            return max(errs), 2e-6, ""

        rep.check(f"apply_reply (scale_momentum={momentum})", run)


def check_graph(rep: Report, cupy: Any, backend: Any) -> None:
    from snep.backends.cuda import fused as cuda_fused
    from snep.backends.cuda.backend import chain_arrays_to_device
    from snep.backends.cuda.fused import FUSED_PARAMS_DTYPE, pack_params

    def device_params(kind: SamplerKind) -> tuple[float, float, str]:
        rng = np.random.default_rng(40 + int(kind))
        c, p = 3, 20_001
        a32 = random_state(rng, c, p)
        grad = cupy.asarray(rng.normal(0, 1, (c, p)).astype(np.float32))
        s = scalars_for(kind)
        a, b = chain_arrays_to_device(a32), chain_arrays_to_device(a32)
        cuda_fused.take_fired()
        cuda_fused.fused_step(kind, a, grad, s, return_fired=False)
        fired_a = cuda_fused.take_fired()
        dparams = cupy.full(FUSED_PARAMS_DTYPE.itemsize, 0xFF, np.uint8)  # poisoned
        dparams.set(pack_params(s).reshape(1).view(np.uint8))
        backend.fused_step_device_params(kind, b, grad, dparams)
        fired_b = cuda_fused.take_fired()
        pairs = list(zip(a.arrays(), b.arrays(), strict=True))
        err = max(rel_err(y.get(), x.get().astype(np.float64)) for x, y in pairs)
        exact = all(np.array_equal(x.get(), y.get()) for x, y in pairs)
        if fired_a != fired_b:
            err = float("inf")
        return err, 0.0, f"bitwise equal: {exact}; fired {fired_b} (by value {fired_a})"

    for kind in KINDS:
        rep.check(
            f"fused {kind.name} scalars from device memory = by value",
            lambda kind=kind: device_params(kind),
        )

    def graphed_run(method: str, n_samples: int) -> tuple[float, float, str]:
        from snep.config import Config
        from snep.data.loaders import load_digits
        from snep.run.fit import fit

        config = Config().replace(
            train={"method": method, "workers": 2, "iterations": 40, "eval_every": 20},
            model={"hidden": (32,)},
            snep={"n_samples": n_samples},
        )
        data = load_digits()
        plain = fit(config, data, backend)
        graphed = fit(config.replace(train={"cuda_graph": True, "backend": "cuda"}), data, backend)
        pairs = [
            (graphed.posterior.mean, plain.posterior.mean),
            (graphed.posterior.var, plain.posterior.var),
        ]
        err = max(rel_err(g, w) for g, w in pairs)
        exact = all(np.array_equal(g, w) for g, w in pairs)

        def metrics(run: Any) -> list[dict[str, Any]]:
            return [{k: v for k, v in h.items() if "seconds" not in k} for h in run.history]

        same = metrics(graphed) == metrics(plain)
        return err, 1e-5, f"bitwise equal: {exact}; same metrics: {same}"

    for method, n_samples in (("snep", 1), ("snep", 3), ("ep", 1)):
        rep.check(
            f"cuda_graph run = uncaptured run ({method}, {n_samples} sample(s)/iteration)",
            lambda method=method, n_samples=n_samples: graphed_run(method, n_samples),
        )


def check_device_messages(rep: Report, cupy: Any, backend: Any) -> None:
    """``train.cuda_aware_mpi``'s worker side on the GPU: a worker whose pushes and replies
    are device arrays pushes what a host-message worker pushes (no MPI needed here)."""

    def run() -> tuple[float, float, str]:
        from snep.algorithm.messages import Reply
        from snep.algorithm.worker import SnepWorker
        from snep.config import Config
        from snep.data.loaders import load_digits
        from snep.run.setup import build_spec, initial_position, make_server, prior_for

        data = load_digits()
        cfg = Config().replace(train={"workers": 1, "backend": "cuda"}, model={"hidden": (32,)})
        spec = build_spec(cfg, data)
        x0 = initial_position(cfg, spec)

        def make() -> SnepWorker:
            mlp = backend.mlp(spec, 1, 100)
            return SnepWorker(0, 1, mlp, data.x_train, data.y_train, cfg, backend, x0)

        host, dev = make(), make()
        dev.enable_device_messages()
        servers = [make_server(cfg, prior_for(cfg, spec), x0, 1) for _ in range(2)]
        for srv, w in zip(servers, (host, dev), strict=True):
            srv.register(0, w.initial_site())

        def on_device(r: Reply) -> Reply:
            return Reply(cupy.asarray(r.precision), cupy.asarray(r.precision_mean), r.version)

        host.start(servers[0].reply_to(0))
        dev.start(on_device(servers[1].reply_to(0)))
        worst, pushes = 0.0, 0
        for _ in range(45):
            ph, pd = host.step(), dev.step()
            if ph is None or pd is None:
                if (ph is None) != (pd is None):
                    return float("inf"), 0.0, "the two workers pushed at different iterations"
                continue
            pushes += 1
            got = [cupy.asnumpy(pd.delta_precision), cupy.asnumpy(pd.delta_precision_mean)]
            worst = max(worst, abs_err(got[0], ph.delta_precision))
            worst = max(worst, abs_err(got[1], ph.delta_precision_mean))
            host.receive(servers[0].push(ph))
            pd.delta_precision, pd.delta_precision_mean = got
            dev.receive(on_device(servers[1].push(pd)))
        x_err = abs_err(cupy.asnumpy(dev.arrays.x), cupy.asnumpy(host.arrays.x).astype(np.float64))
        return max(worst, x_err), 0.0, f"{pushes} pushes compared"

    rep.check("device messages = host messages (4 pushes, chain after)", run)


# ---------------------------------------------------------------------------------------
# 2. timings
# ---------------------------------------------------------------------------------------
def time_gpu(
    fn: Callable[[], Any],
    event: Callable[[], Any],
    elapsed_ms: Callable[[Any, Any], float],
    sync: Callable[[], None],
    reps: int,
    rounds: int,
    warmup: int,
) -> dict[str, Any]:
    """Median per-call GPU time (events around ``reps`` calls) and wall time over rounds."""
    for _ in range(warmup):
        fn()
    sync()
    gpu, wall = [], []
    for _ in range(rounds):
        start, end = event(), event()
        t0 = time.perf_counter()
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        wall.append((time.perf_counter() - t0) * 1e3 / reps)
        gpu.append(elapsed_ms(start, end) / reps)
    sync()
    return {
        "gpu_ms": float(np.median(gpu)),
        "wall_ms": float(np.median(wall)),
        "gpu_ms_min": float(np.min(gpu)),
        "reps": reps,
        "rounds": rounds,
    }


def cupy_timer(cupy: Any) -> dict[str, Any]:
    return {
        "event": cupy.cuda.Event,
        "elapsed_ms": cupy.cuda.get_elapsed_time,
        "sync": lambda: cupy.cuda.Device().synchronize(),
    }


def torch_timer(torch: Any) -> dict[str, Any]:
    return {
        "event": lambda: torch.cuda.Event(enable_timing=True),
        "elapsed_ms": lambda s, e: s.elapsed_time(e),
        "sync": torch.cuda.synchronize,
    }


def safe_time(rep: Report, group: str, impl: str, make: Callable[[], dict[str, Any]]) -> None:
    try:
        rep.timing(group, impl, make())
    except Exception as e:
        rep.timing(group, impl, {"error": f"{type(e).__name__}: {str(e)[:300]}"})


def run_timings(rep: Report, cupy: Any, backend: Any, args: argparse.Namespace) -> None:
    from snep.backends.cuda import fused as cuda_fused
    from snep.backends.cuda.backend import chain_arrays_to_device

    c = 8
    spec = ParamSpec(LAYERS)
    reps, rounds = (5, 3) if args.quick else (50, 7)
    ct = cupy_timer(cupy)
    try:
        import torch

        if not torch.cuda.is_available():
            raise ImportError("torch has no CUDA device")
        import torch_reference as tr

        tt = torch_timer(torch)
    except Exception as e:
        torch = tr = None
        print(f"  (PyTorch baselines skipped: {type(e).__name__}: {e})")

    def budget_left() -> float:
        return args.budget_s - rep.elapsed()

    time_card_gemm(rep, cupy, torch, tt if torch else None, ct, quick=args.quick)

    # -- fwd+bwd ----------------------------------------------------------------------------
    # GEMM flops of one fwd+bwd: forward and weight gradient of every layer, input gradient
    # of all but the first
    macs = sum(lay.n_in * lay.n_out for lay in spec.layers)
    macs_in = macs - spec.layers[0].n_in * spec.layers[0].n_out
    gemm_impls = {
        "matmul": "snep cuda (cuBLAS + numba epilogues)",
        "tiled": "snep cuda tiled (numba GEMMs)",
        "tiled-cpp": "snep cuda tiled-cpp (C++ fp32)",
        "tiled-tf32": "snep cuda tiled-tf32 (C++ TF32)",
    }
    for b in (100, 1024):
        group = f"fwd+bwd C={c} B={b}"
        _, params, x, y = mlp_problem(LAYERS, c, b, seed=b)
        r = max(2, reps // (4 if b > 100 else 1))
        flops = 2.0 * c * b * (2 * macs + macs_in)
        pd, xd, yd = cupy.asarray(params), cupy.asarray(x), cupy.asarray(y, np.int32)
        grad = cupy.empty_like(pd)
        for gemm, label in gemm_impls.items():

            def snep_fwd_bwd(pd=pd, xd=xd, yd=yd, grad=grad, r=r, b=b, gemm=gemm, flops=flops):
                mlp = backend.mlp(spec, c, b, gemm=gemm)

                def run():
                    mlp.loglik_and_grad(pd, xd, yd, grad)

                res = time_gpu(run, **ct, reps=r, rounds=rounds, warmup=3)
                return {**res, "gflops": flops / res["gpu_ms"] * 1e-6}

            safe_time(rep, group, label, snep_fwd_bwd)

        # the bare GEMMs (3 forward, 3 weight-gradient, 2 input-gradient) for context
        def gemms(pd=pd, xd=xd, b=b, r=r, flops=flops):
            ws = [pd[:, lay.w_slice].reshape(c, lay.n_in, lay.n_out) for lay in spec.layers]
            acts = [cupy.empty((c, b, lay.n_out), np.float32) for lay in spec.layers]
            gw = [cupy.empty((c, lay.n_in, lay.n_out), np.float32) for lay in spec.layers]
            ins = [xd, *acts[:-1]]

            def run():
                h = xd
                for w, a in zip(ws, acts, strict=True):
                    cupy.matmul(h, w, out=a)
                    h = a
                dz = acts[-1]
                for i in range(len(ws) - 1, -1, -1):
                    cupy.matmul(ins[i].transpose(0, 2, 1), dz, out=gw[i])
                    if i > 0:
                        cupy.matmul(dz, ws[i].transpose(0, 2, 1), out=acts[i - 1])
                        dz = acts[i - 1]

            res = time_gpu(run, **ct, reps=r, rounds=rounds, warmup=3)
            return {**res, "gflops": flops / res["gpu_ms"] * 1e-6}

        safe_time(rep, group, "bare cupy.matmul GEMMs", gemms)
        if torch is None:
            continue
        dev = torch.device("cuda")
        flat = torch.as_tensor(params, device=dev)
        tparams = tr.layer_views(spec, flat)
        tx = torch.as_tensor(x, device=dev)
        ty = torch.as_tensor(y, dtype=torch.int64, device=dev)

        def torch_fwd_bwd(tparams=tparams, tx=tx, ty=ty, r=r):
            def run():
                tr.fwd_bwd(tparams, tx, ty)

            return time_gpu(run, **tt, reps=r, rounds=rounds, warmup=3)

        safe_time(rep, group, "torch eager (autograd)", torch_fwd_bwd)
        if budget_left() < 150:
            rep.timing(group, "torch.compile", {"error": "skipped: time budget"})
            continue
        compiled_ll = torch.compile(tr.mlp_loglik)

        def fwd_bwd_compiled(tparams=tparams, tx=tx, ty=ty, compiled_ll=compiled_ll):
            leaves = [p.detach().requires_grad_() for p in tparams]
            ll = compiled_ll(leaves, tx, ty)
            return ll.detach(), torch.autograd.grad(ll.sum(), leaves)

        def torch_compiled(f=fwd_bwd_compiled, r=r):
            return time_gpu(f, **tt, reps=r, rounds=rounds, warmup=3)

        safe_time(rep, group, "torch.compile (autograd)", torch_compiled)

    time_worker_iteration(
        rep, cupy, backend, c, reps, rounds, ct, torch, tr, tt if torch else None, budget_left
    )

    # -- fused pass ---------------------------------------------------------------------------
    group = f"fused pass C={c} P={P_MNIST}"
    rng = np.random.default_rng(0)
    a32 = random_state(rng, c, P_MNIST)
    grad32 = (1e-3 * rng.normal(0, 1, (c, P_MNIST))).astype(np.float32)
    kind = SamplerKind.ADAM_SGLD
    s = scalars_for(kind, step_size=1e-3, lik_scale=1.0, seed=3)
    ad = chain_arrays_to_device(a32)
    gd = cupy.asarray(grad32)

    def snep_fused(return_fired: bool) -> dict[str, Any]:
        def run():
            s.step += 1
            cuda_fused.fused_step(kind, ad, gd, s, return_fired=return_fired)

        return time_gpu(run, **ct, reps=reps, rounds=rounds, warmup=5)

    safe_time(rep, group, "snep cuda fused (no sync)", lambda: snep_fused(False))
    safe_time(rep, group, "snep cuda fused (+ guard count read)", lambda: snep_fused(True))
    out = cupy.empty((c, P_MNIST), np.float32)

    def snep_noise():
        def run():
            cuda_fused.fill_normal(out, 1, 0, 2)

        return time_gpu(run, **ct, reps=reps, rounds=rounds, warmup=3)

    safe_time(rep, group, "snep fill_normal alone", snep_noise)
    if torch is None:
        return
    dev = torch.device("cuda")
    state = {n: torch.as_tensor(getattr(a32, n), device=dev).clone() for n in tr.STATE_FIELDS}
    tgrad = torch.as_tensor(grad32, device=dev)
    views = {n: tr.layer_views(spec, t) for n, t in state.items()}
    gviews = tr.layer_views(spec, tgrad)
    layers = [{n: views[n][i] for n in tr.STATE_FIELDS} for i in range(len(gviews))]
    buf = torch.empty((c, P_MNIST), device=dev)

    def torch_noise():
        def run():
            torch.randn((c, P_MNIST), out=buf)

        return time_gpu(run, **tt, reps=reps, rounds=rounds, warmup=3)

    safe_time(rep, group, "torch.randn alone", torch_noise)

    def torch_eager():
        for g, st in zip(gviews, layers, strict=True):
            tr.update_tensor_(kind, g, st, s, torch.randn(g.shape, device=dev))

    def torch_eager_timed():
        return time_gpu(torch_eager, **tt, reps=max(2, reps // 5), rounds=rounds, warmup=2)

    safe_time(rep, group, "torch eager (per tensor, randn)", torch_eager_timed)
    if budget_left() < 120:
        rep.timing(group, "torch.compile", {"error": "skipped: time budget"})
        return

    def flat_update(grad, st):
        return tr.update_tensor_(kind, grad, st, s, torch.randn_like(grad))

    compiled_update = torch.compile(flat_update)

    def torch_compiled_update():
        def run():
            compiled_update(tgrad, state)

        return time_gpu(run, **tt, reps=reps, rounds=rounds, warmup=3)

    safe_time(rep, group, "torch.compile (flat, randn)", torch_compiled_update)


#: the square GEMM that measures the card's rate (2 n^3 flops)
CARD_GEMM_N = 8192


def time_card_gemm(
    rep: Report,
    cupy: Any,
    torch: Any,
    tt: dict[str, Any] | None,
    ct: dict[str, Any],
    quick: bool = False,
) -> None:
    """The card's measured GEMM rate (docs/method.md §4's reference for fwd+bwd at batch >= 1024):
    a square fp32 ``cupy.matmul`` of size :data:`CARD_GEMM_N`, and the same in TF32 through
    PyTorch (``allow_tf32``) when torch with CUDA is importable."""
    n = CARD_GEMM_N
    flops = 2.0 * n**3
    group = f"card GEMM rate {n}^3"
    reps, rounds = (2, 2) if quick else (5, 3)

    def fp32():
        a = cupy.random.random((n, n), dtype=np.float32)
        b = cupy.random.random((n, n), dtype=np.float32)
        out = cupy.empty((n, n), np.float32)
        res = time_gpu(lambda: cupy.matmul(a, b, out=out), **ct, reps=reps, rounds=rounds, warmup=2)
        return {**res, "gflops": flops / res["gpu_ms"] * 1e-6}

    safe_time(rep, group, "cupy.matmul fp32", fp32)
    if torch is None or tt is None:
        return

    def tf32():
        old = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        try:
            a = torch.rand((n, n), device="cuda")
            b = torch.rand((n, n), device="cuda")
            out = torch.empty((n, n), device="cuda")
            res = time_gpu(
                lambda: torch.mm(a, b, out=out), **tt, reps=reps, rounds=rounds, warmup=2
            )
        finally:
            torch.backends.cuda.matmul.allow_tf32 = old
        return {**res, "gflops": flops / res["gpu_ms"] * 1e-6}

    safe_time(rep, group, "torch.mm tf32", tf32)


def target_ratios(timings: list[dict[str, Any]]) -> dict[str, Any]:
    """docs/method.md §4's GPU targets from the timings of this run (median GPU times):

    * worker iteration, 8 chains x batch 100: PyTorch eager / snep >= 2 and
      ``torch.compile`` / snep >= 1.2, snep being its fastest variant;
    * fwd+bwd at batch 1024: snep's best rate / the card's fp32 GEMM rate >= 0.5 (and the
      TF32 GEMMs' rate / the card's TF32 rate).
    """

    def rows(group: str) -> dict[str, dict[str, Any]]:
        return {r["impl"]: r for r in timings if r["group"] == group and "error" not in r}

    out: dict[str, Any] = {}
    it = rows("worker iteration C=8 B=100")
    snep = {k: v["gpu_ms"] for k, v in it.items() if k.startswith("snep")}
    if snep:
        best = min(snep, key=snep.get)
        out["iteration_snep_best"] = {"impl": best, "gpu_ms": snep[best]}
        for key, impl in (("eager", "torch eager"), ("compile", "torch.compile")):
            match = [v["gpu_ms"] for k, v in it.items() if k.startswith(impl)]
            if match:
                out[f"iteration_torch_{key}_over_snep"] = match[0] / snep[best]
    card = rows(f"card GEMM rate {CARD_GEMM_N}^3")
    fb = rows("fwd+bwd C=8 B=1024")
    fp32 = {k: v["gflops"] for k, v in fb.items() if k.startswith("snep") and "tf32" not in k}
    if fp32 and "cupy.matmul fp32" in card:
        best = max(fp32, key=fp32.get)
        out["fwd_bwd_1024_fp32_fraction_of_card"] = {
            "impl": best,
            "fraction": fp32[best] / card["cupy.matmul fp32"]["gflops"],
        }
    tf32 = {k: v["gflops"] for k, v in fb.items() if "tf32" in k}
    if tf32 and "torch.mm tf32" in card:
        best = max(tf32, key=tf32.get)
        out["fwd_bwd_1024_tf32_fraction_of_card"] = {
            "impl": best,
            "fraction": tf32[best] / card["torch.mm tf32"]["gflops"],
        }
    return out


#: examples in the shard of the worker-iteration timing (MNIST over 8 workers)
WORKER_SHARD = 60_000 // 8


def time_worker_iteration(
    rep: Report,
    cupy: Any,
    backend: Any,
    c: int,
    reps: int,
    rounds: int,
    ct: dict[str, Any],
    torch: Any,
    tr: Any,
    tt: dict[str, Any] | None,
    budget_left: Callable[[], float],
) -> None:
    """One worker iteration for ``c`` chains: draw the minibatch indices on the host and
    stage them with the pass scalars through the pinned ring, gather the minibatch from the
    shard on the device, fwd+bwd, fused pass (Adam-SGLD, in-kernel noise); uncaptured (the
    launches one by one) and as a CUDA graph replay.  Wall time includes the host work."""
    from snep.backends.cuda.backend import chain_arrays_to_device
    from snep.backends.cuda.fused import pack_params

    spec = ParamSpec(LAYERS)
    kind = SamplerKind.ADAM_SGLD
    n_shard = WORKER_SHARD
    s = scalars_for(kind, step_size=1e-4, lik_scale=1.0, seed=5)
    dev = torch.device("cuda") if torch is not None else None
    for b in (100, 1024):
        group = f"worker iteration C={c} B={b}"
        r = max(2, reps // (4 if b > 100 else 1))
        rng = np.random.default_rng(b + 1)
        _, params, _, _ = mlp_problem(LAYERS, c, 1, seed=b + 2)
        xs = cupy.asarray(rng.random((n_shard, spec.n_inputs), dtype=np.float32))
        ys = cupy.asarray(rng.integers(0, spec.n_outputs, n_shard), np.int32)
        a32 = random_state(rng, c, P_MNIST)
        a32.x[...] = params

        def make(graphed: bool, gemm: str, b=b, xs=xs, ys=ys, a32=a32):
            # what SnepWorker does on the cuda backend, for C chains: the step record staged
            # through the pinned ring, then the launches run uncaptured or as a graph replay
            mlp = backend.mlp(spec, c, b, gemm=gemm)
            ad = chain_arrays_to_device(a32)
            grad = cupy.empty((c, P_MNIST), np.float32)
            bx = cupy.empty((c, b, spec.n_inputs), np.float32)
            by = cupy.empty((c, b), np.int32)
            host_rng = np.random.default_rng(0)
            inputs = backend.step_inputs(1, c * b)

            def body():
                cupy.take(xs, inputs.idx[0], axis=0, out=bx.reshape(c * b, -1))
                cupy.take(ys, inputs.idx[0], axis=0, out=by.reshape(c * b))
                mlp.loglik_and_grad(ad.x, bx, by, grad)
                backend.fused_step_device_params(kind, ad, grad, inputs.params(0))

            graph = []

            def run():
                s.step += 1
                rec = inputs.host()
                rec["idx"][0] = host_rng.integers(0, n_shard, c * b)
                pack_params(s, rec["params"][0:1].reshape(()))
                inputs.upload()
                if not graphed:
                    backend.run_eager(body)
                elif graph:
                    graph[0].launch()
                else:
                    graph.append(backend.capture(body))

            return run

        variants = (
            (False, "matmul", "snep cuda (launch by launch)"),
            (True, "matmul", "snep cuda graph"),
            (True, "tiled-cpp", "snep cuda graph, C++ GEMMs + epilogues"),
        )
        for graphed, gemm, label in variants:
            safe_time(
                rep,
                group,
                label,
                lambda graphed=graphed, gemm=gemm, r=r: time_gpu(
                    make(graphed, gemm), **ct, reps=r, rounds=rounds, warmup=3
                ),
            )
        if torch is None or tt is None:
            continue
        txs = torch.as_tensor(cupy.asnumpy(xs), device=dev)
        tys = torch.as_tensor(cupy.asnumpy(ys), dtype=torch.int64, device=dev)
        state = {n: torch.as_tensor(getattr(a32, n), device=dev).clone() for n in tr.STATE_FIELDS}
        views = {n: tr.layer_views(spec, t) for n, t in state.items()}
        n_t = len(views["x"])
        layers = [{n: views[n][i] for n in tr.STATE_FIELDS} for i in range(n_t)]

        def torch_iteration(b=b, txs=txs, tys=tys, views=views, layers=layers):
            idx = torch.randint(0, n_shard, (c * b,), device=dev)
            tx = txs[idx].view(c, b, -1)
            ty = tys[idx].view(c, b)
            _, grads = tr.fwd_bwd(views["x"], tx, ty)
            for g, st in zip(grads, layers, strict=True):
                tr.update_tensor_(kind, g, st, s, torch.randn(g.shape, device=dev))

        safe_time(
            rep,
            group,
            "torch eager (gather, autograd, per-tensor update)",
            lambda f=torch_iteration, r=r: time_gpu(f, **tt, reps=r, rounds=rounds, warmup=3),
        )
        if budget_left() < 150:
            rep.timing(group, "torch.compile", {"error": "skipped: time budget"})
            continue

        def fwd_bwd_update(txs, tys, idx, state, b=b):
            tx = txs[idx].view(c, b, -1)
            ty = tys[idx].view(c, b)
            leaves = [p.detach().requires_grad_() for p in tr.layer_views(spec, state["x"])]
            ll = tr.mlp_loglik(leaves, tx, ty)
            grads = torch.autograd.grad(ll.sum(), leaves)
            g = torch.cat([t.reshape(c, -1) for t in grads], dim=1)
            with torch.no_grad():
                tr.update_tensor_(kind, g, state, s, torch.randn_like(g))

        compiled = torch.compile(fwd_bwd_update)

        def torch_compiled(b=b, txs=txs, tys=tys, state=state, compiled=compiled, r=r):
            def run():
                compiled(txs, tys, torch.randint(0, n_shard, (c * b,), device=dev), state)

            return time_gpu(run, **tt, reps=r, rounds=rounds, warmup=3)

        safe_time(rep, group, "torch.compile (gather, autograd, flat update)", torch_compiled)


# ---------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------
def _finite(o: Any) -> Any:
    """``o`` with NaN/inf floats replaced by None (strict JSON)."""
    if isinstance(o, float):
        return o if np.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _finite(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_finite(v) for v in o]
    return o


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("cupy", "numba", "torch", "snep"):
        try:
            out[mod] = getattr(__import__(mod), "__version__", "?")
        except Exception as e:
            out[mod] = f"unavailable ({type(e).__name__})"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer timing repetitions")
    ap.add_argument("--no-timing", action="store_true", help="correctness checks only")
    ap.add_argument("--budget-s", type=float, default=420.0, help="skip torch.compile past this")
    ap.add_argument("--out", type=Path, default=None, help="folder of the JSON result")
    args = ap.parse_args(argv)

    try:
        from numba.core.errors import NumbaPerformanceWarning

        warnings.simplefilter("ignore", NumbaPerformanceWarning)
    except ImportError:
        pass

    rep = Report()
    from snep.backends import get_backend
    from snep.backends.cuda import fused as cuda_fused

    try:
        backend = get_backend("cuda")
    except Exception as e:
        print(f"gpu_check: the cuda backend is not available here: {e}", file=sys.stderr)
        return 2
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(backend.device)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    cc = f"{props['major']}.{props['minor']}"
    print(f"device: {name} (sm_{props['major']}{props['minor']}), versions {_versions()}")

    print("\n== correctness (float64 oracles, outputs poisoned with NaN) ==")
    check_numba_cuda(rep)
    try:
        cuda_fused.load_module()
        print(f"kernels: {cuda_fused.module_origin()}")
    except Exception as e:
        print(f"kernels: failed to load: {e}")
    check_noise(rep, cupy, backend)
    check_fused(rep, cupy, backend)
    check_epilogues(rep, cupy)
    check_gemms(rep, cupy)
    check_mlp(rep, cupy, backend)
    check_reply(rep, cupy, backend)
    check_graph(rep, cupy, backend)
    check_device_messages(rep, cupy, backend)
    n_fail = len(rep.failed)
    print(f"{len(rep.checks) - n_fail} passed, {n_fail} failed ({rep.elapsed():.0f} s)")

    if not args.no_timing:
        print("\n== timings (float32, median per call; gpu = CUDA events, wall = host clock) ==")
        run_timings(rep, cupy, backend, args)

    targets = target_ratios(rep.timings)
    if targets:
        print("\n== docs/method.md §4 GPU targets (from this run) ==")
        for key, value in targets.items():
            print(f"  {key}: {value}")
    result = {
        "suite": "gpu_check",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": {"name": name, "compute_capability": cc, "id": backend.device},
        "versions": _versions(),
        "kernels": cuda_fused.module_origin(),
        "checks": [dataclasses.asdict(c) for c in rep.checks],
        "timings": rep.timings,
        "targets": targets,
        "passed": n_fail == 0,
        "seconds": round(rep.elapsed(), 1),
    }
    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    if out_dir is None:
        out_dir = ROOT / "bench" / "results"
        path = out_dir / f"gpu_check-{time.strftime('%Y%m%d-%H%M%S')}.json"
    else:
        path = out_dir / "gpu_check.json"
    out_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_finite(result), indent=1, default=str))
    print(f"\nwrote {path} ({rep.elapsed():.0f} s in all)")
    if n_fail:
        print("FAILED: " + ", ".join(c.name for c in rep.failed))
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
