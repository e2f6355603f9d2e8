"""Why MALMEN's edits reach CounterFact's neighbourhood prompts: how close a neighbour's key is to the edit's own.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/malmen_key_overlap.py --records 40 \
        --json benchmarks/results/malmen_key_overlap.json

For held-out CounterFact records (case_id in neither counterfact-train nor counterfact-val, from record 40 on),
the cosine between the edit prompt's key and each neighbourhood prompt's key (same relation, another subject), and
between the edit prompt's key and the keys of the *other* records' edit prompts (other relations), for
- MALMEN: u at the prompt's last token at each edited layer (24-29), where MALMEN reads its keys;
- MEMIT: k at the subject's last token at the first edited layer (3), averaged over the context templates.
A key close to the edit's own gets the edit's value difference almost whole (ΔW u ≈ ΔW u_edit), which is what
specificity measures.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch


def main() -> None:
    from secure_collab.data.formats import load_requests
    from secure_collab.data.requests import Request
    from secure_collab.editing.hparams import default_hparams
    from secure_collab.editing.keys import compute_keys
    from secure_collab.editing.malmen.hparams import default_malmen_hparams
    from secure_collab.editing.malmen.rows import edit_rows
    from secure_collab.editing.templates import context_templates
    from secure_collab.models import load_model
    from secure_collab.models.specs import n_layers

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=40, help="held-out records measured (default: 40)")
    ap.add_argument("--json", default=None, help="write the figures here (default: print only)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    data = Path("../shared/data")
    seen = {r.case_id for f in ("counterfact-train", "counterfact-val")
            for r in load_requests(data / "counterfact_mend" / f"{f}.json", skip_invalid=True)}
    reqs = [r for r in load_requests(data / "counterfact.json")[40:] if r.case_id not in seen][:args.records]
    lm = load_model("smollm2-135m")
    mh = default_malmen_hparams("smollm2-135m", n_layers(lm.model, lm.spec))
    hp = default_hparams("smollm2-135m", n_layers(lm.model, lm.spec))
    templates = context_templates(lm, hp.n_templates, hp.template_length, hp.template_seed, None)

    def cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)

    out: dict = {"records": len(reqs), "malmen": {}, "memit": {}}
    # MALMEN: the key at the prompt's last token (the first answer position) of the edit and of each neighbour
    edits = edit_rows(lm, reqs, mh.layers, 8)
    first = [int((edits.edit == i).nonzero()[0]) for i in range(len(reqs))]
    neigh = [Request(subject=p, prompt="{}", target_new=r.target_new) for r in reqs for p in r.neighborhood_prompts]
    owner = [i for i, r in enumerate(reqs) for _ in r.neighborhood_prompts]
    nrows = edit_rows(lm, neigh, mh.layers, 8)
    nfirst = [int((nrows.edit == j).nonzero()[0]) for j in range(len(neigh))]
    for la in mh.layers:
        u, v = edits.u[la][first], nrows.u[la][nfirst]
        same = cos(v, u[owner]).tolist()
        other = [float(cos(u[i], u[j])) for i in range(len(reqs)) for j in range(len(reqs)) if i < j]
        out["malmen"][la] = {"neighbour_cos_mean": statistics.mean(same),
                             "neighbour_cos_median": statistics.median(same),
                             "other_edit_cos_mean": statistics.mean(other)}
    # MEMIT: the subject's key at layer 3 (the template average), edit vs neighbour subjects are not given by
    # CounterFact's neighbourhood prompts as subjects, so compare with the other records' subjects
    k = compute_keys(lm, reqs, hp.layers[0], templates, 8)
    other = [float(cos(k[i], k[j])) for i in range(len(reqs)) for j in range(len(reqs)) if i < j]
    out["memit"][hp.layers[0]] = {"other_edit_cos_mean": statistics.mean(other)}
    text = json.dumps(out, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


if __name__ == "__main__":
    main()
