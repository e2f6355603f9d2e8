"""Long-term identities and the session roster: every key a role holds, and the public halves it shares.

Each role has one identity. A party and the solver hold three key pairs, the coordinator one:

    curve     CurveZMQ (X25519) key pair: transport encryption and the ZAP allow-list
    signing   Ed25519: the solver signs the setup and each release; a party signs each contribution
    sealing   X25519: what others seal to it (the solver seals the session's MAC and release keys to each
              party; nothing is sealed to the coordinator, so it has no sealing key)

Files (``write_identity``; ``init_keys`` writes every role's into one directory, for demos and tests)::

    <role>.key_secret     TOML with the secret halves, mode 0600 (never leaves its site)
    <role>.public.toml    TOML with the public halves and the fingerprint (the only file a site sends)
    roster.toml           every role's public halves (``Roster.to_toml``)

where <role> is "coordinator", "solver" or "party-<name>". The roster's digest (``Roster.digest``: sha256
over the canonical list of fingerprints) is pinned in each site's session configuration
(``session.roster_sha256``), agreed out of band: an operator who edits the roster file (to add a key of its
own as a party, say) is refused at start by every role.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tomllib
from dataclasses import dataclass
from pathlib import Path

import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from secure_collab.errors import UserError
from secure_collab.files import private_dir
from secure_collab.names import NAME_RULE, ROLE_NAMES, is_name, shown

ROSTER_FILE = "roster.toml"
ROLES = ("coordinator", "solver", "party")


class KeyFileError(UserError, ValueError):
    """A key file is missing, malformed or readable by others."""


@dataclass(frozen=True)
class CurveKeyPair:
    public: bytes  # z85, 40 bytes
    secret: bytes  # z85, 40 bytes


@dataclass(frozen=True)
class PublicIdentity:
    """The public halves of one role's keys (signing and sealing are empty for the coordinator)."""

    role: str  # "coordinator" | "solver" | "party"
    name: str  # the party name, or the role for coordinator and solver
    curve: bytes  # z85 CURVE public key, 40 bytes
    signing: bytes = b""  # raw Ed25519 public key, 32 bytes
    sealing: bytes = b""  # raw X25519 public key, 32 bytes

    def fingerprint(self) -> str:
        """sha256 over the canonical encoding of everything public about this identity."""
        doc = [self.role, self.name, self.curve.decode(), self.signing.hex(), self.sealing.hex()]
        return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()

    def verify_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.signing)

    def to_toml(self) -> str:
        lines = [f'role = "{self.role}"', f'name = "{self.name}"', f'curve_public = "{self.curve.decode()}"']
        if self.role != "coordinator":
            lines += [f'signing_public = "{self.signing.hex()}"', f'sealing_public = "{self.sealing.hex()}"']
        return "\n".join(lines) + f'\nfingerprint = "{self.fingerprint()}"\n'


@dataclass(frozen=True, repr=False)
class Identity:
    """One role's secret keys (loaded from its 0600 file)."""

    public: PublicIdentity
    curve: CurveKeyPair
    signing: Ed25519PrivateKey | None
    sealing: X25519PrivateKey | None

    def __repr__(self) -> str:  # never print a secret
        return f"Identity({self.public.role} {self.public.name!r})"


@dataclass(frozen=True)
class Roster:
    coordinator: PublicIdentity
    solver: PublicIdentity
    parties: dict[str, PublicIdentity]

    def name_for(self, z85_key: bytes) -> str | None:
        """Roster name of an authenticated CURVE key: a party name, "solver", or None."""
        if z85_key == self.solver.curve:
            return "solver"
        for name, ident in self.parties.items():
            if ident.curve == z85_key:
                return name
        return None

    def allowed_keys(self) -> frozenset[bytes]:
        return frozenset([self.solver.curve, *(p.curve for p in self.parties.values())])

    def signing_public(self) -> Ed25519PublicKey:
        """The solver's verification key (setup and releases)."""
        return self.solver.verify_key()

    def party_verify_keys(self) -> dict[str, Ed25519PublicKey]:
        return {name: ident.verify_key() for name, ident in self.parties.items()}

    def fingerprints(self) -> dict[str, str]:
        out = {"coordinator": self.coordinator.fingerprint(), "solver": self.solver.fingerprint()}
        out.update({f"party:{n}": ident.fingerprint() for n, ident in sorted(self.parties.items())})
        return out

    def digest(self) -> str:
        """What every site pins (``session.roster_sha256``): sha256 of the sorted fingerprint list."""
        doc = sorted(self.fingerprints().items())
        return hashlib.sha256(json.dumps(doc, separators=(",", ":")).encode()).hexdigest()

    def to_toml(self) -> str:
        lines = ["# secure-collab roster: public keys only. Its digest is pinned in session.roster_sha256.",
                 f'# roster_sha256 = "{self.digest()}"', ""]
        for table, ident in (("coordinator", self.coordinator), ("solver", self.solver)):
            lines += [f"[{table}]", _public_body(ident), ""]
        for name, ident in sorted(self.parties.items()):
            lines += [f"[parties.{name}]", _public_body(ident), ""]
        return "\n".join(lines)

    @classmethod
    def from_identities(cls, identities: list[PublicIdentity]) -> Roster:
        """Assemble a roster from public identities (one coordinator, one solver, at least one party)."""
        coord = [i for i in identities if i.role == "coordinator"]
        solver = [i for i in identities if i.role == "solver"]
        parties = [i for i in identities if i.role == "party"]
        if len(coord) != 1 or len(solver) != 1 or not parties:
            raise KeyFileError("a roster needs exactly one coordinator, one solver and at least one party")
        names = [p.name for p in parties]
        if len(set(names)) != len(names):
            raise KeyFileError(f"party names repeat: {sorted(names)}")
        roster = cls(coord[0], solver[0], {p.name: p for p in parties})
        _check_distinct(roster)
        return roster


