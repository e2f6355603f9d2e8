"""Parsers from edit-request files (CounterFact, EasyEdit/MEND CounterFact, zsRE MEND, MQuAKE, plain JSONL)
to ``list[Request]``, with format auto-detection.

Every malformed record raises ``RequestError`` naming the file, the record (index and case_id when there is
one) and the field. Target strings are kept as in the source, stripped of surrounding whitespace only: the
engine and the evaluation complete a prompt with ``" " + target``.

Formats (``FORMATS``):
- ``counterfact``: MEMIT/ROME (Multi-)CounterFact records, ``requested_rewrite{prompt, subject,
  target_new{str}, target_true{str}, relation_id}``, ``paraphrase_prompts``, ``neighborhood_prompts``,
  ``generation_prompts``.
  The non-upstream key ``neighborhood_targets`` (one true object per neighbourhood prompt, written by
  the bundled set) is read too.
- ``counterfact_mend``: EasyEdit/MEND reduced CounterFact, ``prompt`` (filled in), ``subject``,
  ``target_new``, ``ground_truth``, ``rephrase_prompt``, ``locality_prompt``, ``locality_ground_truth``.
- ``zsre``: MEND zsRE, ``subject``, ``src`` (a question), ``alt`` (new target), ``answers`` (true
  targets), ``rephrase``, ``loc``, ``loc_ans``. target_true = answers[0]. ``loc``/``loc_ans`` are an
  unrelated NQ question, not a neighbour of the subject, so they go to ``extra``, not to the neighbours.
- ``mquake``: MQuAKE records; each ``requested_rewrite`` entry becomes one request (case_id ``"<id>.<i>"``).
- ``jsonl``: one JSON object per line, ``{"subject", "prompt", "target_new"[, "target_true", "relation",
  "case_id", "paraphrase_prompts", "neighborhood_prompts", "neighborhood_targets", "generation_prompts"]}``;
  the prompt holds "{}".
  A ``.json`` file holding a list of such objects is read the same way.

Every format may carry a top-level ``"round"`` (an integer >= 0): the session round the request is for.

Filled-in prompts (MEND formats) are turned into templates by replacing the first exact occurrence of the
subject with "{}". Fallback when the subject does not occur verbatim: a unique case-insensitive occurrence is
accepted, and the subject becomes the prompt's spelling (the source's spelling is kept in
``extra["subject_source"]``). Otherwise the record is refused.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from secure_collab.data.requests import Request, RequestError

log = logging.getLogger(__name__)

FORMATS = ("counterfact", "counterfact_mend", "zsre", "mquake", "jsonl")


class _Record:
    """One source record with a ``where`` prefix for error messages and typed field access."""

    def __init__(self, raw: Any, path: str, index: int, line: int | None = None) -> None:
        self.path, self.index, self.line = path, index, line
        case = raw.get("case_id") if isinstance(raw, dict) else None
        self.case_id = None if case is None else str(case)
        self.where = f"{path}: record {index}" + (f" (line {line})" if line is not None else "") + (
            f" (case_id {self.case_id})" if self.case_id is not None else "")
        if not isinstance(raw, dict):
            raise RequestError(f"{self.where}: expected a JSON object, got {type(raw).__name__}")
        self.raw = raw

    def error(self, field: str, msg: str) -> RequestError:
        return RequestError(f"{self.where}: field {field!r} {msg}")

    def get(self, obj: dict, field: str, kind: type | tuple[type, ...], label: str | None = None,
            required: bool = True) -> Any:
        label = label or field
        if field not in obj or obj[field] is None:
            if required:
                raise self.error(label, "is missing")
            return None
        value = obj[field]
        if not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            raise self.error(label, f"must be {want}, got {type(value).__name__}")
        return value

    def text(self, obj: dict, field: str, label: str | None = None, required: bool = True) -> str | None:
        value = self.get(obj, field, str, label, required)
        if value is None:
            return None
        value = value.strip()
        if required and not value:
            raise self.error(label or field, "is empty")
        return value or None

    def need(self, obj: dict, field: str, label: str | None = None) -> str:
        """A required, non-empty string field."""
        value = self.text(obj, field, label)
        assert value is not None  # text() raises for a missing or empty required field
        return value

    def texts(self, obj: dict, field: str, label: str | None = None) -> tuple[str, ...]:
        value = self.get(obj, field, list, label, required=False) or []
        out = []
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise self.error(f"{label or field}[{i}]", f"must be str, got {type(v).__name__}")
            out.append(v.strip())
        return tuple(out)

    def build(self, **fields: Any) -> Request:
        try:
            default = self.case_id if self.case_id is not None else str(self.index)  # zsRE has no ids
            return Request(case_id=fields.pop("case_id", default), round=self.raw.get("round"), **fields)
        except RequestError as e:  # re-raise with the file and record index in front
            raise RequestError(f"{self.where}: {e}") from None


def template_from_filled(rec: _Record, filled: str, subject: str, field: str) -> tuple[str, str, dict]:
    """(template with "{}", subject as it appears, extra) from a prompt with the subject already in it."""
    if "{}" in filled:
        raise rec.error(field, "already contains '{}' but this format stores the filled-in prompt")
    at = filled.find(subject)
    if at >= 0:
        return filled[:at] + "{}" + filled[at + len(subject):], subject, {}
    low, sub = filled.casefold(), subject.casefold()
    hits = [i for i in range(len(low)) if low.startswith(sub, i)]
    if len(hits) == 1 and len(low) == len(filled):  # casefold kept the length: indices map back
        at = hits[0]
        spelled = filled[at:at + len(subject)]
        return filled[:at] + "{}" + filled[at + len(subject):], spelled, {"subject_source": subject}
    raise rec.error(field, f"does not contain the subject {subject!r}: {filled!r}")


def _parse_counterfact(rec: _Record) -> list[Request]:
    rw = rec.get(rec.raw, "requested_rewrite", dict)
    label = "requested_rewrite.{}".format
    new = rec.get(rw, "target_new", dict, label("target_new"))
    true = rec.get(rw, "target_true", dict, label("target_true"), required=False)
    extra = {}
    for side, obj in (("target_new", new), ("target_true", true)):
        if obj is not None and obj.get("id") is not None:
            extra[f"{side}_id"] = str(obj["id"])
    return [rec.build(
        subject=rec.text(rw, "subject", label("subject")),
        prompt=rec.get(rw, "prompt", str, label("prompt")).strip(),
        target_new=rec.text(new, "str", label("target_new.str")),
        target_true=None if true is None else rec.text(true, "str", label("target_true.str")),
        relation=rec.text(rw, "relation_id", label("relation_id"), required=False),
        paraphrase_prompts=rec.texts(rec.raw, "paraphrase_prompts"),
        neighborhood_prompts=rec.texts(rec.raw, "neighborhood_prompts"),
        neighborhood_targets=rec.texts(rec.raw, "neighborhood_targets"),
        generation_prompts=rec.texts(rec.raw, "generation_prompts"),
        extra=extra,
    )]


def _parse_counterfact_mend(rec: _Record) -> list[Request]:
    subject = rec.need(rec.raw, "subject")
    filled = rec.need(rec.raw, "prompt")
    prompt, subject, extra = template_from_filled(rec, filled, subject, "prompt")
    true = rec.text(rec.raw, "ground_truth", required=False)
    loc = rec.text(rec.raw, "locality_prompt", required=False)
    loc_true = rec.text(rec.raw, "locality_ground_truth", required=False)
    neighbours: tuple[str, ...] = ()
    neighbour_targets: tuple[str, ...] = ()
    if loc is not None:
        if loc_true is None:
            raise rec.error("locality_ground_truth", "is missing while 'locality_prompt' is given")
        neighbours = (loc,)
        neighbour_targets = () if loc_true == true else (loc_true,)
    rephrase = rec.text(rec.raw, "rephrase_prompt", required=False)
    return [rec.build(
        subject=subject, prompt=prompt, target_new=rec.text(rec.raw, "target_new"), target_true=true,
        paraphrase_prompts=(rephrase,) if rephrase else (), neighborhood_prompts=neighbours,
        neighborhood_targets=neighbour_targets, extra=extra,
    )]


def _parse_zsre(rec: _Record) -> list[Request]:
    subject = rec.need(rec.raw, "subject")
    prompt, subject, extra = template_from_filled(rec, rec.need(rec.raw, "src"), subject, "src")
    answers = rec.texts(rec.raw, "answers")
    rephrase = rec.text(rec.raw, "rephrase", required=False)
    for key in ("loc", "loc_ans"):
        value = rec.text(rec.raw, key, required=False)
        if value is not None:
            extra[key] = value
    return [rec.build(
        subject=subject, prompt=prompt, target_new=rec.text(rec.raw, "alt"),
        target_true=answers[0] if answers and answers[0] else None,
        paraphrase_prompts=(rephrase,) if rephrase else (), extra=extra,
    )]


def _parse_mquake(rec: _Record) -> list[Request]:
    rewrites = rec.get(rec.raw, "requested_rewrite", list)
    out = []
    for i, rw in enumerate(rewrites):
        label = f"requested_rewrite[{i}].{{}}".format
        if not isinstance(rw, dict):
            raise rec.error(f"requested_rewrite[{i}]", f"must be dict, got {type(rw).__name__}")
        new = rec.get(rw, "target_new", dict, label("target_new"))
        true = rec.get(rw, "target_true", dict, label("target_true"), required=False)
        out.append(rec.build(
            case_id=f"{rec.case_id}.{i}" if rec.case_id is not None else f"{rec.index}.{i}",
            subject=rec.text(rw, "subject", label("subject")),
            prompt=rec.get(rw, "prompt", str, label("prompt")).strip(),
            target_new=rec.text(new, "str", label("target_new.str")),
            target_true=None if true is None else rec.text(true, "str", label("target_true.str")),
            relation=rec.text(rw, "relation_id", label("relation_id"), required=False),
        ))
    return out


def _parse_plain(rec: _Record) -> list[Request]:
    return [rec.build(
        subject=rec.text(rec.raw, "subject"),
        prompt=rec.get(rec.raw, "prompt", str).strip(),
        target_new=rec.text(rec.raw, "target_new"),
        target_true=rec.text(rec.raw, "target_true", required=False),
        relation=rec.text(rec.raw, "relation", required=False),
        paraphrase_prompts=rec.texts(rec.raw, "paraphrase_prompts"),
        neighborhood_prompts=rec.texts(rec.raw, "neighborhood_prompts"),
        neighborhood_targets=rec.texts(rec.raw, "neighborhood_targets"),
        generation_prompts=rec.texts(rec.raw, "generation_prompts"),
    )]


_PARSERS: dict[str, Callable[[_Record], list[Request]]] = {
    "counterfact": _parse_counterfact,
    "counterfact_mend": _parse_counterfact_mend,
    "zsre": _parse_zsre,
    "mquake": _parse_mquake,
    "jsonl": _parse_plain,
}


def detect_record_format(raw: Any) -> str | None:
    """The format a single record looks like, or None."""
    if not isinstance(raw, dict):
        return None
    keys = set(raw)
    if "requested_rewrite" in keys:
        return "mquake" if isinstance(raw["requested_rewrite"], list) else "counterfact"
    if {"src", "alt"} <= keys:
        return "zsre"
    if {"ground_truth", "rephrase_prompt"} & keys and {"prompt", "subject", "target_new"} <= keys:
        return "counterfact_mend"
    if {"prompt", "subject", "target_new"} <= keys:
        return "jsonl"
    return None


def _read_records(path: Path) -> tuple[list[tuple[Any, int | None]], bool]:
    """[(record, line number or None)], and whether the file is JSON Lines."""
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if path.suffix != ".jsonl" and stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise RequestError(f"{path}: not valid JSON: {e}") from None
        return [(r, None) for r in data], False
    records: list[tuple[Any, int | None]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append((json.loads(line), n))
        except json.JSONDecodeError as e:
            raise RequestError(f"{path}: record {len(records)} (line {n}): bad JSON line: {e.msg}") from None
    return records, True


def load_requests(path: str | os.PathLike[str], fmt: str | None = None, limit: int | None = None,
                  skip_invalid: bool = False) -> list[Request]:
    """Read ``path`` as ``fmt`` (one of FORMATS; None: auto-detect from the first record) into requests.

    ``limit`` keeps the first ``limit`` source records (MQuAKE: records, each may give several requests).
    ``skip_invalid``: log and drop malformed records instead of raising (real files have a few: zsRE train
    records 429 and 576 have an empty ``alt``). A file that cannot be read as JSON always raises.
    """
    path = Path(path)
    if fmt is not None and fmt not in _PARSERS:
        raise ValueError(f"unknown request format {fmt!r}; known: {', '.join(FORMATS)}")
    records, _ = _read_records(path)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise RequestError(f"{path}: no records")
    if fmt is None:
        fmt = detect_record_format(records[0][0])
        if fmt is None:
            raise RequestError(f"{path}: cannot tell the format from record 0 (keys "
                               f"{sorted(records[0][0]) if isinstance(records[0][0], dict) else '-'}); "
                               f"pass one of {', '.join(FORMATS)}")
    return parse_records((r for r, _ in records), fmt, str(path), lines=[n for _, n in records],
                         skip_invalid=skip_invalid)


def parse_records(records: Iterable[Any], fmt: str, source: str = "<records>",
                  lines: list[int | None] | None = None, skip_invalid: bool = False) -> list[Request]:
    """Parse already-loaded JSON records of format ``fmt``; ``source`` names them in errors."""
    parser = _PARSERS[fmt]
    out: list[Request] = []
    skipped = 0
    for i, raw in enumerate(records):
        try:
            out.extend(parser(_Record(raw, source, i, lines[i] if lines else None)))
        except RequestError as e:
            if not skip_invalid:
                raise
            skipped += 1
            log.warning("skipped: %s", e)
    if skipped:
        log.warning("%s: skipped %d malformed record(s), kept %d request(s)", source, skipped, len(out))
    return out


def detect_format(path: str | os.PathLike[str]) -> str:
    """The format ``load_requests`` would pick for ``path``."""
    path = Path(path)
    records, _ = _read_records(path)
    if not records:
        raise RequestError(f"{path}: no records")
    fmt = detect_record_format(records[0][0])
    if fmt is None:
        raise RequestError(f"{path}: cannot tell the format from record 0")
    return fmt


def write_jsonl(requests: Iterable[Request], path: str | os.PathLike[str]) -> Path:
    """Write requests as the plain JSONL format (evaluation prompts included); ``load_requests`` reads it back."""
    path = Path(path)
    with path.open("w", encoding="utf-8") as f:
        for r in requests:
            rec: dict[str, Any] = {"subject": r.subject, "prompt": r.prompt, "target_new": r.target_new}
            for key in ("case_id", "target_true", "relation"):
                if getattr(r, key) is not None:
                    rec[key] = getattr(r, key)
            for key in ("paraphrase_prompts", "neighborhood_prompts", "neighborhood_targets", "generation_prompts"):
                if getattr(r, key):
                    rec[key] = list(getattr(r, key))
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path
