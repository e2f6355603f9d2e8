"""Helpers shared by the protection tests: parties with real keys, and one protect -> accumulate -> open round."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_collab.protection import (
    Payload,
    ProtectionParams,
    ProtectionScheme,
    SolverKeys,
    StatContext,
    get_scheme,
)

CTX = StatContext("sess-1", 1, 4, "G")


@dataclass
class Session:
    """A solver's keys and P parties, each with its own long-term Ed25519 and X25519 keys."""

    scheme: ProtectionScheme
    keys: SolverKeys
    signing: dict[str, Ed25519PrivateKey]
    sealing: dict[str, X25519PrivateKey]
    secrets: dict = field(default_factory=dict)

    @property
    def verify_keys(self) -> dict:
        return {n: k.public_key() for n, k in self.signing.items()}

    def protect(self, values: np.ndarray, ctx: StatContext) -> Payload:
        name = ctx.party
        if name not in self.secrets:
            self.secrets[name] = self.scheme.join(self.keys.public, self.keys.bundles, name,
                                                  self.sealing[name].private_bytes_raw())
        return self.scheme.protect(values, ctx, self.keys.public, self.secrets[name], self.signing[name])

    def open(self, aggregate: Payload, ctx: StatContext = CTX) -> np.ndarray:
        auth = self.scheme.authenticate(aggregate, self.keys, ctx, self.verify_keys)
        return self.scheme.open(aggregate, self.keys, ctx, auth)

    def open_encoded(self, aggregate: Payload, ctx: StatContext = CTX) -> np.ndarray:
        auth = self.scheme.authenticate(aggregate, self.keys, ctx, self.verify_keys)
        return self.scheme.open_encoded(aggregate, self.keys, ctx, auth)


def make_session(mode: str, max_parties: int, bound: float, min_parties: int = 2, **extra) -> Session:
    scheme = get_scheme(mode)
    names = [f"p{i}" for i in range(max_parties)]
    signing = {n: Ed25519PrivateKey.generate() for n in names}
    sealing = {n: X25519PrivateKey.generate() for n in names}
    keys = scheme.solver_setup(ProtectionParams(mode, max_parties, bound, min_parties, dict(extra)),
                               {n: k.public_key().public_bytes_raw() for n, k in sealing.items()})
    return Session(scheme, keys, signing, sealing)


def protect_all(s: Session, values: Sequence[np.ndarray], ctx: StatContext = CTX) -> list[Payload]:
    return [s.protect(v, ctx.for_party(f"p{i}")) for i, v in enumerate(values)]


def accumulate(s: Session, payloads: Sequence[Payload], include: Sequence[int], ctx: StatContext = CTX) -> Payload:
    acc = s.scheme.accumulator(s.keys.public, payloads[0].header["n_values"], ctx)
    for i in include:
        acc.add(payloads[i], party=f"p{i}")
    assert acc.parties == tuple(f"p{i}" for i in include)
    return acc.aggregate()


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
