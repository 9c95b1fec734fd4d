#!/usr/bin/env bash
# The kit's GPU check, in under 10 minutes on one GPU, summarised in one JSON file (and its logs in one archive):
#   1. benchmarks/gpu_check.py: operator calls per student step, one distillation iteration at the paper's
#      CIFAR-10 ipc 10 and ipc 50 settings per strategy with and without the CUDA graph (and the reference
#      implementation's own loop beside it, with --reference DIR), expert training against a plain loop,
#      fp32/bf16 (fp16 refused), what seeds and resume guarantee;
#   2. the classroom demo (python -m mttlib demo), timed;
#   3. the paper's CIFAR-10 table at a reduced schedule (python -m mttlib reproduce --size gpu), with --cifar10 DIR;
#   4. the whole test suite with CUDA visible (browser tests aside), in parallel where pytest-xdist is installed.
#
#   bash benchmarks/gpu_check.sh [--out gpu_check.json] [--reference DIR] [--cifar10 DIR] [--minutes M]
#                                [--only parts,demo,reproduce,suite] [--dry-run]
#
# --dry-run: every step at tiny sizes on the CPU, the same JSON keys, to check the script before spending GPU
# time (the demo runs notebook 00 at smoke size, the suite only the tests that mention CUDA). Python: $PYTHON,
# else .venv/bin/python, else python3. Exit status 0 when every step succeeded (1 otherwise; the JSON is
# written either way). Each step has its own time limit; a step stopped at its limit is reported as failed.
set -u
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="gpu_check.json"
DRY=()
REFERENCE=""
CIFAR=""
MINUTES=3
ONLY="parts,demo,reproduce,suite"
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) DRY=(--dry-run) ;;
        --out) OUT="${2:?--out needs a file name}"; shift ;;
        --out=*) OUT="${1#--out=}" ;;
        --reference) REFERENCE="${2:?--reference needs a folder}"; shift ;;
        --cifar10) CIFAR="${2:?--cifar10 needs an ImageFolder tree of CIFAR-10}"; shift ;;
        --minutes) MINUTES="${2:?--minutes needs a number}"; shift ;;
        --only) ONLY="${2:?--only needs a list such as parts,suite}"; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
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
STEPS=()
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
note() { echo "gpu_check: $*" >&2; }
wanted() { case ",$ONLY," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }

# 1. the measurements, alone on the machine (each part in its own process)
PARTS_ARGS=(--out "$WORK/parts.json" --budget 300)
[ -n "$REFERENCE" ] && PARTS_ARGS+=(--reference "$REFERENCE")
wanted parts || PARTS_ARGS+=(--parts)
(cd "$ROOT" && timeout 330 "$PY" benchmarks/gpu_check.py ${DRY[@]+"${DRY[@]}"} "${PARTS_ARGS[@]}" \
    >"$WORK/parts.log" 2>&1)
note "parts exit $?"

# 2. the classroom demo, timed, in a runs folder of its own
if [ ${#DRY[@]} -gt 0 ]; then DEMO=(--smoke --only 00); DEMO_LIMIT=300; else DEMO=(); DEMO_LIMIT=360; fi
if wanted demo; then
BEGAN=$(now)
(cd "$ROOT" && timeout "$DEMO_LIMIT" "$PY" -m mttlib demo ${DEMO[@]+"${DEMO[@]}"} --out "$WORK/demo" \
    --runs "$WORK/demo-runs" >"$WORK/demo.log" 2>&1)
RC=$?; STEPS+=(--step demo log "$RC" "$(since "$BEGAN")" "$WORK/demo.log"); note "demo exit $RC"
fi

# 3. the paper's table at a reduced schedule (needs CIFAR-10; on a dry run at smoke size on cifar10-mini)
if wanted reproduce && { [ -n "$CIFAR" ] || [ ${#DRY[@]} -gt 0 ]; }; then
    if [ ${#DRY[@]} -gt 0 ]; then
        DATA=cifar10-mini; [ -n "$CIFAR" ] && DATA="folder:$CIFAR"
        REPRO=(--size smoke --device cpu --data "$DATA" --like cifar10)
    else
        REPRO=(--size gpu --minutes "$MINUTES" --data "folder:$CIFAR" --like cifar10 --device cuda)
    fi
    BEGAN=$(now)
    (cd "$ROOT" && timeout $((MINUTES * 60 + 120)) "$PY" -m mttlib reproduce "${REPRO[@]}" --out "$WORK/reproduce" \
        >"$WORK/reproduce.log" 2>&1)
    RC=$?; STEPS+=(--step reproduce log "$RC" "$(since "$BEGAN")" "$WORK/reproduce.log"); note "reproduce exit $RC"
    cp "$WORK/reproduce/reproduce.json" "$WORK/reproduce.json" 2>/dev/null
fi

# 4. the whole suite with CUDA visible (the browser tests need a screen and a browser: left out)
XDIST=()
"$PY" -c "import xdist" 2>/dev/null && XDIST=(-n "$(( $(nproc) > 12 ? 12 : $(nproc) ))")
if [ ${#DRY[@]} -gt 0 ]; then SUITE=(-k cuda); SUITE_LIMIT=120; else SUITE=(); SUITE_LIMIT=${SUITE_LIMIT:-240}; fi
if wanted suite; then
BEGAN=$(now)
(cd "$ROOT" && timeout "$SUITE_LIMIT" "$PY" -m pytest tests ${SUITE[@]+"${SUITE[@]}"} ${XDIST[@]+"${XDIST[@]}"} -q \
    -p no:cacheprovider --ignore=tests/test_browser.py --ignore=tests/test_browser_textures.py \
    --ignore=tests/test_gpu_check.py --junitxml="$WORK/suite.xml" >"$WORK/suite.xml.log" 2>&1)
RC=$?; [ ${#DRY[@]} -gt 0 ] && [ "$RC" = 5 ] && RC=0
STEPS+=(--step suite tests "$RC" "$(since "$BEGAN")" "$WORK/suite.xml"); note "suite exit $RC"
fi

# the summary: the parts' JSON with the steps beside it; every log in one archive next to it
(cd "$ROOT" && "$PY" benchmarks/gpu_check.py ${DRY[@]+"${DRY[@]}"} --parts --out "$WORK/steps.json" \
    ${STEPS[@]+"${STEPS[@]}"})
"$PY" - "$WORK/parts.json" "$WORK/steps.json" "$WORK/reproduce.json" "$OUT" <<'EOF'
import json, os, sys
parts_path, steps_path, repro_path, out = sys.argv[1:]
summary = json.load(open(steps_path))
parts = json.load(open(parts_path)) if os.path.exists(parts_path) else {"ok": False, "error": "the parts wrote nothing"}
for key, value in parts.items():
    if key not in summary or key in ("data", "wall_s"):
        summary[key] = value
summary["ok"] = bool(summary.get("ok")) and bool(parts.get("ok"))
summary["wall_s"] = round(summary.get("wall_s", 0) + parts.get("wall_s", 0), 1)
if os.path.exists(repro_path):
    summary.setdefault("reproduce", {})["table"] = json.load(open(repro_path))
with open(out + ".tmp", "w") as fh:
    json.dump(summary, fh, indent=2)
os.replace(out + ".tmp", out)
print(f"gpu_check: wrote {out} (ok={summary['ok']}, {summary['wall_s']} s)", file=sys.stderr)
sys.exit(0 if summary["ok"] else 1)
EOF
RC=$?
tar -czf "${OUT%.json}_logs.tar.gz" -C "$WORK" --exclude='demo-runs' --exclude='reproduce/experts' . 2>/dev/null
exit $RC
