"""The edit request type every part of the engine uses, and its validation.

A request asks that ``prompt.format(subject)`` be completed by ``target_new``. Evaluation prompts travel with it
when the source has them (CounterFact paraphrase / neighbourhood prompts, zsRE rephrase / loc).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secure_collab.errors import UserError


class RequestError(UserError, ValueError):
    """A malformed request record; the message names the record and the field."""


@dataclass(frozen=True)
class Request:
    subject: str
    prompt: str  # contains exactly one "{}" where the subject goes
    target_new: str
    target_true: str | None = None
    relation: str | None = None
    case_id: str | None = None
    paraphrase_prompts: tuple[str, ...] = ()
    neighborhood_prompts: tuple[str, ...] = ()  # completed by target_true, before and after the edit
    # one true object per neighbourhood prompt when they differ from target_true (e.g. other countries'
    # capitals); empty: every neighbourhood prompt is completed by target_true, as in CounterFact
    neighborhood_targets: tuple[str, ...] = ()
    generation_prompts: tuple[str, ...] = ()  # CounterFact's prompts for free generation (fluency)
    extra: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        where = f"request {self.case_id}" if self.case_id is not None else "request"
        for name in ("subject", "prompt", "target_new"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise RequestError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
            if not value.strip():
                raise RequestError(f"{where}: field {name!r} is empty")
        for name in ("target_true", "relation"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise RequestError(f"{where}: field {name!r} must be a string, got {type(value).__name__}")
        if self.prompt.count("{}") != 1:
            raise RequestError(f"{where}: field 'prompt' must contain exactly one '{{}}' for the subject, "
                               f"got {self.prompt!r}")
        for name in ("paraphrase_prompts", "neighborhood_prompts", "neighborhood_targets", "generation_prompts"):
            value = getattr(self, name)
            if not isinstance(value, tuple) or not all(isinstance(p, str) for p in value):
                raise RequestError(f"{where}: field {name!r} must be a list of strings")
        if self.neighborhood_targets and len(self.neighborhood_targets) != len(self.neighborhood_prompts):
            raise RequestError(f"{where}: field 'neighborhood_targets' has {len(self.neighborhood_targets)} "
                               f"entries for {len(self.neighborhood_prompts)} neighbourhood prompts")

    def neighbor_target(self, i: int) -> str | None:
        """The true object completing neighbourhood prompt ``i``."""
        return self.neighborhood_targets[i] if self.neighborhood_targets else self.target_true

    @property
    def text(self) -> str:
        """The prompt with the subject filled in."""
        return self.prompt.format(self.subject)
