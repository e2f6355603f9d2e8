"""Candidate subjects for ranking attacks, and their keys under the public model and templates (cached).

Candidates = the request file's subjects + at least 2,000 public distractors: Wikipedia titles of the covariance
corpus (its JSON is read, the wiki skill is never imported and none of its text is written into the
repository), country names from ``countryinfo``, and subjects of other public edit records (../shared/data).
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from secure_collab.cache import cache_dir, digest_json
from secure_collab.data.corpus import public_titles as wikipedia_titles
from secure_collab.data.requests import Request
from secure_collab.editing.keys import subject_keys
from secure_collab.files import temp_beside

MIN_DISTRACTORS = 2000


def country_names() -> list[str]:
    from secure_collab.data.bundled import country_facts

    return sorted({f.subject for f in country_facts(min_population=0)})


def record_subjects(paths: Iterable[Path]) -> list[str]:
    from secure_collab.data.formats import load_requests

    out: list[str] = []
    for p in paths:
        if p.is_file():
            out.extend(r.subject for r in load_requests(p, skip_invalid=True))
    return out


def _clean(names: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for n in names:
        n = " ".join(n.split())
        if 1 < len(n) <= 80 and "{" not in n and "}" not in n:
            seen.setdefault(n, None)
    return list(seen)


def candidate_subjects(requests: Sequence[Request], n_wiki: int = 2000, other_records: Iterable[Path] = (),
                       n_other: int = 1000, seed: int = 0) -> list[str]:
    """Request subjects first, then distractors (seeded sample), duplicates removed."""
    rng = random.Random(seed)
    wiki = wikipedia_titles()
    rng.shuffle(wiki)
    others = _clean(record_subjects(list(other_records)))
    rng.shuffle(others)
    names = _clean([r.subject for r in requests] + wiki[:n_wiki] + country_names() + others[:n_other])
    n_req = len(_clean(r.subject for r in requests))
    if len(names) - n_req < MIN_DISTRACTORS:
        raise ValueError(f"only {len(names) - n_req} distractor subjects; at least {MIN_DISTRACTORS} are needed")
    return names


def read_candidates(path: str | os.PathLike[str]) -> list[str]:
    """A candidates file: one subject per line (blank lines and '#' comments skipped)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return _clean(x for x in lines if x.strip() and not x.lstrip().startswith("#"))


def candidate_keys(setup, subjects: Sequence[str], layer: int, say=print, chunk: int = 256) -> torch.Tensor:
    """(N, d_k) float64 keys of each subject under the public templates (prompt "{}": the relation is unknown).

    For prompts that open with the subject (most CounterFact relations) this is exactly the edit's key: a
    causal model's state at the subject's last token does not depend on what follows it. Cached per chunk.
    """
    lm = setup.lm
    key = digest_json({"model": lm.source_digest, "layer": layer, "templates": setup.templates,
                       "dtype": str(next(lm.model.parameters()).dtype)})[:16]
    root = cache_dir(setup.cache) / "attacks" / "candidate-keys" / key
    root.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import load_file, save_file

    out = []
    for s in range(0, len(subjects), chunk):
        part = list(subjects[s:s + chunk])
        path = root / f"{digest_json(part)[:24]}.safetensors"
        if path.is_file():
            out.append(load_file(str(path))["keys"])
            continue
        k = subject_keys(lm, part, layer, setup.templates, setup.hp.request_batch and 8)
        tmp = temp_beside(path)
        save_file({"keys": k.contiguous()}, str(tmp))
        os.replace(tmp, path)
        out.append(k)
        say(f"candidate keys: {min(s + chunk, len(subjects))}/{len(subjects)}")
    return torch.cat(out)


def public_templates(requests: Sequence[Request], report: Sequence[Request]) -> list[str]:
    """Every distinct prompt of the records outside the report set: CounterFact's public relation templates as the
    `templates` attacker knows them. Ordered round-robin over relations (each relation's most used prompt first), so
    that any prefix is a balanced sample of the relations."""
    inside = {str(r.case_id) for r in report}
    by_rel: dict[str, dict[str, int]] = {}
    for r in requests:
        if str(r.case_id) not in inside:
            counts = by_rel.setdefault(r.relation or "", {})
            counts[r.prompt] = counts.get(r.prompt, 0) + 1
    queues = [[p for p, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))] for _, c in sorted(by_rel.items())]
    out: dict[str, None] = {}
    for i in range(max((len(q) for q in queues), default=0)):
        for q in queues:
            if i < len(q):
                out.setdefault(q[i], None)
    return list(out)


def relation_templates(requests: Sequence[Request], report: Sequence[Request]) -> list[str]:
    """One prompt per relation: each relation's most used prompt among the records outside the report set (the
    first round of ``public_templates``), e.g. CounterFact's 34 relation templates from counterfact.json."""
    relations = {r.relation or "" for r in requests if str(r.case_id) not in {str(x.case_id) for x in report}}
    return public_templates(requests, report)[:len(relations)]
