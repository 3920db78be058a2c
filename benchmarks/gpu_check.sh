#!/usr/bin/env bash
# The GPU check in one command, from the repository root of a machine with a CUDA GPU:
#
#   bash benchmarks/gpu_check.sh [PART ...] [--device cpu --smoke] [--budget PART=SECONDS] ...
#
# Parts: tests, throughput, train, infer (default: all, about 9 minutes on an H100/H200).
# Packages missing on that machine travel as wheels in .whl/: when .whl/ holds wheels they
# are installed into /tmp/site (no index, no dependencies) and put on PYTHONPATH with src/.
# Extra arguments go to benchmarks/gpu_check.py (--help lists them). Results: PART.json,
# summary.json and gpu_check.log in $OUT when set, else benchmarks/results/gpu_check/.
# Without a CUDA GPU every part is skipped with a message (exit status 0).
set -u -o pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.." || { echo "gpu_check: cannot enter the repository root"; exit 2; }
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "gpu_check: no Python interpreter '$PY' on PATH (set PYTHON=/path/to/python)"
  exit 2
fi

WHEELS=${GPU_CHECK_WHEEL_DIR:-.whl}  # tests point this elsewhere
if compgen -G "$WHEELS/*.whl" >/dev/null; then
  if ! "$PY" -m pip --version >/dev/null 2>&1; then
    echo "gpu_check: '$PY -m pip' is missing, so the wheels in $WHEELS/ cannot be installed"
    exit 2
  fi
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --upgrade \
      --target /tmp/site "$WHEELS"/*.whl; then
    echo "gpu_check: installing the wheels in $WHEELS/ into /tmp/site failed (pip's message above)"
    exit 2
  fi
  export PYTHONPATH="/tmp/site:src${PYTHONPATH:+:$PYTHONPATH}"
  export GPU_CHECK_WHEELS=installed
else
  export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
  export GPU_CHECK_WHEELS=absent
fi
export PYTHONUNBUFFERED=1

exec "$PY" benchmarks/gpu_check.py "$@"
