"""The tables of docs/privacy.md's "The attacks with the repair round" (markdown on stdout), from
`secure-collab defences` session files with the decoys' repair round, beside the same sessions of the sweep without
it:

    python benchmarks/decoys_repair_summary.py

decoys:1's sessions that were not re-run are taken from the sweep without the repair round, and only where the repair
round had nothing to push back (benchmarks/decoy_answers.py's record for that session: 0 repaired, 0 changed; the
script refuses otherwise): there its release is the sweep's to the last bit (every re-run session with nothing to
repair reproduced the sweep's utility and attack rows exactly). Rows run on fewer sessions (the black box, only in the
re-run sessions) say how many.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, ".")
from attacks.defence_sweep import summarise  # noqa: E402

ROOT = Path("benchmarks/results")
REPAIR = ROOT / "defences/smollm2-decoys-repair"
SWEEP = ROOT / "defences/smollm2-decoys"
ANSWERS = ROOT / "decoy_answers/repair/answers1"
RATIOS = ("decoys:1", "decoys:3", "decoys:9")
CHANCE = 30 / 3460


def _ci(r: dict, k: str) -> str:
    return f"{r[k]:.3f} [{r[k + '_ci'][0]:.3f}, {r[k + '_ci'][1]:.3f}]"


def _sweep_session(defence: str, s: int) -> dict:
    return json.loads((SWEEP / f"session-{s}-{defence.replace(':', '_')}.json").read_text())


def main() -> None:
    rerun = {(x["defence"], x["session"]): x
             for x in (json.loads(f.read_text()) for f in sorted(REPAIR.glob("session-*.json")))}
    filled = []  # decoys:1's sessions not re-run: the sweep's, where the repair round had nothing to push back
    for s in range(10):
        if ("decoys:1", s) in rerun:
            continue
        a = json.loads((ANSWERS / f"session-{s}-decoys_1-joint.json").read_text())
        o = _sweep_session("decoys:1", s)
        if a["repaired"] or a["changed_joint"] or o["decoys_changed"]:
            raise SystemExit(f"decoys:1 session {s}: the repair round had something to do there; re-run it")
        filled.append(dict(o, decoys_repaired=0))
    runs = sorted(rerun.values(), key=lambda x: (x["defence"], x["session"])) + filled  # re-run first: summarise
    rows = summarise(runs, {}, CHANCE)  # takes a defence's attack list from its first run
    before = {(r["defence"], r["attack"]): r
              for r in summarise([_sweep_session(x["defence"], x["session"]) for x in runs], {}, CHANCE)}
    by = {(r["defence"], r["attack"]): r for r in rows}
    total = {d: max(r["sessions"] for r in rows if r["defence"] == d) for d in RATIOS}
    print("| defence | sessions | efficacy | generalization | specificity | damage KL (public) | "
          "decoys whose top-1 changed | decoys pushed back |")
    print("|---|---|---|---|---|---|---|---|")
    for d in RATIOS:
        r = by[(d, "deflate")]
        ran = ", ".join(str(s) for (dd, s) in sorted(rerun) if dd == d)
        swept = ", ".join(str(x["session"]) for x in filled)
        label = (f"{total[d]} ({ran})" if ran.count(",") + 1 == total[d]
                 else f"{total[d]} (re-run: {ran}; the sweep's: {swept})")
        print(f"| {d} | {label} | {_ci(r, 'efficacy')} | {_ci(r, 'generalization')} | {_ci(r, 'specificity')} | "
              f"{_ci(r, 'damage_kl')} | **{r['decoys_changed_total']}** of {round(r['decoys'] * r['sessions']):,} | "
              f"{r['decoys_repaired_total']} |")
    print("\n| defence | attack | recall@m [95 % CI over sessions] | recall@5m | "
          "recall@m, the same sessions without the repair round |")
    print("|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: (r["defence"], -r["recall_m"])):
        o = before.get((r["defence"], r["attack"]))
        n = "" if r["sessions"] == total[r["defence"]] else f" ({r['sessions']} session{'s' * (r['sessions'] > 1)})"
        other = f"{o['recall_m']:.3f} |" if o else "not run (no black box in that sweep) |"
        print(f"| {r['defence']} | `{r['attack']}` | {_ci(r, 'recall_m')}{n} | {_ci(r, 'recall_5m')} | {other}")


if __name__ == "__main__":
    main()
