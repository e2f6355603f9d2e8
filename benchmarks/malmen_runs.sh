#!/usr/bin/env bash
# Issue 23's figures: MEMIT and MALMEN side by side on the CounterFact records that MALMEN's training and validation
# files do not hold (counterfact.json records from 40 on, so MEMIT's tuning records 0-39 are out too).
# One heavy job per core: run the two grids on separate cores (each is resumable: cells are cached under --out).
set -euo pipefail
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
SC=${SC:-.venv/bin/secure-collab}
HELD="--requests ../shared/data/counterfact.json --start 40 --exclude-case-ids ../shared/data/counterfact_mend/counterfact-train.json --exclude-case-ids ../shared/data/counterfact_mend/counterfact-val.json"
COMMON="--model smollm2-135m --parties 10 --edits 30,100 --fluency-sample 5,2 --methods global,collab,ta,sa,ties --threads 1"
case "${1:-all}" in
  memit|all) $SC experiment merge $COMMON $HELD --variant sequential --out runs/merge_heldout_memit ;;&
  malmen|all) $SC experiment merge $COMMON $HELD --backend malmen --hypernet "${HYPERNET:-runs/malmen-smollm2/hypernet}" --out runs/merge_heldout_malmen ;;
esac
