#!/usr/bin/env bash
# The SmolLM2 runs behind docs/lambda_sweep.md and docs/results.md (issue 10), in order. Every step resumes from
# the caches (targets per request, covariances per budget, grid cells), so the script can be run again after an
# interruption. Each step takes the shared heavy-job lock on its own, so other jobs can run in between.
#   bash benchmarks/fidelity_runs.sh            (from the repository root; DATA defaults to ../shared/data)
set -euo pipefail
PY=${PY:-/work/main/.venv/bin/python}
DATA=${DATA:-../shared/data}
LOCK=${LOCK:-/tmp/sc-heavy.lock}
OUT=${OUT:-runs}
run() { echo "== $(date +%T) $*"; flock "$LOCK" nice -n 5 env OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=. "$@"; }

# 1. targets z* of the tuning records (0-39) and the report records (40-139) of counterfact.json
run "$PY" benchmarks/warm_targets.py "$DATA/counterfact.json:0:140"
# 2. covariance token budget × λ, Global-Edit of the 40 tuning records (the whole corpus is step 6)
run "$PY" benchmarks/budget_sweep.py --requests "$DATA/counterfact.json" --records 0:40 \
    --budgets 20000,100000,300000 --lambdas 100,300,1000,3000,10000
# 3. the default, by the rule in budget_sweep.pick (fixed before the runs)
read -r TOKENS LAMBDA < <(PYTHONPATH=. "$PY" benchmarks/budget_sweep.py --pick)
echo "== chosen: C from $TOKENS tokens, λ = $LAMBDA"
# 4. the merge grid on the report records 40-139: 10 parties, 10/30/100 edits, both variants
run "$PY" -m secure_collab experiment merge --model smollm2-135m --requests "$DATA/counterfact.json" --start 40 \
    --parties 10 --edits 10,30,100 --variant sequential,oneshot --tokens "$TOKENS" --lambda "$LAMBDA" \
    --methods global,collab,ta,sa,ties,ta-lockstep,sa-lockstep,ties-lockstep --threads 1 \
    --out "$OUT/merge_counterfact"
# 5. zsRE: targets of records 0-99 of zsre_mend_train_1k.json, then the grid
run "$PY" benchmarks/warm_targets.py "$DATA/zsre_mend_train_1k.json:0:100"
run "$PY" -m secure_collab experiment merge --model smollm2-135m --requests "$DATA/zsre_mend_train_1k.json" \
    --parties 10 --edits 10,30,100 --variant sequential,oneshot --tokens "$TOKENS" --lambda "$LAMBDA" \
    --methods global,collab,ta,sa,ties --threads 1 --out "$OUT/merge_zsre"
# 6. the whole corpus (about 0.95 M tokens of length <= 128, ~40 min on one core), if time allows
run "$PY" benchmarks/budget_sweep.py --requests "$DATA/counterfact.json" --records 0:40 --budgets all \
    --lambdas 100,300,1000,3000,10000 --json benchmarks/results/budget_sweep_all.json \
    --markdown benchmarks/results/budget_sweep_all.md
echo "== $(date +%T) done"
