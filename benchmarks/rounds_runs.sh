#!/usr/bin/env bash
# The SmolLM2 runs behind docs/rounds.md (issue 11), in order. Every step resumes from the caches (targets per
# request and model state, experiment cells per round), so the script can be run again after an interruption.
# Each step takes the shared experiment lock on its own; LOCK= (empty) runs them without it, e.g. when the whole
# script already holds the lock:  flock /tmp/sc-exp.lock env LOCK= bash benchmarks/rounds_runs.sh
#   bash benchmarks/rounds_runs.sh            (from the repository root; DATA defaults to ../shared/data)
set -euo pipefail
PY=${PY:-/work/main/.venv/bin/python}
DATA=${DATA:-../shared/data}
LOCK=${LOCK-/tmp/sc-exp.lock}
RES=${RES:-benchmarks/results}
run() {
  echo "== $(date +%T) $*"
  set -- nice -n 5 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. "$@"
  if [ -n "$LOCK" ]; then set -- flock "$LOCK" "$@"; fi
  "$@"
}

# 1. AlphaEdit's null-space threshold and L2 on tuning records 0-23 of counterfact.json (rule fixed in the script)
run "$PY" benchmarks/alphaedit_tune.py --requests "$DATA/counterfact.json" --start 0 --no-reference --out "$RES/alphaedit_tune.json"
read -r THR L2 < <("$PY" -c "import json,sys; c=json.load(open(sys.argv[1]))['chosen']; \
print(c['nullspace_threshold'], c['alphaedit_l2'])" "$RES/alphaedit_tune.json")
echo "== chosen: nullspace_threshold $THR, L2 $L2"
# 2. forgetting on report records 140-187: 4 rounds x 3 parties x 4 edits, the three update rules (24 minutes of one
#    core); then the stress case λ = 10 for the two MEMIT rules (AlphaEdit has no λC term)
run "$PY" -m secure_collab experiment forgetting --model smollm2-135m --requests "$DATA/counterfact.json" \
    --start 140 --rounds 4 --parties 3 --edits-per-party "${EDITS:-4}" --nullspace-threshold "$THR" --alphaedit-l2 "$L2" \
    --threads 1 --out "$RES/forgetting_smollm2"
run "$PY" -m secure_collab experiment forgetting --model smollm2-135m --requests "$DATA/counterfact.json" \
    --start 140 --rounds 4 --parties 3 --edits-per-party "${EDITS:-4}" --lambda 10 --rules memit-static,memit-dynamic \
    --threads 1 --out "$RES/forgetting_smollm2_lambda10"
# 3. conflict on report records from 188 on: 4 facts, 2 augmented requests per fact, cross-round under the dynamic rule
run "$PY" -m secure_collab experiment conflict --model smollm2-135m --requests "$DATA/counterfact.json" \
    --start 188 --facts 4 --augment 2 --rules memit-dynamic --threads 1 --out "$RES/conflict_smollm2"
# 4. overlap: the acceptance on a tiny float64 model (seconds), and SmolLM2 on records 240-250 (not run in the
#    session of 2026-11-30 for lack of experiment time; run on 2026-12-01)
run "$PY" -m secure_collab experiment overlap --model tiny-llama --requests "$DATA/counterfact.json" \
    --parties 3 --edits-per-party 2 --threads 1 --out "$RES/overlap_tiny"
run "$PY" -m secure_collab experiment overlap --model smollm2-135m --requests "$DATA/counterfact.json" \
    --start 240 --parties 3 --edits-per-party 2 --threads 1 --out "$RES/overlap_smollm2"
echo "== $(date +%T) done"
