"""Options, thread control and the end-of-session summary of the benchmark suites.

Options (see bench/README.md):

``--bench-threads N[,N...]``
    Threads of the worker-iteration suite (BLAS via threadpoolctl, PyTorch, the snep
    fused pass); default 1.  ``2`` uses both cores; ``1,2`` runs both.
``--bench-large``
    Adds bigger sizes: batch 1000, and 4 and 8 chains (also 8 chains in the fused pass).
``--bench-summary-json PATH``
    Where to write the compact summary; default
    ``bench/results/<suite>-<timestamp>.json``.

With ``--benchmark-enable`` (the project's pytest addopts carry ``--benchmark-disable``)
the session ends by writing the compact summary (name, mean/median/min in ms,
extra_info of every benchmark) and printing the docs/method.md §4 ratio lines, taken from
medians of this run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from threadpoolctl import threadpool_limits

import bench_summary

RESULTS = Path(__file__).resolve().parent / "results"

#: (chains, batch) of the worker-iteration suite
DEFAULT_SIZES = [(1, 100)]
LARGE_SIZES = [(1, 1000), (4, 100), (8, 100)]


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("snep bench")
    group.addoption(
        "--bench-threads",
        default="1",
        help="threads of the worker-iteration suite: N or a comma list (default 1)",
    )
    group.addoption(
        "--bench-large",
        action="store_true",
        default=False,
        help="add bigger sizes (batch 1000; 8 chains)",
    )
    group.addoption(
        "--bench-summary-json",
        default=None,
        help="path of the compact summary (default bench/results/<suite>-<timestamp>.json)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """XLA's CPU threads (the JAX peer) follow the first ``--bench-threads`` count; set
    before JAX loads, and only when the environment does not set ``XLA_FLAGS``."""
    import os

    n = bench_threads(config)[0]
    multi = "true" if n > 1 else "false"
    os.environ.setdefault(
        "XLA_FLAGS", f"--xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={n}"
    )


def bench_threads(config: pytest.Config) -> list[int]:
    """The thread counts asked for with ``--bench-threads``."""
    raw = str(config.getoption("--bench-threads"))
    try:
        out = [int(t) for t in raw.split(",") if t.strip()]
    except ValueError:
        raise pytest.UsageError(
            f"--bench-threads={raw!r}: expected a positive int or a comma list such as 1,2"
        ) from None
    if not out or any(t < 1 for t in out):
        raise pytest.UsageError(f"--bench-threads={raw!r}: thread counts must be >= 1")
    return out


def bench_sizes(config: pytest.Config) -> list[tuple[int, int]]:
    """(chains, batch) pairs of the worker-iteration suite."""
    return DEFAULT_SIZES + (LARGE_SIZES if config.getoption("--bench-large") else [])


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``threads`` and ``size`` fixtures of the worker-iteration suite come from the options."""
    config = metafunc.config
    if "threads" in metafunc.fixturenames:
        metafunc.parametrize("threads", bench_threads(config), ids=lambda t: f"t{t}")
    if "size" in metafunc.fixturenames:
        metafunc.parametrize("size", bench_sizes(config), ids=lambda s: f"c{s[0]}-b{s[1]}")
    if "fused_chains" in metafunc.fixturenames:
        chains = [1, 8] if config.getoption("--bench-large") else [1]
        metafunc.parametrize("fused_chains", chains, ids=lambda c: f"c{c}")


@pytest.fixture(autouse=True)
def _thread_limits(request: pytest.FixtureRequest):
    """Run each test with its thread count: OpenBLAS (threadpoolctl) and PyTorch.

    The count is the test's ``threads`` or ``n_threads`` parameter, else the first of
    ``--bench-threads``.  The snep fused pass takes its count explicitly.
    """
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    n = params.get("threads", params.get("n_threads"))
    if n is None:
        n = bench_threads(request.config)[0]
    torch = sys.modules.get("torch")
    old = torch.get_num_threads() if torch is not None else None
    if torch is not None:
        torch.set_num_threads(n)
    with threadpool_limits(limits=n, user_api="blas"):
        yield
    if torch is not None and old is not None:
        torch.set_num_threads(old)


def _suite_name(records: list[dict]) -> str:
    stems = sorted(
        {
            Path(r["fullname"].split("::")[0]).stem.removeprefix("test_")
            for r in records
            if r.get("fullname")
        }
    )
    return "+".join(stems) or "bench"


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Write the compact summary and print the docs/method.md §4 ratio lines."""
    session = getattr(config, "_benchmarksession", None)
    if session is None or session.disabled:
        return
    records = bench_summary.collect(session.benchmarks)
    if not records:
        return
    suite = _suite_name(records)
    ratios = bench_summary.compute_ratios(records)
    target = config.getoption("--bench-summary-json")
    path = Path(target) if target else RESULTS / f"{suite}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    options = {
        "bench_threads": bench_threads(config),
        "bench_large": bool(config.getoption("--bench-large")),
        "min_rounds": config.getoption("benchmark_min_rounds"),
        "max_time": config.getoption("benchmark_max_time"),
    }
    bench_summary.write_summary(path, suite, records, ratios, options)
    tr = terminalreporter
    tr.write_sep("-", "snep benchmark summary (docs/method.md §4 ratios, medians of this run)")
    for line in bench_summary.format_ratios(ratios) or ["(no baseline pairs in this session)"]:
        tr.write_line(line)
    tr.write_line(f"compact summary: {path}")
