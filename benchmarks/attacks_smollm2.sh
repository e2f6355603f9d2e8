#!/usr/bin/env bash
# The acceptance figures of docs/privacy.md on SmolLM2-135M with real CounterFact records.
# Report set: records 200-327 of ../shared/data/counterfact.json (--offset 200 --limit 128); records 0-63 were
# the only ones looked at while building the attacks. Each command is resumable (targets, candidate keys and
# the inverter are cached under ~/.cache/secure-collab/attacks). Run it under the shared lock:
#   nohup flock /tmp/sc-heavy.lock nice -n 5 env OMP_NUM_THREADS=1 bash benchmarks/attacks_smollm2.sh > /tmp/attacks-smollm2.log 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SC=${SC:-"$PY -m secure_collab"}
OUT=benchmarks/results/attacks
DATA=${DATA:-../shared/data}
mkdir -p "$OUT"
COMMON=(--model smollm2-135m --requests "$DATA/counterfact.json" --offset 200 --limit 128
        --distractor-records "$DATA/zsre_mend_train_1k.json" "$DATA/mquake.json")
run() { local name=$1; shift; echo "== $name: secure-collab attack $*"; date
        $SC attack "${COMMON[@]}" "$@" --json "$OUT/$name.json" --plot "$OUT/$name.png" \
          || echo "!! $name failed"; }
run delta     --view delta --parties 10 --m 30 --attack subspace,target
run stats     --view stats --m 1,2,4,8 --attack subspace,target
run aggregate --view aggregate --parties 10 --m 30 --attack subspace,target
run keys      --view keys --attack subspace,spectral,inverter --m 1,2,4,8,16,32 --trials 32
run gram      --view gram --attack subspace,spectral,inverter --m 1,2,4,8,16,32 --trials 32
run aggregate-grid --view aggregate --parties 4 --attack subspace,spectral,inverter --m 4,8,16,32 --trials 32
date; echo "== done"
