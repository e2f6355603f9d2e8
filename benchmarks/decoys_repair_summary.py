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
import glob
import json
import sys

sys.path.insert(0, '.')
from attacks.defence_sweep import summarise

D = 'benchmarks/results/defences/smollm2-decoys-repair'
OLD = 'benchmarks/results/defences/smollm2-decoys'
ANS = 'benchmarks/results/decoy_answers/repair/answers1'
rerun = {(x['defence'], x['session']): x for x in (json.load(open(f)) for f in glob.glob(D + '/session-*.json'))}
def sess(d): return sorted(s for (dd, s) in rerun if dd == d)
# decoys:1: the sessions not re-run are the sweep's, where the repair round had nothing to push back
filled = []
for s in range(10):
    if ('decoys:1', s) in rerun:
        continue
    a = json.load(open(f'{ANS}/session-{s}-decoys_1-joint.json'))
    assert a['repaired'] == 0 and a['changed_joint'] == 0, (s, a)
    o = json.load(open(f'{OLD}/session-{s}-decoys_1.json'))
    assert o['decoys_changed'] == 0
    o = dict(o, decoys_repaired=0)
    filled.append(o)
order = sorted(rerun.values(), key=lambda x: (x['defence'], x['session']))
res = order + filled   # re-run sessions first: summarise takes the attack list from a defence's first run
rows = summarise(res, {}, 30 / 3460)
ores = [json.load(open(f"{OLD}/session-{x['session']}-{x['defence'].replace(':', '_')}.json")) for x in res]
orows = {(r['defence'], r['attack']): r for r in summarise(ores, {}, 30 / 3460)}
R = {(r['defence'], r['attack']): r for r in rows}
def ci(r, k): return f"{r[k]:.3f} [{r[k+'_ci'][0]:.3f}, {r[k+'_ci'][1]:.3f}]"
tot = {d: max(r['sessions'] for r in rows if r['defence'] == d) for d in ('decoys:1', 'decoys:3', 'decoys:9')}
util = ["| defence | sessions | efficacy | generalization | specificity | damage KL (public) | "
        "decoys whose top-1 changed | decoys pushed back |",
        "|---|---|---|---|---|---|---|---|"]
for d in ('decoys:1', 'decoys:3', 'decoys:9'):
    r = R[(d, 'deflate')]
    ss = ', '.join(map(str, sess(d)))
    swept = ", ".join(str(x["session"]) for x in filled)
    label = f"{tot[d]} ({ss})" if len(sess(d)) == tot[d] else f"{tot[d]} (re-run: {ss}; the sweep's: {swept})"
    util.append(f"| {d} | {label} | {ci(r,'efficacy')} | {ci(r,'generalization')} | {ci(r,'specificity')} | "
                f"{ci(r,'damage_kl')} | **{r['decoys_changed_total']}** of {round(r['decoys'] * r['sessions']):,} | "
                f"{r['decoys_repaired_total']} |")
att = ["| defence | attack | recall@m [95 % CI over sessions] | recall@5m | "
       "recall@m, the same sessions without the repair round |",
       "|---|---|---|---|---|"]
for r in sorted(rows, key=lambda r: (r['defence'], -r['recall_m'])):
    o = orows.get((r['defence'], r['attack']))
    n = "" if r['sessions'] == tot[r['defence']] else f" ({r['sessions']} session{'s' * (r['sessions'] > 1)})"
    other = f"{o['recall_m']:.3f} |" if o else "not run (no black box in that sweep) |"
    att.append(f"| {r['defence']} | `{r['attack']}` | {ci(r,'recall_m')}{n} | {ci(r,'recall_5m')} | " + other)
print("\n".join(util))
print()
print("\n".join(att))
