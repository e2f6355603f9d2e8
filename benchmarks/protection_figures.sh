#!/usr/bin/env bash
# The figures in docs/protection.md: run once on an otherwise quiet machine (a few minutes on 2 cores).
# Usage: bash benchmarks/protection_figures.sh [OUTDIR]   (default runs/protection; JSON per run + summary)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${1:-runs/protection}
mkdir -p "$OUT"
check() { "$PY" -m secure_collab protection-check --quiet "$@"; }
for mode in shares plain ckks; do
  check --mode "$mode" --parties 10 --dim 1536 --json "$OUT/$mode-p10-d1536.json" > /dev/null
  # dim 6400: parameters for 10 parties, 2 of them send (the per-value figures do not depend on how many)
  check --mode "$mode" --parties 10 --dropouts 8 --dim 6400 --json "$OUT/$mode-p10k8-d6400.json" > /dev/null
  # coordinator memory against the party count: 2 and 20 parties, and 2 of 20 (same parameters as 20)
  for p in 2 20; do
    check --mode "$mode" --parties "$p" --dim 1536 --json "$OUT/$mode-p$p-d1536.json" > /dev/null
  done
  check --mode "$mode" --parties 20 --dropouts 18 --dim 1536 --json "$OUT/$mode-p20k18-d1536.json" > /dev/null
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
rows = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob("*.json"))]
print("| mode | parties | dropouts | dim | bytes/value | protect s/Mvalue | accumulate s/Mvalue | open s/Mvalue "
      "| max_rel_err | coordinator peak MB |")
print("|---|---|---|---|---|---|---|---|---|---|")
for r in sorted(rows, key=lambda r: (r["mode"], r["dim"], r["parties"], -r["dropouts"])):
    print(f"| {r['mode']} | {r['parties']} | {r['dropouts']} | {r['dim']} | {r['bytes_per_value']:.2f} "
          f"| {r['protect_seconds_per_mvalue']:.3f} | {r['accumulate_seconds_per_mvalue']:.3f} "
          f"| {r['open_seconds_per_mvalue']:.3f} | {r['max_rel_err']:.2e} | {r['coordinator_peak_bytes'] / 1e6:.1f} |")
PYEOF
