"""The keyed-tag exchange on one machine, for the experiments: the same OPRF, tags and decision rule as a session.

A fresh OPRF key plays the solver's; each party's requests go through the real blind / evaluate / finalize and
``overlap.decide`` decides with the facts kept in earlier rounds. ``apply_weighted`` turns a party's verdicts into
what it contributes: its kept requests, then the augmented requests it generates for each conflict it won, with
each one's weight (1/m for a duplicate held by m parties).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from secure_collab.data.requests import Request
from secure_collab.editing.augment import augmented_requests
from secure_collab.overlap import AUGMENT, WITHDRAW, Applied, Verdict, decide, fact_inputs
from secure_collab.protection import oprf


def tags_of(key: bytes, requests: Sequence[Request]) -> list[tuple[bytes, bytes]]:
    """The (sr, sro) tags of the requests under ``key``, through the party/solver OPRF round trip."""
    inputs = [x for r in requests for x in fact_inputs(r)]
    slots = max(2, len(inputs))
    batch, blinds = oprf.blind_batch(inputs, slots)
    out = oprf.finalize_batch(inputs, blinds, oprf.evaluate_batch(key, batch, slots, len(inputs)), slots)
    return list(zip(out[0::2], out[1::2], strict=True))


@dataclass
class TagSim:
    priority: list[str]
    dedupe: bool = True
    policy: str = "none"
    key: bytes = field(default_factory=oprf.new_key)
    history: dict[bytes, Applied] = field(default_factory=dict)
    records: list[tuple[int, str, str]] = field(default_factory=list)  # (round, decision id, kind)

    def round(self, round_: int, parties: Mapping[str, Sequence[Request]]) -> dict[str, list[Verdict]]:
        tags = {p: tags_of(self.key, reqs) for p, reqs in parties.items()}
        got = decide(tags, round_=round_, label=f"sim|{round_}".encode(), dedupe=self.dedupe, policy=self.policy,
                     priority=self.priority, history=self.history)
        self.history.update(got.applied)
        self.records += [(round_, did, kind) for did, kind in got.records]
        return got.verdicts


def apply_weighted(lm, requests: Sequence[Request], verdicts: Sequence[Verdict], augment: int,
                   seed: int = 0) -> tuple[list[Request], list[float]]:
    """A party's contribution after the verdicts: kept requests, then augmented ones for each won conflict, and
    the weight of each: 1/m for a kept duplicate held by m parties (the m copies add up to one), 1 for the
    others and for augmented requests."""
    pairs = [(r, v) for r, v in zip(requests, verdicts, strict=True) if v.action != WITHDRAW]
    extra = [a for r, v in zip(requests, verdicts, strict=True) if v.action == AUGMENT
             for a in augmented_requests(lm, r, augment, seed=seed + v.index)]
    return [r for r, _ in pairs] + extra, [v.weight for _, v in pairs] + [1.0] * len(extra)
