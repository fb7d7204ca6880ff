"""Compact benchmark summaries and the docs/method.md §4 ratio lines.

Used by ``bench/conftest.py`` at the end of a pytest-benchmark session (it writes
``bench/results/<suite>-<timestamp>.json`` and prints the ratios), and as a command
that prints the ratios of saved summaries, several suites together::

    python bench/bench_summary.py bench/results/worker_iteration-*.json \
        bench/results/fused_pass-*.json

Every ratio is taken between medians of the same run (same file), matched on
``extra_info`` (threads, batch, chains, sampler).  On a shared or loaded machine the
ratios are indicative only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["collect", "compute_ratios", "format_ratios", "main", "write_summary"]

#: docs/method.md §4 targets
ITER_VS_TORCH = 2.0  # snep worker iteration >= 2x faster than PyTorch eager
ITER_VS_GEMM = 1.4  # snep worker iteration <= 1.4x the bare fwd+bwd GEMMs
FUSED_MS = 1.0  # fused pass over P = 545,810 with noise <= 1 ms on 2 threads
ITER_VS_JAX = 2.0  # >= 2x faster than the same iteration in JAX jit or torch.compile
FUSED_VS_RANDN = 2.0  # ... and >= 2x faster than torch.randn alone
FUSED_P = 545810
FUSED_THREADS = 2


def collect(benchmarks: Iterable[Any]) -> list[dict[str, Any]]:
    """Compact records (times in ms) of pytest-benchmark's ``Metadata`` objects with stats."""
    out = []
    for b in benchmarks:
        if not b or getattr(b, "has_error", False):
            continue
        st = b.stats
        out.append(
            {
                "name": b.name,
                "fullname": b.fullname,
                "group": b.group,
                "median_ms": st.median * 1e3,
                "mean_ms": st.mean * 1e3,
                "min_ms": st.min * 1e3,
                "stddev_ms": st.stddev * 1e3,
                "rounds": st.rounds,
                "extra_info": dict(b.extra_info),
            }
        )
    return out


def _key(r: dict[str, Any], *fields: str) -> tuple[Any, ...]:
    e = r["extra_info"]
    return tuple(e.get(f) for f in fields)


def _select(records: list[dict[str, Any]], **match: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r["extra_info"].get(k) == v for k, v in match.items())]


