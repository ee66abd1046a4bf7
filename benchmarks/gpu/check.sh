#!/usr/bin/env bash
# The GPU check: every GPU figure of kitaeru in one run (<= 8 minutes on one H200).
#
#   bash benchmarks/gpu/check.sh            # on the CUDA host: installs .whl/*.whl + kitaeru, then measures
#   bash benchmarks/gpu/check.sh --dry-run  # here, on CPU with tiny sizes: proves the script itself works
#
# Writes $OUT/gpu_check.json (./gpu_check.json when OUT is unset) and the log $OUT/gpu_check.log.
# First step: every import is checked; a missing one stops the run (exit 3) with the wheels to add
# (benchmarks/gpu/prepare.sh fetches them). In --dry-run nothing is installed: the current python is used.
set -u -o pipefail
cd "$(dirname "$0")/../.." || exit 2
OUTDIR="${OUT:-.}"
mkdir -p "$OUTDIR"
LOG="$OUTDIR/gpu_check.log"
: > "$LOG"
PY="${PYTHON:-python3}"
DRY=""
EXTRA=()
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY="--dry-run" ;;
    *) EXTRA+=("$arg") ;;
  esac
done
say() { echo "[gpu-check] $*" | tee -a "$LOG" >&2; }
fail_json() {  # the JSON says why, even when python never got to write it
  printf '{"status": "failed", "error": "%s", "log": "gpu_check.log"}\n' "$1" > "$OUTDIR/gpu_check.json"
}

if [ -z "$DRY" ]; then
  SITE="${KITAERU_CHECK_SITE:-/tmp/kitaeru-check-site}"
  if ls .whl/*.whl >/dev/null 2>&1; then
    say "installing $(ls .whl/*.whl | wc -l) carried wheels into $SITE"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
      >>"$LOG" 2>&1 || { say "wheel install failed (see $LOG)"; fail_json "wheel install failed"; exit 3; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  # kitaeru itself from this tree, without dependencies; the source folder if pip cannot build here
  if "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-cache-dir --target "$SITE-kitaeru" . >>"$LOG" 2>&1; then
    export PYTHONPATH="$SITE-kitaeru${PYTHONPATH:+:$PYTHONPATH}"
  else
    say "pip could not install the tree; using src/ on PYTHONPATH"
    export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 YOLO_OFFLINE=1
fi
export KITAERU_NO_PROGRESS=1 PYTHONUNBUFFERED=1

say "step 1: imports"
"$PY" benchmarks/gpu/check.py --imports --out "$OUTDIR/gpu_check.json" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
if [ "$rc" -ne 0 ]; then
  say "missing imports (listed above): add their wheels with benchmarks/gpu/prepare.sh"
  exit 3
fi
say "step 2: sections"
"$PY" benchmarks/gpu/check.py $DRY --skip-imports --out "$OUTDIR/gpu_check.json" ${EXTRA[@]+"${EXTRA[@]}"} 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
say "done (exit $rc): $OUTDIR/gpu_check.json"
exit "$rc"
