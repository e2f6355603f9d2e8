"""The MALMEN leakage measurement over independent sessions: subjects and objects from each view, as a library.

A session: ``parties`` parties × ``per_party`` edits, the edits of session s being records [s·m, (s+1)·m) of the
report set (sessions share no edit); the views come from ``attacks.malmen.malmen_views`` (the engine's rows,
statistics and solve, with the trained public hypernetwork).

What the attacker holds (stated exactly): the public model and hypernetwork (so the edited layers and every ridge
e^{λ_l}), the view (below), the number of edits, a public candidate list of subjects, and public candidate objects
(every ``target_new``/``target_true`` string of ../shared/data/counterfact.json, by first token). Not the other
parties' requests, rows or value differences. Subject attacks (a ranking of the candidates, each candidate's key is
u at the last token of a prompt with it filled in, on the unedited model):

- prompt knowledge `exact` (an upper bound, as ``defence_sweep.relation_prompts``): each candidate's own edit prompt
  (a report-set subject, edited in this session or not, has its record's prompt; any other candidate one of the
  session's edit prompts, drawn by a seeded generator);
- prompt knowledge `templates`: only CounterFact's public relation templates (every distinct prompt of the
  counterfact.json records outside the report set); every candidate is scored under every template and keeps its
  best: ``span@L``/``norm@L`` the best template's score at layer L, ``span-all``/``norm-all`` the per-layer bests
  standardised and averaged, ``span-all-tz``/``norm-all-tz`` the best over templates of the per-template standardised
  layer average.

``span@L``: ‖Qᵀu_c‖/‖u_c‖, Q a basis of span(U) at layer L from the view; ``span-all``: standardised average over the
edited layers; ``norm@L``/``norm-all`` (delta only): ‖ΔW u_c‖/‖u_c‖. Views: `keys`/`gram` (one party's U / UᵀU: that
party's 3 subjects, every party of the session in turn; `gram` measured for party 0, its range is U's row space),
`aggregate` (ΣUᵀU) and `delta` (ΔW) for all m edits.

Object attacks, the subject and its exact prompt given (the subject attacks find it first: conditional figures):
``target`` (delta): ΔW applied to the public model, candidates ranked by next-token probability after the prompt,
beside the unpatched model; ``lens-delta`` (delta): ⟨w̃_t, ΔW_L u⟩ at the last edited layer L, w̃_t the unembedding
row through the final norm's weight; ``d-aggregate`` (aggregate/stats): d̂ = ΣB ΣG⁺ u at L (exactly the edit's
value difference when the rows are independent) read the same way; ``keys-multitoken`` (keys/gram, edits whose object
has ≥ 2 tokens): the candidate objects' first tokens appended to the prompt, ranked by the span score of the key at
that answer position. Without the subject or any prompt: ``span-aggregate`` / ``span-delta``: the candidate first
tokens ranked by the share of w̃_t in span{d_i} at L (ΣB's left singular vectors, or ΔW's: ΔW = DᵀU(ΣG + cI)⁻¹ has
the same column space), recall of the session's m_obj distinct true first tokens at m_obj and 5·m_obj.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from attacks import malmen as mm
from attacks import metrics, subspace
from secure_collab.data.requests import Request
from secure_collab.editing.malmen.net import Hypernet
from secure_collab.models.loading import LoadedModel


def held_out_records(requests: Sequence[Request], exclude_ids: set[str]) -> list[Request]:
    """The requests whose case_id is in none of the excluded files (the report set), in file order."""
    return [r for r in requests if r.case_id is not None and str(r.case_id) not in exclude_ids]


def object_strings(requests: Sequence[Request]) -> list[str]:
    out: dict[str, None] = {}
    for r in requests:
        for o in (r.target_new, r.target_true):
            if o:
                out.setdefault(o, None)
    return list(out)


@dataclass
class MalmenMeasure:
    lm: LoadedModel
    hypernet: Hypernet
    report: list[Request]  # the report set: session s edits records [s·m, (s+1)·m)
    candidates: list[str]  # report subjects first, then distractors
    templates: list[str]
    objects: list[str]  # candidate object strings
    parties: int = 10
    per_party: int = 3
    seed: int = 0
    batch: int = 64
    key_cache: Path | None = None  # where the `templates` keys are cached (float32 safetensors per template)
    say: Callable[[str], None] = print
    _report_keys: dict[int, torch.Tensor] = field(default_factory=dict)
    _index: dict[str, int] = field(default_factory=dict)

    @property
    def m(self) -> int:
        return self.parties * self.per_party

    @property
    def layers(self) -> tuple[int, ...]:
        return self.hypernet.hp.layers

    def index(self, subject: str) -> int:
        if not self._index:
            self._index.update({c: i for i, c in enumerate(self.candidates)})
        return self._index[" ".join(subject.split())]

    def session(self, s: int) -> list[list[Request]]:
        reqs = self.report[s * self.m:(s + 1) * self.m]
        if len(reqs) < self.m:
            raise ValueError(f"session {s} needs report records up to {(s + 1) * self.m}; there are {len(self.report)}")
        return [reqs[k * self.per_party:(k + 1) * self.per_party] for k in range(self.parties)]

    # ------------------------------------------------------------------------------------------ candidate keys

    def keys_of_texts(self, texts: Sequence[str]) -> dict[int, torch.Tensor]:
        return mm.sequence_keys(self.lm, mm.prompt_ids(self.lm.tokenizer, texts), self.layers, self.batch)

    def exact_prompts(self, s: int, flat: Sequence[Request]) -> list[str]:
        """Each candidate's prompt under `exact` knowledge (see the module docstring)."""
        known = {" ".join(r.subject.split()): r.prompt for r in self.report}
        choices = sorted({r.prompt for r in flat})
        rng = random.Random(f"{self.seed}/{s}/exact-prompts")
        return [known[c] if c in known else rng.choice(choices) for c in self.candidates]

    def exact_keys(self, s: int, flat: Sequence[Request]) -> dict[int, torch.Tensor]:
        prompts = self.exact_prompts(s, flat)
        n_rep = len({" ".join(r.subject.split()) for r in self.report})
        if not self._report_keys:  # report subjects always carry their own prompt: computed once
            self._report_keys = self.keys_of_texts([p.format(c) for p, c in zip(prompts[:n_rep],
                                                                               self.candidates[:n_rep], strict=True)])
        rest = self.keys_of_texts([p.format(c) for p, c in zip(prompts[n_rep:], self.candidates[n_rep:], strict=True)])
        return {la: torch.cat([self._report_keys[la], rest[la]]) for la in self.layers}

    def template_keys(self, template: str) -> dict[int, torch.Tensor]:
        """Every candidate's keys under one template, cached on disk when ``key_cache`` is set."""
        texts = [template.format(c) for c in self.candidates]
        if self.key_cache is None:
            return self.keys_of_texts(texts)
        from safetensors.torch import load_file, save_file

        from secure_collab.cache import digest_json
        from secure_collab.files import temp_beside

        root = self.key_cache / digest_json({"model": self.lm.source_digest, "layers": list(self.layers),
                                             "dtype": str(next(self.lm.model.parameters()).dtype)})[:16]
        root.mkdir(parents=True, exist_ok=True)
        path = root / f"{digest_json(texts)[:24]}.safetensors"
        if path.is_file():
            got = load_file(str(path))
            return {la: got[str(la)].double() for la in self.layers}
        keys = self.keys_of_texts(texts)
        tmp = temp_beside(path)
        save_file({str(la): k.float().contiguous() for la, k in keys.items()}, str(tmp))
        os.replace(tmp, path)
        return keys


