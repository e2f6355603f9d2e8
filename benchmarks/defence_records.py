"""The defence measurement's report set: 300 CounterFact records the project never tuned on (deterministic).

    python benchmarks/defence_records.py   # writes benchmarks/results/defences/requests.json

Records are taken in file order from index 6000 of ``../shared/data/counterfact_mend/counterfact-edit.json``,
skipping every case id of ``../shared/data/counterfact.json`` (whose records 0-329 tuned λ, the attacks and the
early stop) and repeated subjects, until 300 are held. Nothing about the defences was chosen on them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--start", type=int, default=6000, help="first record index (default: %(default)s)")
    ap.add_argument("--n", type=int, default=300, help="records to keep (default: %(default)s)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "defences" / "requests.json"))
    args = ap.parse_args()
    seen_ids = {str(r["case_id"]) for r in json.loads((SHARED / "counterfact.json").read_text())}
    records = json.loads((SHARED / "counterfact_mend" / "counterfact-edit.json").read_text())
    kept, subjects = [], set()
    for r in records[args.start:]:
        if str(r["case_id"]) in seen_ids or r["subject"] in subjects:
            continue
        kept.append(r)
        subjects.add(r["subject"])
        if len(kept) == args.n:
            break
    Path(args.out).write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(kept)} records, case ids {kept[0]['case_id']}..{kept[-1]['case_id']}")


if __name__ == "__main__":
    main()