def _public_body(ident: PublicIdentity) -> str:
    lines = [f'curve_public = "{ident.curve.decode()}"']
    if ident.role != "coordinator":
        lines += [f'signing_public = "{ident.signing.hex()}"', f'sealing_public = "{ident.sealing.hex()}"']
    return "\n".join(lines)


def check_name(name: str) -> str:
    """A party's name (it names its key files and its messages): one whole ``names`` match, not a role's."""
    if not is_name(name) or name in ROLE_NAMES:
        raise KeyFileError(f"bad party name {shown(name)}: use {NAME_RULE}, not 'solver'/'coordinator'")
    return name


def _check_identity_name(role: str, name: str, where: str) -> None:
    """A party's name is a name; the coordinator's and the solver's is their role (it is in the fingerprint)."""
    if role == "party":
        check_name(name)
    elif name != role:
        raise KeyFileError(f"{where}: the {role}'s name must be {role!r}, not {shown(name)}")


def role_file_stem(role: str, name: str = "") -> str:
    """"coordinator", "solver" or "party-<name>": the stem of a role's key files."""
    if role == "party":
        return f"party-{check_name(name)}"
    if role not in ROLES:
        raise KeyFileError(f"unknown role {role!r}; one of {ROLES}")
    return role


def write_private_file(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 whatever the umask; refuses to overwrite."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask (0o277 would have made it 0400)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _read_secret(path: Path) -> dict[str, str]:
    path = Path(path)
    if not path.is_file():
        raise KeyFileError(f"missing key file {path}")
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        raise KeyFileError(f"{path} is readable by group/others; chmod 600 it")
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(f"{path}: not a key file ({exc})") from None


def new_identity(role: str, name: str = "") -> tuple[str, PublicIdentity]:
    """Fresh key pairs for one role: (the secret file's text, the public identity)."""
    stem = role_file_stem(role, name)
    name = name if role == "party" else role
    curve_public, curve_secret = zmq.curve_keypair()
    lines = [f"# secure-collab identity of {stem}: secret keys, keep this file on its own site (mode 0600)",
             f'role = "{role}"', f'name = "{name}"',
             f'curve_public = "{curve_public.decode()}"', f'curve_secret = "{curve_secret.decode()}"']
    signing_pub = sealing_pub = b""
    if role != "coordinator":
        signing, sealing = Ed25519PrivateKey.generate(), X25519PrivateKey.generate()
        signing_pub, sealing_pub = signing.public_key().public_bytes_raw(), sealing.public_key().public_bytes_raw()
        lines += [f'ed25519_secret = "{signing.private_bytes_raw().hex()}"',
                  f'x25519_secret = "{sealing.private_bytes_raw().hex()}"']
    return "\n".join(lines) + "\n", PublicIdentity(role, name, curve_public, signing_pub, sealing_pub)


def write_identity(directory: Path, role: str, name: str = "") -> PublicIdentity:
    """Write ``<stem>.key_secret`` (0600) and ``<stem>.public.toml`` under ``directory``; refuses to overwrite."""
    directory = private_dir(directory, tighten=False)  # a new key directory is 0700 whatever the umask
    stem = role_file_stem(role, name)
    text, public = new_identity(role, name)
    write_private_file(directory / f"{stem}.key_secret", text)
    (directory / f"{stem}.public.toml").write_text(public.to_toml())
    return public


def init_keys(directory: Path, parties: list[str]) -> Roster:
    """Every role's identity and the roster in one directory (demos and tests; refuses to overwrite).

    In a real deployment each site runs ``write_identity`` for itself and sends only its public file."""
    directory = Path(directory)
    names = [check_name(p) for p in parties]
    if len(set(names)) != len(names) or not names:
        raise KeyFileError(f"party names must be distinct and non-empty: {parties}")
    idents = [write_identity(directory, "coordinator"), write_identity(directory, "solver")]
    idents += [write_identity(directory, "party", n) for n in names]
    roster = Roster.from_identities(idents)
    (directory / ROSTER_FILE).write_text(roster.to_toml())
    return roster


def load_identity(path: Path) -> Identity:
    """A role's secret identity file; checks that every public half matches its secret."""
    data = _read_secret(path)
    try:
        role, name = str(data["role"]), str(data["name"])
        curve = CurveKeyPair(public=data["curve_public"].encode(), secret=data["curve_secret"].encode())
        signing = sealing = None
        if role != "coordinator":
            signing = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(data["ed25519_secret"]))
            sealing = X25519PrivateKey.from_private_bytes(bytes.fromhex(data["x25519_secret"]))
    except (KeyError, AttributeError, TypeError, ValueError):
        raise KeyFileError(f"{path}: not a secure-collab identity file (role, name, curve, ed25519, x25519)") from None
    if role not in ROLES:
        raise KeyFileError(f"{path}: unknown role {shown(role)}")
    _check_identity_name(role, name, str(path))
    if zmq.curve_public(curve.secret) != curve.public:
        raise KeyFileError(f"{path}: CURVE public key does not match its secret key")
    public = PublicIdentity(
        role, name, curve.public,
        signing.public_key().public_bytes_raw() if signing else b"",
        sealing.public_key().public_bytes_raw() if sealing else b"")
    return Identity(public, curve, signing, sealing)


