"""`secure-collab attack`: run an inversion attack on one threat view and report leakage with intervals.

Rows of the JSON (`results`): view, attack, m (sequences in the statistic, or edits in the release), n (trials),
subject_top1 (recall@m), subject_top5 (recall@5m), chance_top1 (m/N), judge_similarity, random_baseline, and
the intervals and extras each attack adds. The plot is CollabEdit's Fig. 5 for the view: judge similarity
against m with the random-pair line, and subject recall against m with chance.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HELP = "attack a threat view (keys, gram, stats, aggregate, delta, wire, model) and measure what leaks"
ATTACKS = ("spectral", "subspace", "target", "inverter")


def _ints(text: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError("every m must be a positive integer")
    return out


def _attacks(text: str) -> list[str]:
    out = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in out if x not in ATTACKS]
    if bad or not out:
        raise argparse.ArgumentTypeError(f"unknown attack(s) {bad}; choose from {', '.join(ATTACKS)}")
    return out


def _defence(text: str):
    from secure_collab.editing.defences import DefenceError, parse_defence

    try:
        defence = parse_defence(text)
    except DefenceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if defence.noise:  # its plan needs a session's bounds κ, ρ and shape: the sweep declares them
        raise argparse.ArgumentTypeError("noise:Z is measured by `secure-collab defences` (--key-norm-bound, "
                                         "--residual-norm-bound), not here")
    return defence


def add_arguments(p: argparse.ArgumentParser) -> None:
    from attacks.views import VIEWS
    from secure_collab.cli._output import add_json_option

    p.add_argument("--model", default="smollm2-135m", help="public model (default: %(default)s)")
    p.add_argument("--requests", default="bundled", help="edit requests: a record file or 'bundled' (default)")
    p.add_argument("--offset", type=int, default=0, help="skip this many records (default: %(default)s)")
    p.add_argument("--limit", type=int, default=128, help="records in the report set (default: %(default)s)")
    p.add_argument("--view", choices=VIEWS, required=True, help="the threat view to attack")
    p.add_argument("--attack", type=_attacks, default=["subspace"],
                   help="comma-separated: spectral, subspace, target, inverter (default: subspace)")
    p.add_argument("--m", type=_ints, default=[1, 2, 4, 8, 16, 32],
                   help="sequences per statistic / edits per release (default: 1,2,4,8,16,32)")
    p.add_argument("--parties", type=int, default=1,
                   help="aggregate / delta / model: parties in the session; m is then the total edit count "
                   "(default: %(default)s)")
    p.add_argument("--candidates", default=None, help="candidate subjects, one per line (default: request "
                   "subjects + 2,000 Wikipedia titles + countries + --distractor-records)")
    p.add_argument("--distractor-records", nargs="*", default=[], help="record files whose subjects join the "
                   "distractors (e.g. ../shared/data/zsre_mend_train_1k.json)")
    p.add_argument("--trials", type=int, default=128,
                   help="trial budget per m: max(4, budget // m) draws (default: %(default)s)")
    p.add_argument("--inverter-sentences", type=int, default=None,
                   help="inverter: public training sentences (default: 20,000; trained once, cached)")
    p.add_argument("--inverter-epochs", type=int, default=None, help="inverter: epochs (default: 5)")
    p.add_argument("--mode", default="ckks,shares", help="wire: protection modes (default: %(default)s)")
    p.add_argument("--ledger", default=None,
                   help="wire: a finished session's ledger for the metadata attack (default: none)")
    p.add_argument("--session-edits", default=None, metavar="N,N,...",
                   help="wire: also run real sessions (one party per count) for the metadata attack (default: none)")
    p.add_argument("--session-model", default="tiny-llama", help="wire: model of those sessions (default: %(default)s)")
    p.add_argument("--sessions", type=int, default=4, help="wire: sessions per mode (default: %(default)s)")
    p.add_argument("--session-dir", default=None,
                   help="wire: where the sessions' work directories go (default: a new temporary directory)")
    p.add_argument("--defence", type=_defence, default=None,
                   help="delta / model: the session's release defence, none | default | camouflage:S | "
                   "decoys:R[@P] | rank:K | A+B; each row then carries the defence, efficacy, generalization, "
                   "specificity, damage_kl, epsilon and the attack's queries and FLOPs per candidate (default: "
                   "none; noise:Z and a served release are measured by `secure-collab defences`, which sweeps "
                   "them over sessions)")
    p.add_argument("--seed", type=int, default=0, help="seed of the trial draws (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="model and covariance cache (default: ~/.cache/secure-collab)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    add_json_option(p)
    p.add_argument("--plot", default=None, metavar="OUT.png", help="Fig. 5 for the view (default: no plot)")
    # -q/--quiet comes with every command (secure_collab.cli.add_common)


def run(args: argparse.Namespace) -> int:
    from attacks.experiment import AttackError, run_attack
    from secure_collab.cli._output import write_json

    say = (lambda _m: None) if args.quiet else (lambda m: print(f"attack: {m}", file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    try:
        if args.view == "wire":  # dispatched here: attacks.wire builds on attacks.experiment, not the reverse
            from attacks.wire import wire_results

            result = wire_results(args, say)
        else:
            result = run_attack(args, say)
    except (AttackError, FileNotFoundError, ValueError) as exc:
        print(f"attack: {exc}", file=sys.stderr)
        return 2
    result["seconds"] = round(time.perf_counter() - t0, 1)
    if args.plot:
        from attacks.plots import fig5

        fig5(result["results"], args.view, Path(args.plot))
        result["plot"] = args.plot
    write_json(args, result)
    if not args.quiet:
        _table(result["results"])
    return 0


def _table(rows: list[dict]) -> None:
    def f(x) -> str:
        return "-" if x is None else (f"{x:.3f}" if isinstance(x, float) else str(x))

    cols = ("view", "attack", "m", "n", "subject_top1", "subject_top5", "chance_top1", "judge_similarity",
            "random_baseline", "object_top1")
    print("  ".join(f"{c:>14}" for c in cols), file=sys.stderr)
    for r in rows:
        print("  ".join(f"{f(r.get(c)):>14}" for c in cols), file=sys.stderr)
