"""Key material for a session: CurveZMQ key pairs per role, the solver's Ed25519/X25519 keys, the roster.

Layout written by ``init_keys(D, parties)``::

    D/coordinator.key_secret      CURVE key pair of the coordinator         (mode 0600)
    D/solver.key_secret           CURVE key pair of the solver              (mode 0600)
    D/party-<name>.key_secret     CURVE key pair of each party              (mode 0600)
    D/solver_signing.key_secret   Ed25519 key the solver signs releases with (mode 0600)
    D/solver_sealing.key_secret   X25519 key share seeds are sealed to      (mode 0600)
    D/roster.toml                 every public key above; the only file that is shared

Secret files are TOML with z85 (CURVE) or hex (Ed25519/X25519) strings; loading refuses a file that
group or others can read. Each institution only needs its own secret file and the roster.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

import zmq
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_collab.errors import UserError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
ROSTER_FILE = "roster.toml"
_RAW = serialization.Encoding.Raw


class KeyFileError(UserError, ValueError):
    """A key file is missing, malformed or readable by others."""


@dataclass(frozen=True)
class CurveKeyPair:
    public: bytes  # z85, 40 bytes
    secret: bytes  # z85, 40 bytes


@dataclass(frozen=True)
class Roster:
    coordinator: bytes  # z85 CURVE public keys
    solver: bytes
    parties: dict[str, bytes]
    solver_signing: bytes  # raw Ed25519 public key (32 bytes)
    solver_sealing: bytes  # raw X25519 public key (32 bytes)

    def name_for(self, z85_key: bytes) -> str | None:
        """Roster name of an authenticated CURVE key: a party name, "solver", or None."""
        if z85_key == self.solver:
            return "solver"
        for name, key in self.parties.items():
            if key == z85_key:
                return name
        return None

    def allowed_keys(self) -> frozenset[bytes]:
        return frozenset([self.solver, *self.parties.values()])

    def signing_public(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.solver_signing)

    def to_toml(self) -> str:
        lines = [
            "# secure-collab roster: public keys only",
            "[coordinator]", f'curve_public = "{self.coordinator.decode()}"', "",
            "[solver]", f'curve_public = "{self.solver.decode()}"',
            f'signing_public = "{self.solver_signing.hex()}"',
            f'sealing_public = "{self.solver_sealing.hex()}"',
            "",
        ]
        for name, key in sorted(self.parties.items()):
            lines += [f"[parties.{name}]", f'curve_public = "{key.decode()}"', ""]
        return "\n".join(lines)

    def digest(self) -> str:
        return hashlib.sha256(self.to_toml().encode()).hexdigest()


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or name in ("solver", "coordinator"):
        raise KeyFileError(f"bad party name {name!r}: use 1-32 of [a-z0-9_-], not 'solver'/'coordinator'")
    return name


def _write_secret(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_secret(path: Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"missing key file {path}")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeyFileError(f"{path} is readable by group/others; chmod 600 it")
    with path.open("rb") as f:
        return tomllib.load(f)


def _curve_secret_text(role: str) -> tuple[str, bytes]:
    public, secret = zmq.curve_keypair()
    text = (f'# CURVE key pair of {role}: keep secret\n'
            f'public = "{public.decode()}"\nsecret = "{secret.decode()}"\n')
    return text, public


def init_keys(directory: Path, parties: list[str]) -> Roster:
    """Create every key pair and the roster under ``directory`` (refuses to overwrite)."""
    directory = Path(directory)
    names = [check_name(p) for p in parties]
    if len(set(names)) != len(names) or not names:
        raise KeyFileError(f"party names must be distinct and non-empty: {parties}")
    directory.mkdir(parents=True, exist_ok=True)
    pubs: dict[str, bytes] = {}
    for role in ["coordinator", "solver", *(f"party-{n}" for n in names)]:
        text, pubs[role] = _curve_secret_text(role)
        _write_secret(directory / f"{role}.key_secret", text)
    signing = Ed25519PrivateKey.generate()
    sealing = X25519PrivateKey.generate()
    _write_secret(directory / "solver_signing.key_secret",
                  f'ed25519_secret = "{signing.private_bytes_raw().hex()}"\n')
    _write_secret(directory / "solver_sealing.key_secret",
                  f'x25519_secret = "{sealing.private_bytes_raw().hex()}"\n')
    roster = Roster(
        coordinator=pubs["coordinator"], solver=pubs["solver"],
        parties={n: pubs[f"party-{n}"] for n in names},
        solver_signing=signing.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
        solver_sealing=sealing.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw),
    )
    (directory / ROSTER_FILE).write_text(roster.to_toml())
    return roster


def load_curve_pair(path: Path) -> CurveKeyPair:
    data = _read_secret(path)
    try:
        pair = CurveKeyPair(public=data["public"].encode(), secret=data["secret"].encode())
    except (KeyError, AttributeError):
        raise KeyFileError(f"{path}: expected 'public' and 'secret' z85 strings") from None
    if zmq.curve_public(pair.secret) != pair.public:
        raise KeyFileError(f"{path}: public key does not match secret key")
    return pair


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(_read_secret(path)["ed25519_secret"]))


def load_sealing_key(path: Path) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(_read_secret(path)["x25519_secret"]))


def load_roster(path: Path) -> Roster:
    with Path(path).open("rb") as f:
        data = tomllib.load(f)
    try:
        parties = {check_name(n): v["curve_public"].encode() for n, v in data.get("parties", {}).items()}
        roster = Roster(
            coordinator=data["coordinator"]["curve_public"].encode(),
            solver=data["solver"]["curve_public"].encode(),
            parties=parties,
            solver_signing=bytes.fromhex(data["solver"]["signing_public"]),
            solver_sealing=bytes.fromhex(data["solver"]["sealing_public"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise KeyFileError(f"{path}: malformed roster ({exc})") from None
    keys = [roster.coordinator, roster.solver, *parties.values()]
    if any(len(k) != 40 for k in keys) or len(set(keys)) != len(keys):
        raise KeyFileError(f"{path}: CURVE keys must be distinct 40-character z85 strings")
    return roster
