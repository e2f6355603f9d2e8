"""Break the engine on purpose and check that the reference tests fail: they must not pass a wrong MEMIT.

    python tests/editing/mutation_check.py [--suite memit|malmen] [--json OUT]

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
TESTS = {"memit": ["tests/editing/test_reference.py"],
         "malmen": ["tests/editing/test_malmen.py", "tests/editing/test_malmen_train.py"]}

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


MALMEN_MUTANTS = [
    ("value difference with the wrong sign", "secure_collab/editing/malmen/net.py",
     "return -self.lr[i] * (u * u_t)", "return self.lr[i] * (u * u_t)"),
    ("every layer takes the first layer's shift", "secure_collab/editing/malmen/net.py",
     "+ self.shift[i]", "+ self.shift[0]"),
    ("ridge λ instead of e^λ", "secure_collab/editing/malmen/net.py",
     "return float(torch.exp(self.net(layer).lamda", "return float((self.net(layer).lamda"),
    ("normaliser std biased (n instead of n - 1)", "secure_collab/editing/malmen/net.py",
     "self.std.copy_(x.std(0))", "self.std.copy_(x.std(0, correction=0))"),
    ("rows at the answer tokens instead of the positions predicting them", "secure_collab/editing/malmen/rows.py",
     "labs.append([-100] * (len(p) - 1) + a)", "labs.append([-100] * len(p) + a[:-1])"),
    ("edit loss averaged over the batch's tokens (the reference code's cross-entropy)",
     "secure_collab/editing/malmen/rows.py",
     "loss = token_nll(logits, enc.labels).sum()", "loss = token_nll(logits, enc.labels).sum() / sel.sum()"),
    ("stage 2 without A⁻¹ in ∂L/∂D", "secure_collab/editing/malmen/train.py",
     "a_inv_gs = torch.cholesky_solve(grads[layer].to(dtype), chols[layer])", "a_inv_gs = grads[layer].to(dtype)"),
    ("stage 2: ∂L/∂λ with the wrong sign", "secure_collab/editing/malmen/train.py",
     "lam_grad = -hypernet.ridge(layer)", "lam_grad = hypernet.ridge(layer)"),
]
SUITES = {"memit": MUTANTS, "malmen": MALMEN_MUTANTS}


def tracked_copy(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def run_mutant(name: str, file: str, old: str, new: str, tests: list[str]) -> dict:
    with tempfile.TemporaryDirectory(prefix="mutant-") as tmp:
        work = Path(tmp)
        tracked_copy(work)
        path = work / file
        text = path.read_text()
        if text.count(old) != 1:
            return {"mutant": name, "status": "not applied (text not found once)", "caught_by": None}
        path.write_text(text.replace(old, new))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(work)}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                              cwd=work, env=env, capture_output=True, text=True)
        failed = re.findall(r"^FAILED (\S+)", proc.stdout, flags=re.M)
        return {"mutant": name, "file": file, "status": "killed" if proc.returncode != 0 else "SURVIVED",
                "caught_by": failed[0] if failed else None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--suite", choices=sorted(SUITES), default="memit", help="which engine to break")
    args = ap.parse_args()
    rows = []
    for mutant in SUITES[args.suite]:
        row = run_mutant(*mutant, TESTS[args.suite])
        rows.append(row)
        print(f"{row['status']:>8}  {row['mutant']}  <- {row['caught_by']}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    return 0 if all(r["status"] == "killed" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
