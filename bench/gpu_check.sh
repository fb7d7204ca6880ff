#!/usr/bin/env bash
# GPU check of snep's CUDA backend, as one prepared command for a machine with a CUDA GPU:
# installs what is missing, then runs bench/gpu_check.py, which checks every CUDA kernel
# against its float64 numpy oracle (PASS/FAIL lines with max errors) and times the CUDA
# worker pieces against PyTorch eager and torch.compile (a table, and JSON with the device
# name in $OUT when set, else in bench/results/).
#
#   bash bench/gpu_check.sh                 # checks + timings (< 8 minutes)
#   bash bench/gpu_check.sh --no-timing     # checks only
#   bash bench/gpu_check.sh --quick         # fewer timing repetitions
#
# PYTHON selects the interpreter (default python3).  Exit status: 0 all checks passed,
# 1 a check failed, 2 nothing could run (no CuPy), 124 the time limit was hit.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1

echo "== gpu_check: environment =="
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null \
    || echo "(nvidia-smi not available)"
"$PY" --version

# snep itself (the native extension and, where nvcc is found, the AOT kernel fatbin).
# Offline machines that already have the build tools and dependencies build it in place
# without touching the registry; otherwise the extras are installed from it.
if ! "$PY" -c "import snep._native" 2>/dev/null; then
    if "$PY" -c "import scikit_build_core, nanobind, numpy, numba, sklearn, threadpoolctl, rich, matplotlib" 2>/dev/null; then
        echo "== installing snep (editable, no build isolation, dependencies already present) =="
        "$PY" -m pip install -q --no-build-isolation --no-deps -e .
    else
        echo "== installing snep with its cuda and bench extras =="
        "$PY" -m pip install -q -e ".[cuda,bench]"
    fi
fi

# CuPy: whatever build is installed (cupy-cuda12x or cupy-cuda13x), else cupy-cuda12x.
if ! "$PY" -c "import cupy" 2>/dev/null; then
    echo "== installing CuPy =="
    if ! "$PY" -m pip install -q "cupy-cuda12x>=13"; then
        echo "gpu_check: CuPy is missing and could not be installed; install cupy-cuda12x" \
             "(or cupy-cuda13x for CUDA 13) and run again" >&2
        exit 2
    fi
fi
"$PY" -c "import torch" 2>/dev/null \
    || echo "(PyTorch is not importable: the timings will have no PyTorch baselines)"

echo "== gpu_check.py =="
status=0
timeout 480 "$PY" bench/gpu_check.py "$@" || status=$?
if [ "$status" -eq 124 ]; then
    echo "gpu_check: bench/gpu_check.py ran past its 8-minute limit" >&2
fi
exit "$status"
