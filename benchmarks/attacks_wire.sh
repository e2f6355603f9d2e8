#!/usr/bin/env bash
# The coordinator's view on SmolLM2-135M (docs/privacy.md): the ranking attack on the protected bytes of real
# statistics in ckks and shares mode, the byte tests, and the metadata attack on real sessions (tiny-llama,
# four parties with 1, 2, 4 and 8 edits, rotated over four sessions per mode). Run under the shared lock:
#   nohup flock /tmp/sc-heavy.lock nice -n 5 env OMP_NUM_THREADS=1 bash benchmarks/attacks_wire.sh > /tmp/attacks-wire.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SC=${SC:-"$PY -m secure_collab"}
OUT=benchmarks/results/attacks
DATA=${DATA:-../shared/data}
mkdir -p "$OUT"
echo "== wire"; date
$SC attack --model smollm2-135m --requests "$DATA/counterfact.json" --offset 200 --limit 128 \
  --distractor-records "$DATA/zsre_mend_train_1k.json" "$DATA/mquake.json" \
  --view wire --mode ckks,shares --m 1,4 --trials 16 --session-edits 1,2,4,8 --sessions 4 \
  --session-dir /tmp/attacks-wire-sessions --json "$OUT/wire.json" || echo "!! wire failed"
date; echo "== done"
