"""Break the engine on purpose and check that the reference tests fail: they must not pass a wrong MEMIT.

    python tests/editing/mutation_check.py [--json OUT]

Each mutant is one textual change to a copy of the working tree (the checkout is never touched); the reference
tests run on the copy with ``-x`` and the first failing test is reported. Exit status 1 if a mutant survives.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ["tests/editing/test_reference.py"]

# (name, file, original text, mutated text)
MUTANTS = [
    ("residual split over all layers (/ L instead of / (L - i))", "secure_collab/editing/memit.py",
     "/ (len(hp.layers) - i)", "/ len(hp.layers)"),
    ("key averaging: plain mean over all templates", "secure_collab/editing/keys.py",
     "return 0.5 * k[:, 0] + 0.5 * k[:, 1:].mean(1)", "return k.mean(1)"),
    ("KL term dropped from the target loss", "secure_collab/editing/targets.py",
     "loss = nll + hp.kl_factor * kl + wd", "loss = nll + wd"),
    ("KL term reversed: KL(initial ‖ current)", "secure_collab/editing/targets.py",
     "kl = (kl_lp.exp() * (kl_lp - kl_init[act])).sum(1)", "kl = (kl_init[act].exp() * (kl_init[act] - kl_lp)).sum(1)"),
    ("norm clamp removed", "secure_collab/editing/targets.py",
     "delta.mul_(scale[:, None])", "pass"),
    ("target loss in float32 (log-softmax cast)", "secure_collab/editing/targets.py",
     "torch.log_softmax(self.unembed(sel), dim=-1)",
     "torch.log_softmax(self.unembed(sel).float(), dim=-1).to(h.dtype)"),
    ("window: the replayed positions also see their own stale cached columns", "secure_collab/editing/targets.py",
     "torch.arange(t, device=dev)[None, None, :] < start[:, None, None]",
     "torch.arange(t, device=dev)[None, None, :] <= start[:, None, None]"),
    ("window: positions shifted by one", "secure_collab/editing/targets.py",
     "position_ids=cols,", "position_ids=cols + 1,"),
    ("window: δ added one column late", "secure_collab/editing/targets.py",
     "p.lookup[sel] - up.col0", "p.lookup[sel] - up.col0 + 1"),
]


def tracked_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def run_mutant(name: str, file: str, old: str, new: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        work = Path(tmp)
        tracked_copy(work)
        path = work / file
        text = path.read_text()
        if text.count(old) != 1:
            return {"mutant": name, "status": "not applied (text not found once)", "caught_by": None}
        path.write_text(text.replace(old, new))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(work)}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *TESTS],
                              cwd=work, env=env, capture_output=True, text=True)
        failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
        return {"mutant": name, "file": file, "status": "killed" if proc.returncode != 0 else "SURVIVED",
                "caught_by": failed[0] if failed else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    rows = []
    for mutant in MUTANTS:
        row = run_mutant(*mutant)
        rows.append(row)
        print(f"{row['status']:>8}  {row['mutant']}  <- {row['caught_by']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["status"] == "killed" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