def load_curve_pair(path: Path) -> CurveKeyPair:
    return load_identity(path).curve


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    ident = load_identity(path)
    if ident.signing is None:
        raise KeyFileError(f"{path}: the {ident.public.role} has no signing key")
    return ident.signing


def load_public_identity(path: Path) -> PublicIdentity:
    """A ``<stem>.public.toml`` file; refuses one whose fingerprint line does not match its keys."""
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise KeyFileError(f"{path}: cannot read a public identity ({exc})") from None
    ident = _public_from_table(data, data.get("role", ""), data.get("name", ""), str(path))
    if "fingerprint" in data and data["fingerprint"] != ident.fingerprint():
        raise KeyFileError(f"{path}: fingerprint line does not match the keys in the file")
    return ident


def _public_from_table(table: dict, role: str, name: str, where: str) -> PublicIdentity:
    if role not in ROLES:
        raise KeyFileError(f"{where}: unknown role {shown(role)}")
    _check_identity_name(role, name, where)
    try:
        curve = table["curve_public"].encode()
        signing = bytes.fromhex(table["signing_public"]) if role != "coordinator" else b""
        sealing = bytes.fromhex(table["sealing_public"]) if role != "coordinator" else b""
    except (KeyError, AttributeError, TypeError, ValueError):
        raise KeyFileError(f"{where}: {role} {name!r} lacks curve/signing/sealing public keys") from None
    if len(curve) != 40 or (role != "coordinator" and (len(signing) != 32 or len(sealing) != 32)):
        raise KeyFileError(f"{where}: {role} {name!r} has keys of the wrong length")
    return PublicIdentity(role, name, curve, signing, sealing)


def load_roster(path: Path) -> Roster:
    try:
        with Path(path).open("rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise KeyFileError(f"cannot read roster {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise KeyFileError(f"{path}: roster is not TOML ({exc})") from None
    if not isinstance(data.get("coordinator"), dict) or not isinstance(data.get("solver"), dict):
        raise KeyFileError(f"{path}: malformed roster (needs [coordinator] and [solver])")
    parties = data.get("parties", {})
    if not isinstance(parties, dict) or not parties:
        raise KeyFileError(f"{path}: malformed roster (needs at least one [parties.<name>])")
    roster = Roster(
        _public_from_table(data["coordinator"], "coordinator", "coordinator", str(path)),
        _public_from_table(data["solver"], "solver", "solver", str(path)),
        {n: _public_from_table(v if isinstance(v, dict) else {}, "party", n, str(path))
         for n, v in parties.items()})
    _check_distinct(roster, str(path))
    return roster


def _check_distinct(roster: Roster, where: str = "roster") -> None:
    idents = [roster.coordinator, roster.solver, *roster.parties.values()]
    curves = [i.curve for i in idents]
    others = [k for i in idents for k in (i.signing, i.sealing) if k]
    if len(set(curves)) != len(curves) or len(set(others)) != len(others):
        raise KeyFileError(f"{where}: every key in a roster must be distinct")