def _hits(scores: torch.Tensor, targets: list[int], m: int) -> dict[str, Any]:
    ranks = subspace.ranks_of(scores, targets)
    return {"recall_m": sum(r < m for r in ranks) / len(ranks), "recall_5m": sum(r < 5 * m for r in ranks) / len(ranks),
            "m": m, "ranks": ranks}


def _attack_set(bases: dict[int, torch.Tensor], keys: dict[int, torch.Tensor], targets: list[int], m: int,
                delta: dict[int, torch.Tensor] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sc = mm.span_scores(bases, keys)
    for la, v in sc.items():
        out[f"span@{la}"] = _hits(v, targets, m)
    out["span-all"] = _hits(mm.combine_layers(sc), targets, m)
    if delta is not None:
        nc = mm.norm_scores(delta, keys)
        for la, v in nc.items():
            out[f"norm@{la}"] = _hits(v, targets, m)
        out["norm-all"] = _hits(mm.combine_layers(nc), targets, m)
    return out


@dataclass
class SessionCore:
    """What the attacks need of one session's views, without the (d_k, d_k) matrices of every party."""

    parties: list[list[Request]]
    bases: dict[str, Any]  # keys: [per party {layer: Q}], gram: {layer: Q} (party 0), aggregate, delta: {layer: Q}
    delta: dict[int, torch.Tensor]
    rows: list[int]  # answer-position rows per party

    @property
    def flat(self) -> list[Request]:
        return [r for p in self.parties for r in p]


def session_core(me: MalmenMeasure, s: int, out: dict[str, Any]) -> SessionCore:
    """The session's views, its object attacks (written into ``out``), and the bases the subject attacks use."""
    from attacks.target import next_token_logprobs, object_first_tokens, rank_objects
    from secure_collab.editing.memit import restore, snapshot
    from secure_collab.models.specs import add_to_down_weight

    lm = me.lm
    parties = me.session(s)
    flat = [r for p in parties for r in p]
    views = mm.malmen_views(lm, me.hypernet, parties)
    last = me.layers[-1]
    bases: dict[str, Any] = {"keys": [mm.span_of(views, "keys", p) for p in range(len(parties))],
                             "gram": mm.span_of(views, "gram", 0), "aggregate": mm.span_of(views, "aggregate"),
                             "delta": mm.span_of(views, "delta")}
    out["rows"] = [r.n_rows for r in views.rows]
    out["span_rank"] = {str(la): int(q.shape[1]) for la, q in bases["delta"].items()}
    out["gram_vs_keys_max_angle_sin"] = max(
        float(torch.linalg.matrix_norm(bases["gram"][la] - bases["keys"][0][la] @ (bases["keys"][0][la].T
                                                                                    @ bases["gram"][la]), ord=2))
        for la in me.layers)

    # objects, the subject and its exact prompt given
    tok = lm.tokenizer
    firsts = object_first_tokens(tok, list(me.objects) + [r.target_new for r in flat])
    cand_ids = sorted(firsts)
    truth = [mm.answer_ids(tok, r.target_new)[0] for r in flat]
    texts = [r.text for r in flat]
    own = me.keys_of_texts(texts)  # u at each edit's first answer position, public model
    saved = snapshot(lm, me.layers)
    try:
        for la, d in views.delta.items():
            add_to_down_weight(lm.model, lm.spec, la, d)
        lp = next_token_logprobs(lm, texts, batch=me.batch)
    finally:
        restore(lm, saved)
    lp0 = next_token_logprobs(lm, texts, batch=me.batch)
    unembed = mm.unembed_directions(lm)
    d_hat = mm.recovered_diffs(views.aggregate[last], own[last])  # (m, d_v)
    lens = own[last] @ views.delta[last].T  # ΔW_L u (m, d_v)
    objects: dict[str, Any] = {
        "target": [rank_objects(lp[j], firsts, r.target_new, tok) for j, r in enumerate(flat)],
        "target_unpatched": [rank_objects(lp0[j], firsts, r.target_new, tok) for j, r in enumerate(flat)],
        "lens-delta": [mm.token_rank(mm.direction_token_scores(unembed, lens[j]), cand_ids, truth[j])
                       for j in range(len(flat))],
        "d-aggregate": [mm.token_rank(mm.direction_token_scores(unembed, d_hat[j]), cand_ids, truth[j])
                        for j in range(len(flat))],
    }
    # the same read-offs with the sign a trained network gives d (−η_l uᵀũ can be negative at the last layer),
    # calibrated as an attacking party can: on its own edits (party 0's, whose objects it knows)
    own_edits = range(len(parties[0]))
    for name, vecs in (("lens-delta", lens), ("d-aggregate", d_hat)):
        raw = [mm.direction_token_scores(unembed, vecs[j]) for j in range(len(flat))]
        ids = torch.tensor(cand_ids, dtype=torch.long)
        lean = sum(float(raw[j][truth[j]] - raw[j][ids].mean()) for j in own_edits)
        sign = 1.0 if lean >= 0 else -1.0
        objects[f"{name}-signed"] = [mm.token_rank(sign * raw[j], cand_ids, truth[j]) for j in range(len(flat))]
        objects[f"{name}-sign"] = sign
    # without the subject: the candidate first tokens against span{d_i} at the last layer
    span_scores = mm.span_token_scores(unembed, mm.value_basis(views.aggregate[last]))
    true_firsts = sorted(set(truth))
    for name, sc in (("span-aggregate", span_scores),
                     ("span-delta", mm.span_token_scores(unembed, mm.column_basis(views.delta[last])))):
        ranks = [mm.token_rank(sc, cand_ids, t) for t in true_firsts]
        objects[name] = {"m_obj": len(true_firsts), "n_candidates": len(cand_ids), "ranks": ranks,
                         "recall_m": sum(r < len(true_firsts) for r in ranks) / len(ranks),
                         "recall_5m": sum(r < 5 * len(true_firsts) for r in ranks) / len(ranks)}
    objects["n_candidates"] = len(cand_ids)
    objects["keys-multitoken"] = multitoken_objects(me, views, parties)
    out["objects"] = objects
    return SessionCore(parties, bases, views.delta, out["rows"])


def multitoken_objects(me: MalmenMeasure, views: mm.MalmenViews, parties: list[list[Request]]) -> list[dict]:
    """For each edit whose new object has ≥ 2 tokens: rank of its first token among the multi-token candidate
    objects' first tokens, each appended to the edit's prompt and scored by its key's share in the party's span."""
    tok = me.lm.tokenizer
    multi: dict[int, str] = {}
    for o in me.objects + [r.target_new for p in parties for r in p]:
        ids = mm.answer_ids(tok, o)
        if len(ids) >= 2:
            multi.setdefault(ids[0], o)
    cand = sorted(multi)
    out = []
    for p, reqs in enumerate(parties):
        bases = mm.span_of(views, "keys", p)
        for r in reqs:
            ids = mm.answer_ids(tok, r.target_new)
            if len(ids) < 2:
                continue
            prompt = mm.prompt_ids(tok, [r.text])[0]
            keys = mm.sequence_keys(me.lm, [prompt + [t] for t in cand], me.layers, me.batch)
            sc = mm.span_scores(bases, keys)
            combined = mm.combine_layers(sc)
            j = cand.index(ids[0])
            out.append({"case_id": r.case_id, "tokens": len(ids), "n_candidates": len(cand),
                        "rank_all": int((combined > combined[j]).sum()),
                        "rank_last": int((sc[me.layers[-1]] > sc[me.layers[-1]][j]).sum())})
    return out


def subject_attacks_exact(me: MalmenMeasure, s: int, core: SessionCore) -> dict[str, Any]:
    keys = me.exact_keys(s, core.flat)
    out: dict[str, Any] = {}
    per_party = []
    for p, reqs in enumerate(core.parties):
        per_party.append(_attack_set(core.bases["keys"][p], keys, [me.index(r.subject) for r in reqs], len(reqs)))
    out["keys"] = per_party
    out["gram"] = [_attack_set(core.bases["gram"], keys, [me.index(r.subject) for r in core.parties[0]],
                               len(core.parties[0]))]
    targets = [me.index(r.subject) for r in core.flat]
    out["aggregate"] = _attack_set(core.bases["aggregate"], keys, targets, len(targets))
    out["delta"] = _attack_set(core.bases["delta"], keys, targets, len(targets), core.delta)
    return out


class TemplateScores:
    """Running best-template scores of every candidate, per (view, party, attack, layer): fed one template at a
    time, so the keys of all templates never sit in memory together."""

    def __init__(self) -> None:
        self.best: dict[tuple, torch.Tensor] = {}  # (view, party, kind, layer) -> max over templates (N,)
        self.best_tz: dict[tuple, torch.Tensor] = {}  # (view, party, kind) -> max of the per-template z average
        self.n = 0

    def add(self, core: SessionCore, keys: dict[int, torch.Tensor]) -> None:
        sets: list[tuple[str, int, str, dict[int, torch.Tensor]]] = []
        for p, b in enumerate(core.bases["keys"]):
            sets.append(("keys", p, "span", mm.span_scores(b, keys)))
        sets.append(("gram", 0, "span", mm.span_scores(core.bases["gram"], keys)))
        sets.append(("aggregate", -1, "span", mm.span_scores(core.bases["aggregate"], keys)))
        sets.append(("delta", -1, "span", mm.span_scores(core.bases["delta"], keys)))
        sets.append(("delta", -1, "norm", mm.norm_scores(core.delta, keys, core.bases["delta"])))
        for view, p, kind, sc in sets:
            for la, v in sc.items():
                k = (view, p, kind, la)
                self.best[k] = v if k not in self.best else torch.maximum(self.best[k], v)
            z = mm.combine_layers(sc)
            k2 = (view, p, kind)
            self.best_tz[k2] = z if k2 not in self.best_tz else torch.maximum(self.best_tz[k2], z)
        self.n += 1

    def results(self, me: MalmenMeasure, core: SessionCore) -> dict[str, Any]:
        def one(view: str, p: int, targets: list[int], m: int) -> dict[str, Any]:
            res: dict[str, Any] = {}
            for kind in ("span", "norm"):
                per = {la: self.best[(view, p, kind, la)] for la in me.layers if (view, p, kind, la) in self.best}
                if not per:
                    continue
                for la, v in per.items():
                    res[f"{kind}@{la}"] = _hits(v, targets, m)
                res[f"{kind}-all"] = _hits(mm.combine_layers(per), targets, m)
                res[f"{kind}-all-tz"] = _hits(self.best_tz[(view, p, kind)], targets, m)
            return res

        flat = [me.index(r.subject) for r in core.flat]
        return {"templates": self.n,
                "keys": [one("keys", p, [me.index(r.subject) for r in reqs], len(reqs))
                         for p, reqs in enumerate(core.parties)],
                "gram": [one("gram", 0, [me.index(r.subject) for r in core.parties[0]], len(core.parties[0]))],
                "aggregate": one("aggregate", -1, flat, len(flat)),
                "delta": one("delta", -1, flat, len(flat))}


# ------------------------------------------------------------------------------------------------ summary

def _session_value(res: Any, key: str) -> float:
    """A session's figure for one attack: itself, or the mean over parties for the per-party views."""
    if isinstance(res, list):
        return sum(r[key] for r in res) / len(res)
    return float(res[key])


def summarise(sessions: list[dict[str, Any]], n_candidates: int, m: int, per_party: int) -> list[dict[str, Any]]:
    """Rows per (knowledge, view, attack) and per object attack: means over sessions, 95 % bootstrap intervals over
    sessions (each session an independent draw of m edits)."""
    rows: list[dict[str, Any]] = []
    for know in ("exact", "templates"):
        runs = [s["subjects"][know] for s in sessions if s.get("subjects", {}).get(know)]
        if not runs:
            continue
        for view in ("keys", "gram", "aggregate", "delta"):
            mv = per_party if view in ("keys", "gram") else m
            first = runs[0][view][0] if isinstance(runs[0][view], list) else runs[0][view]
            for attack in first:
                if not isinstance(first[attack], dict):
                    continue
                a = metrics.bootstrap_ci([_session_value([x[attack] for x in r[view]] if isinstance(r[view], list)
                                                         else r[view][attack], "recall_m") for r in runs])
                b = metrics.bootstrap_ci([_session_value([x[attack] for x in r[view]] if isinstance(r[view], list)
                                                         else r[view][attack], "recall_5m") for r in runs])
                rows.append({"kind": "subject", "knowledge": know, "view": view, "attack": attack, "m": mv,
                             "sessions": len(runs), "recall_m": a[0], "recall_m_ci": [a[1], a[2]],
                             "recall_5m": b[0], "recall_5m_ci": [b[1], b[2]], "chance_m": mv / n_candidates,
                             "chance_5m": min(1.0, 5 * mv / n_candidates)})
    obj = [s["objects"] for s in sessions if "objects" in s]
    for attack in ("target", "target_unpatched", "lens-delta", "d-aggregate", "lens-delta-signed",
                   "d-aggregate-signed"):
        if any(attack not in o for o in obj):  # sessions measured before the signed read-offs existed
            continue
        t1 = metrics.bootstrap_ci([sum(x == 0 for x in o[attack]) / len(o[attack]) for o in obj])
        t5 = metrics.bootstrap_ci([sum(x < 5 for x in o[attack]) / len(o[attack]) for o in obj])
        rows.append({"kind": "object", "attack": attack, "sessions": len(obj),
                     "edits": sum(len(o[attack]) for o in obj),
                     "top1": t1[0], "top1_ci": [t1[1], t1[2]], "top5": t5[0], "top5_ci": [t5[1], t5[2]],
                     "n_candidates": obj[0]["n_candidates"] if obj else None})
    for name in ("span-aggregate", "span-delta"):
        sa = [o[name] for o in obj if name in o]
        if not sa:
            continue
        a = metrics.bootstrap_ci([x["recall_m"] for x in sa])
        b = metrics.bootstrap_ci([x["recall_5m"] for x in sa])
        rows.append({"kind": "object", "attack": name, "sessions": len(sa),
                     "m_obj": sum(x["m_obj"] for x in sa) / len(sa), "recall_m": a[0], "recall_m_ci": [a[1], a[2]],
                     "recall_5m": b[0], "recall_5m_ci": [b[1], b[2]], "n_candidates": sa[0]["n_candidates"]})
    if obj:
        mt = [x for o in obj for x in o["keys-multitoken"]]
        if mt:
            for which in ("rank_all", "rank_last"):
                h1 = sum(x[which] == 0 for x in mt)
                h5 = sum(x[which] < 5 for x in mt)
                rows.append({"kind": "object", "attack": f"keys-multitoken ({which[5:]})", "sessions": len(obj),
                             "edits": len(mt), "top1": h1 / len(mt), "top1_ci": list(metrics.wilson_ci(h1, len(mt))),
                             "top5": h5 / len(mt), "top5_ci": list(metrics.wilson_ci(h5, len(mt))),
                             "n_candidates": mt[0]["n_candidates"]})
    return rows


def load_sessions(out: Path) -> dict[int, dict[str, Any]]:
    done = {}
    for p in sorted(out.glob("session-*.json")):
        r = json.loads(p.read_text())
        done[int(r["session"])] = r
    return done


def template_split(sessions: list[dict[str, Any]], report: Sequence[Request], templates: Sequence[str],
                   view: str = "delta", attack: str = "span-all") -> dict[str, Any]:
    """Recall@m of one `templates` attack over all sessions' edits, split by whether the edit's own prompt is one of
    the public templates (then the attacker computes its exact key) or not; pooled over sessions, Wilson intervals."""
    prompt = {str(r.case_id): r.prompt for r in report}
    known = set(templates)
    groups: dict[str, list[bool]] = {"prompt among the templates": [], "prompt not among them": []}
    for s in sessions:
        res = (s.get("subjects") or {}).get("templates")
        if not res:
            continue
        hits = res[view][attack]
        m = hits["m"]
        for cid, rank in zip(s["case_ids"], hits["ranks"], strict=True):
            key = "prompt among the templates" if prompt[str(cid)] in known else "prompt not among them"
            groups[key].append(rank < m)
    out = {}
    for k, v in groups.items():
        lo, hi = metrics.wilson_ci(sum(v), len(v)) if v else (float("nan"), float("nan"))
        out[k] = {"edits": len(v), "recall_m": sum(v) / len(v) if v else float("nan"), "recall_m_ci": [lo, hi]}
    return out
