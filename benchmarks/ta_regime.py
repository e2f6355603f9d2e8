"""Where task arithmetic (TA) breaks against collab: a one-layer proxy over real keys, up to 800 distinct edits.

Collab is ΔW = R Kᵀ (λC + K Kᵀ)⁻¹ over every party's edits; TA sums each party's own solve,
ΔW_TA = Σ_p R_p K_pᵀ (λC + K_p K_pᵀ)⁻¹, and SA is TA / P (CollabEdit's definitions). TA's error on edit j grows
with the other parties' keys' cosine to k_j in the C⁻¹ metric, which only the keys and C decide. So this measures on
real SmolLM2 keys (CounterFact records from counterfact_mend/counterfact-edit.json, none of counterfact.json's case
ids, the context templates and C of the session defaults) with residuals drawn isotropic Gaussian: the only part
that needs target optimisation (~8 s per edit per core) is replaced, and both the fit error and the reach are
invariant to the residuals' scale. Per size n and seed: n records drawn from the pool, split among P parties.

  fit error  e_j = ‖ΔW k_j − r_j‖ / ‖r_j‖        (0: the edit lands exactly; 1: nothing of it lands)
  reach      z_j = ⟨ΔW k_j, r_j⟩ / ‖r_j‖²        (the one-layer analogue of the merge rows' z_reach; 1 is exact)

``--shared K``: every fact is held by K parties (dedupe off: each holder sends it), the case where TA overshoots.
Keys are cached (resumable); the report gives mean and a 95 % interval over seeds (t-distribution).

    python benchmarks/ta_regime.py --out benchmarks/results/ta_regime.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from secure_collab.cache import cache_dir, digest_json  # noqa: E402
from secure_collab.covariance import layer_covariances  # noqa: E402
from secure_collab.data.formats import load_requests  # noqa: E402
from secure_collab.editing.hparams import default_hparams  # noqa: E402
from secure_collab.editing.keys import compute_keys  # noqa: E402
from secure_collab.editing.solve import solve_update  # noqa: E402
from secure_collab.editing.templates import context_templates  # noqa: E402
from secure_collab.models import load_model  # noqa: E402
from secure_collab.models.specs import down_weight, n_layers  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"


def pool_keys(args, say) -> tuple[torch.Tensor, torch.Tensor, list[str], int, int]:
    """(keys (N, d_k) float64, C (d_k, d_k), case ids, d_v, layer) of the record pool; keys cached by
    model, layer and records."""
    lm = load_model(args.model)
    hp = default_hparams(args.model, n_layers(lm.model, lm.spec))
    layer = args.layer if args.layer is not None else hp.layers[0]
    taken = {str(r.case_id) for r in load_requests(SHARED / "counterfact.json")}
    pool = [r for r in load_requests(args.requests, skip_invalid=True) if str(r.case_id) not in taken][:args.pool]
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed)
    key = digest_json({"model": lm.source_digest, "layer": layer, "cases": [r.case_id for r in pool],
                       "templates": templates})[:20]
    path = cache_dir(None) / "benchmarks" / f"ta-keys-{key}.npy"
    if path.is_file():
        keys = torch.from_numpy(np.load(path))
    else:
        say(f"keys of {len(pool)} records at layer {layer} ({len(templates)} templates; one forward per prompt)")
        parts, t0 = [], time.perf_counter()
        for s in range(0, len(pool), 50):
            parts.append(compute_keys(lm, pool[s:s + 50], layer, templates).double())
            say(f"  {s + len(parts[-1])}/{len(pool)} keys, {time.perf_counter() - t0:.0f} s")
        keys = torch.cat(parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, keys.numpy())
    cov = layer_covariances(lm, [layer], tokens=hp.mom2_tokens, max_seq_len=hp.mom2_max_len)[layer]
    d_v = down_weight(lm.model, lm.spec, layer).shape[0]
    return keys, cov.double(), [str(r.case_id) for r in pool], d_v, layer


def measure(keys: torch.Tensor, cov: torch.Tensor, lam: float, n: int, parties: int, shared: int,
            seed: int, d_v: int) -> dict[str, dict[str, float]]:
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(keys.shape[0], generator=g)[:n]
    k = keys[idx]  # (n, d_k)
    r = torch.randn(n, d_v, generator=g, dtype=torch.float64)  # (n, d_v)
    # who holds what: fact j at parties j, j+1, ... (shared copies), else parties cut in contiguous blocks
    holders = [[(j + c) % parties for c in range(shared)] if shared > 1 else [j * parties // n] for j in range(n)]
    rows = {p: [j for j in range(n) if p in holders[j]] for p in range(parties)}
    K, R = k.T, r.T  # (d_k, n), (d_v, n)
    all_rows = [j for p in range(parties) for j in rows[p]]  # every sent copy (dedupe off)
    collab = solve_update(R[:, all_rows] @ K[:, all_rows].T, K[:, all_rows] @ K[:, all_rows].T, cov, lam)
    ta = sum(solve_update(R[:, rs] @ K[:, rs].T, K[:, rs] @ K[:, rs].T, cov, lam) for rs in rows.values() if rs)
    out = {}
    for name, dw in (("collab", collab), ("ta", ta), ("sa", ta / parties)):
        got = (dw @ K).T  # (n, d_v)
        fit = ((got - r).norm(dim=1) / r.norm(dim=1)).mean()
        reach = ((got * r).sum(1) / r.pow(2).sum(1)).mean()
        out[name] = {"fit_error": float(fit), "reach": float(reach)}
    return out


def interval(xs: list[float]) -> tuple[float, float, float]:
    m = float(np.mean(xs))
    if len(xs) < 2:
        return m, m, m
    t = {2: 12.71, 3: 4.30, 4: 3.18, 5: 2.78, 6: 2.57, 8: 2.36, 10: 2.26}.get(len(xs), 2.0)
    h = t * float(np.std(xs, ddof=1)) / math.sqrt(len(xs))
    return m, m - h, m + h


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--requests", default=str(SHARED / "counterfact_mend" / "counterfact-edit.json"))
    p.add_argument("--pool", type=int, default=800, help="records whose keys are computed (default: 800)")
    p.add_argument("--layer", type=int, default=None, help="edited layer (default: the model's first)")
    p.add_argument("--lam", type=float, default=None, help="λ (default: the model's)")
    p.add_argument("--sizes", default="30,60,100,150,300,500,800")
    p.add_argument("--parties", type=int, default=10)
    p.add_argument("--shared", default="1,3", help="holders per fact, comma list (default: 1,3)")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ta_regime.json"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    def say(msg: str) -> None:
        print(f"ta_regime: {msg}", file=sys.stderr, flush=True)

    keys, cov, cases, d_v, layer = pool_keys(args, say)
    lam = args.lam if args.lam is not None else default_hparams(args.model, 30).mom2_update_weight
    rows = []
    for shared in [int(x) for x in args.shared.split(",")]:
        for n in [int(x) for x in args.sizes.split(",") if int(x) <= keys.shape[0]]:
            runs = [measure(keys, cov, lam, n, args.parties, shared, seed, d_v) for seed in range(args.seeds)]
            row = {"edits": n, "shared": shared, "parties": args.parties, "lambda": lam, "seeds": args.seeds}
            for method in ("collab", "ta", "sa"):
                for metric in ("fit_error", "reach"):
                    m, lo, hi = interval([r[method][metric] for r in runs])
                    row[f"{method}_{metric}"] = [round(m, 4), round(lo, 4), round(hi, 4)]
            rows.append(row)
            say(f"shared {shared}, {n} edits: fit error collab {row['collab_fit_error'][0]:.3f} ta "
                f"{row['ta_fit_error'][0]:.3f}; reach collab {row['collab_reach'][0]:.3f} ta {row['ta_reach'][0]:.3f}")
    doc = {"model": args.model, "layer": layer, "pool": len(cases), "requests": args.requests, "rows": rows}
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    say(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
