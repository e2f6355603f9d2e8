"""Helpers shared by the protection tests: one full protect -> accumulate -> open round."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from secure_collab.protection import Payload, ProtectionScheme, SolverKeys, StatContext

CTX = StatContext("sess-1", 1, 4, "G")


def protect_all(scheme: ProtectionScheme, keys: SolverKeys, values: Sequence[np.ndarray],
                ctx: StatContext = CTX) -> list[Payload]:
    return [scheme.protect(v, ctx.for_party(f"p{i}"), keys.public) for i, v in enumerate(values)]


def accumulate(scheme: ProtectionScheme, keys: SolverKeys, payloads: Sequence[Payload],
               include: Sequence[int], ctx: StatContext = CTX) -> Payload:
    acc = scheme.accumulator(keys.public, payloads[0].header["n_values"], ctx)
    for i in include:
        acc.add(payloads[i], party=f"p{i}")
    assert acc.parties == tuple(f"p{i}" for i in include)
    return acc.aggregate()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
