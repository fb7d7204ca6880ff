#!/usr/bin/env bash
# Run snep's CPU benchmark suites and print the docs/method.md §4 ratio summary.
#
#   bash bench/run_benchmarks.sh                       # 1 thread, default sizes
#   bash bench/run_benchmarks.sh --bench-threads 2     # both cores
#   bash bench/run_benchmarks.sh --bench-large         # + batch 1000 and 8 chains
#   bash bench/run_benchmarks.sh --benchmark-min-rounds=3 --benchmark-max-time=0.2  # quick
#
# Extra arguments go to every pytest run.  Writes, under bench/results/:
#   <suite>-<timestamp>.json       compact summary (name, median/mean/min ms, extra_info, ratios)
#   <suite>-<timestamp>-full.json  pytest-benchmark's own --benchmark-json dump
#   noise_cost-<timestamp>.json    the noise's cost, Philox-7's, and the iterations without them
# Needs the bench extra for the PyTorch baselines: pip install -e ".[bench]"
# (without torch the torch benchmarks are skipped and their ratios are not printed).
# Take numbers on a quiet machine: other processes on the 2 cores distort every ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python}
ts=$(date +%Y%m%d-%H%M%S)
out=bench/results
mkdir -p "$out"

echo "== the PyTorch and JAX peers compute snep's maths (bench/test_*_reference.py) =="
"$PYTHON" -m pytest bench/test_torch_reference.py bench/test_jax_reference.py -q -p no:cacheprovider

summaries=()
for suite in worker_iteration fused_pass pooled_site_step; do
    echo "== bench/test_${suite}.py =="
    "$PYTHON" -m pytest "bench/test_${suite}.py" -q -p no:cacheprovider \
        --benchmark-enable \
        --benchmark-min-rounds=20 \
        --benchmark-max-time=2.0 \
        --benchmark-columns=min,median,mean,stddev,rounds \
        --benchmark-json "$out/${suite}-${ts}-full.json" \
        --bench-summary-json "$out/${suite}-${ts}.json" \
        "$@"
    summaries+=("$out/${suite}-${ts}.json")
done

echo
echo "== summary (docs/method.md §4 ratios from medians of each run) =="
"$PYTHON" bench/bench_summary.py "${summaries[@]}"

echo
echo "== the noise's share, and what a cheaper generator would buy (bench/noise_cost.py) =="
"$PYTHON" bench/noise_cost.py --iteration-summary "$out/worker_iteration-${ts}.json" \
    --out "$out/noise_cost-${ts}.json"
