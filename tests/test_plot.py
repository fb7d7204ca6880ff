"""Run plots: PNG files for histories with and without the model-average keys."""

from __future__ import annotations

import pytest

from snep.plot import plot_histories, plot_history

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def history(n: int = 4, bma: bool = True, avg: bool = True) -> list[dict]:
    out = []
    for i in range(1, n + 1):
        rec = {
            "iteration": 10.0 * i,
            "epochs_per_worker": 0.7 * i,
            "mean_error": 0.5 / i,
            "mean_nll": 1.5 / i,
            "mean_ece": 0.05,
        }
        if bma:
            rec.update(bma_error=0.45 / i, bma_nll=1.2 / i, bma_ece=0.03)
        if avg and i >= n - 1:
            rec.update(avg_error=0.4 / i, avg_nll=1.1 / i, avg_ece=0.02)
        out.append(rec)
    return out


def assert_png(path):
    data = path.read_bytes()
    assert len(data) > 1000
    assert data[:8] == PNG_MAGIC


@pytest.mark.parametrize(
    "records",
    [history(), history(bma=False, avg=False), history(n=1), []],
    ids=["snep", "adam", "one-record", "empty"],
)
def test_plot_history_writes_png(tmp_path, records):
    path = plot_history(records, tmp_path / "sub" / "plot.png", "a title")
    assert path == tmp_path / "sub" / "plot.png"
    assert_png(path)


def test_plot_history_tolerates_null_and_missing_x(tmp_path):
    records = history()
    records[1]["mean_nll"] = None  # non-finite values are stored as null
    for rec in records:
        del rec["epochs_per_worker"]  # falls back to iteration
    assert_png(plot_history(records, tmp_path / "p.png", "t"))


def test_plot_histories_compares_runs(tmp_path):
    runs = {"snep 4w": history(), "adam": history(bma=False, avg=False)}
    assert_png(plot_histories(runs, tmp_path / "cmp.png"))
    assert_png(plot_histories(runs, tmp_path / "cmp_iter.png", x="iteration", title="t"))