def _fastest(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    return min(records, key=lambda r: r["median_ms"]) if records else None


def _ratio(
    label: str, value: float, unit: str, target: str, ok: bool | None, note: str = ""
) -> dict[str, Any]:
    return {
        "label": label,
        "value": round(value, 4),
        "unit": unit,
        "target": target,
        "ok": ok,
        "note": note,
    }


def compute_ratios(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratio lines of docs/method.md §4 that ``records`` (one run) allow, from medians.

    * snep worker iteration vs the PyTorch eager iteration (same sampler, threads, batch,
      chains): ``torch / snep``, target >= 2;
    * snep worker iteration vs the same iteration as one ``jax.jit`` function (same
      sampler, size, threads): ``jax / snep``, target >= 2;
    * snep worker iteration vs the bare numpy fwd+bwd GEMMs: ``snep / gemm``, target <= 1.4;
      (and, for information, CpuMLP fwd+bwd vs the GEMMs and vs torch fwd+bwd);
    * fused pass vs ``torch.randn(P)`` alone (same threads): ``randn / fused``, target >= 2
      on 2 threads; fused pass absolute time, target <= 1 ms on 2 threads.
    """
    out: list[dict[str, Any]] = []
    shape = ("threads", "batch", "chains")

    def tag(r: dict[str, Any]) -> str:
        e = r["extra_info"]
        return f"t{e.get('threads')} c{e.get('chains')} b{e.get('batch')}"

    iters = _select(records, bench="iteration", impl="snep")
    for r in sorted(iters, key=lambda r: _key(r, "sampler", *shape)):
        e = r["extra_info"]
        match = {k: e.get(k) for k in ("sampler", *shape)}
        torch_r = _fastest(_select(records, bench="iteration", impl="torch", **match))
        if torch_r:
            v = torch_r["median_ms"] / r["median_ms"]
            out.append(
                _ratio(
                    f"iteration {e.get('sampler')} {tag(r)}: torch eager / snep",
                    v,
                    "x",
                    f">= {ITER_VS_TORCH:g}x",
                    v >= ITER_VS_TORCH,
                    f"{torch_r['median_ms']:.3f} ms / {r['median_ms']:.3f} ms",
                )
            )
        peers = (
            ("jax", "JAX jit"),
            ("torch-compile", "torch.compile"),
            ("torch-foreach", "torch foreach"),
        )
        for impl, name in peers:
            peer = _fastest(_select(records, bench="iteration", impl=impl, **match))
            if peer:  # the strongest peers (issue 14): compiled whole iterations
                v = peer["median_ms"] / r["median_ms"]
                out.append(
                    _ratio(
                        f"iteration {e.get('sampler')} {tag(r)}: {name} / snep",
                        v,
                        "x",
                        f">= {ITER_VS_JAX:g}x",
                        v >= ITER_VS_JAX,
                        f"{peer['median_ms']:.3f} ms / {r['median_ms']:.3f} ms",
                    )
                )
        gemm = _fastest(_select(records, bench="gemm", **{k: e.get(k) for k in shape}))
        if gemm:
            v = r["median_ms"] / gemm["median_ms"]
            out.append(
                _ratio(
                    f"iteration {e.get('sampler')} {tag(r)}: snep / bare GEMMs",
                    v,
                    "x",
                    f"<= {ITER_VS_GEMM:g}x",
                    v <= ITER_VS_GEMM,
                    f"{r['median_ms']:.3f} ms / {gemm['median_ms']:.3f} ms",
                )
            )
        chains = int(e.get("chains") or 1)
        one = {"threads": e.get("threads"), "batch": e.get("batch"), "chains": 1}
        gemm1 = _fastest(_select(records, bench="gemm", **one))
        if chains > 1 and gemm1 and not gemm:  # the default sampler's C chains (issue 14)
            per_chain = r["median_ms"] / chains
            v = per_chain / gemm1["median_ms"]
            out.append(
                _ratio(
                    f"iteration {e.get('sampler')} {tag(r)}: snep per chain / one chain's GEMMs",
                    v,
                    "x",
                    f"<= {ITER_VS_GEMM:g}x",
                    v <= ITER_VS_GEMM,
                    f"{per_chain:.3f} ms per chain / {gemm1['median_ms']:.3f} ms",
                )
            )
    for r in sorted(_select(records, bench="fwd_bwd", impl="snep"), key=lambda r: _key(r, *shape)):
        e = r["extra_info"]
        match = {k: e.get(k) for k in shape}
        gemm = _fastest(_select(records, bench="gemm", **match))
        if gemm:
            v = r["median_ms"] / gemm["median_ms"]
            out.append(
                _ratio(
                    f"fwd+bwd {tag(r)}: snep CpuMLP / bare GEMMs",
                    v,
                    "x",
                    "info",
                    None,
                    f"{r['median_ms']:.3f} ms / {gemm['median_ms']:.3f} ms",
                )
            )
        torch_r = _fastest(_select(records, bench="fwd_bwd", impl="torch", **match))
        if torch_r:
            v = torch_r["median_ms"] / r["median_ms"]
            out.append(
                _ratio(
                    f"fwd+bwd {tag(r)}: torch / snep CpuMLP",
                    v,
                    "x",
                    "info",
                    None,
                    f"{torch_r['median_ms']:.3f} ms / {r['median_ms']:.3f} ms",
                )
            )

    for r in sorted(_select(records, bench="sync", impl="snep"), key=lambda r: _key(r, *shape)):
        e = r["extra_info"]
        match = {k: e.get(k) for k in shape}
        it = _fastest(_select(records, bench="iteration", impl="snep", **match))
        if it:
            n_sync = int(it["extra_info"].get("n_sync") or 10)
            v = r["median_ms"] / (n_sync * it["median_ms"] + r["median_ms"])
            out.append(
                _ratio(
                    f"sync {tag(r)}: share of worker time at n_sync={n_sync}",
                    100.0 * v,
                    "%",
                    "info",
                    None,
                    f"in-process push + server + reply {r['median_ms']:.3f} ms; "
                    f"MPI target: comm <= 5%",
                )
            )

    one = _fastest(_select(records, bench="pooled_site_step", impl="one_pass"))
    three = _fastest(_select(records, bench="pooled_site_step", impl="three_passes"))
    if one and three:
        v = three["median_ms"] / one["median_ms"]
        out.append(
            _ratio(
                f"pooled site step c{one['extra_info'].get('chains')}: three passes / one pass",
                v,
                "x",
                "info",
                None,
                f"{three['median_ms']:.3f} ms / {one['median_ms']:.3f} ms",
            )
        )

    fused = _select(records, bench="fused_pass")
    for r in sorted(fused, key=lambda r: _key(r, "sampler", "threads", "chains")):
        e = r["extra_info"]
        on_target = e.get("threads") == FUSED_THREADS and e.get("P") == FUSED_P
        on_target = on_target and e.get("chains") == 1
        label = f"fused pass {e.get('sampler')} t{e.get('threads')} c{e.get('chains')}"
        randn = _fastest(
            _select(records, bench="randn", impl="torch", threads=e.get("threads"), P=e.get("P"))
        )
        if randn:
            # torch.randn draws P numbers; compare against the pass per chain
            per_chain = r["median_ms"] / max(int(e.get("chains") or 1), 1)
            v = randn["median_ms"] / per_chain
            out.append(
                _ratio(
                    f"{label}: torch.randn(P) / fused pass",
                    v,
                    "x",
                    f">= {FUSED_VS_RANDN:g}x" if on_target else "info",
                    (v >= FUSED_VS_RANDN) if on_target else None,
                    f"{randn['median_ms']:.3f} ms / {per_chain:.3f} ms per chain",
                )
            )
        numpy_r = _fastest(_select(records, bench="randn", impl="numpy", P=e.get("P")))
        if numpy_r:
            per_chain = r["median_ms"] / max(int(e.get("chains") or 1), 1)
            v = numpy_r["median_ms"] / per_chain
            out.append(
                _ratio(
                    f"{label}: numpy standard_normal(P) / fused pass",
                    v,
                    "x",
                    "info",
                    None,
                    f"{numpy_r['median_ms']:.3f} ms / {per_chain:.3f} ms per chain",
                )
            )
        if e.get("P") == FUSED_P:
            v = r["median_ms"]
            out.append(
                _ratio(
                    f"{label}: absolute time",
                    v,
                    " ms",
                    f"<= {FUSED_MS:g} ms" if on_target else "info",
                    (v <= FUSED_MS) if on_target else None,
                    "median",
                )
            )
    return out


def format_ratios(ratios: list[dict[str, Any]]) -> list[str]:
    """One printable line per ratio."""
    lines = []
    for q in ratios:
        status = {True: "MET", False: "MISSED", None: "info"}[q["ok"]]
        target = "" if q["target"] == "info" else f"target {q['target']}; "
        lines.append(
            f"[{status:6s}] {q['label']}: {q['value']:.3f}{q['unit']} ({target}{q['note']})"
        )
    return lines


def machine_info() -> dict[str, Any]:
    """Versions and cores, for the summary file."""
    import os

    import numpy as np

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "node": platform.node(),
    }
    try:
        import snep

        info["snep"] = snep.__version__
    except Exception:  # pragma: no cover
        pass
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
    jax = sys.modules.get("jax")
    if jax is not None:
        info["jax"] = jax.__version__
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            {k: p.get(k) for k in ("internal_api", "version", "architecture", "num_threads")}
            for p in threadpool_info()
            if p.get("user_api") == "blas"
        ]
    except Exception:  # pragma: no cover
        pass
    return info


def write_summary(
    path: Path,
    suite: str,
    records: list[dict[str, Any]],
    ratios: list[dict[str, Any]],
    options: dict[str, Any],
) -> Path:
    """Write the compact summary JSON (a few kB) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "suite": suite,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine_info(),
        "options": options,
        "benchmarks": [
            {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()} for r in records
        ],
        "ratios": ratios,
    }
    path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Print the ratio lines of saved compact summaries."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="+", type=Path, help="compact summaries from bench/results/")
    args = ap.parse_args(argv)
    for f in args.files:
        doc = json.loads(f.read_text())
        if "benchmarks" not in doc:
            print(f"{f}: not a compact summary (no 'benchmarks' key); skipped", file=sys.stderr)
            continue
        print(f"== {doc.get('suite')} ({f}, {doc.get('created')}) ==")
        for r in doc["benchmarks"]:
            print(
                f"  {r['name']:<60s} median {r['median_ms']:9.3f} ms  "
                f"mean {r['mean_ms']:9.3f}  min {r['min_ms']:9.3f}"
            )
        lines = format_ratios(compute_ratios(doc["benchmarks"]))
        print("  -- docs/method.md §4 ratios (medians of this run) --")
        for line in lines or ["(no baseline pairs in this file)"]:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
