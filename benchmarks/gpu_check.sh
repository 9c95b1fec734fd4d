#!/usr/bin/env bash
# The kit's GPU check, in under 8 minutes on one GPU, summarised in one JSON file:
#   1. the tests that need CUDA (pytest -k cuda over the test files that mention CUDA);
#   2. benchmarks/gpu_check.py: one distillation iteration at the paper's CIFAR-10 ipc 10 and
#      ipc 50 settings per strategy (time, peak GPU memory), an ImageNet-subset iteration,
#      expert training images/s, vmap-batched experts against a loop, fp32/bf16/fp16.
# Random tensors of the right shape stand in for missing datasets (the JSON says which).
#
#   bash benchmarks/gpu_check.sh [--out gpu_check.json] [--dry-run]
#
# --dry-run: every step at tiny sizes on the CPU (seconds), the same JSON keys, to check the
# script before spending GPU time. Python: $PYTHON, else .venv/bin/python, else python3.
# Exit status 0 when every step succeeded (1 otherwise; the JSON is written either way).
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="gpu_check.json"
DRY=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=(--dry-run) ;;
        --out) OUT="${2:?--out needs a file name}"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
    esac
    shift
done
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the kit, installed or not
if ! "$PY" -c "import importlib.util as u, sys; sys.exit(not (u.find_spec('torch') and u.find_spec('mttlib')))" \
        2>/dev/null; then
    echo "gpu_check.sh: $PY cannot import torch and the kit; set PYTHON to an interpreter that can" >&2
    exit 2
fi
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# 1. the tests that need CUDA (on the CPU of a dry run they are collected and skipped)
FILES="$(cd "$ROOT" && grep -l -i cuda tests/test_*.py | grep -v 'tests/test_gpu_check.py' | tr '\n' ' ')"
BEGAN=$(date +%s.%N)
TEST_LIMIT=240
[ ${#DRY[@]} -gt 0 ] && TEST_LIMIT=60
(cd "$ROOT" && timeout "$TEST_LIMIT" "$PY" -m pytest $FILES -k cuda -q -p no:cacheprovider \
    --junitxml="$WORK/cuda_tests.xml" >"$WORK/cuda_tests.log" 2>&1)
RC=$?
SECONDS_TESTS=$(awk -v a="$BEGAN" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "gpu_check: CUDA tests exit $RC (${SECONDS_TESTS} s)" >&2

# 2. the measurements and the JSON (the parts share the 7.5 minutes the tests left)
BUDGET=$(awk -v t="$SECONDS_TESTS" 'BEGIN { b = 450 - t; printf "%.0f", (b < 60 ? 60 : b) }')
cd "$ROOT" && "$PY" benchmarks/gpu_check.py ${DRY[@]+"${DRY[@]}"} --out "$OUT" --budget "$BUDGET" \
    --tests-xml "$WORK/cuda_tests.xml" --tests-log "$WORK/cuda_tests.log" --tests-rc "$RC" \
    --tests-seconds "$SECONDS_TESTS" --tests-files "$FILES"
