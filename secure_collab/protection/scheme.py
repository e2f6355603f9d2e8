"""The scheme template: what every mode shares (integer encoding, tags, seeds, signatures, checks), and the
template of the two integer-array modes (``ArrayScheme``: plain and shares).

A mode supplies its public parameters, how it hides a vector (``_hide``), how the solver reads the exact
sum back (``_unhide``) and the coordinator's running sum (``accumulator``); everything else is here, once.
The life cycle is documented in ``base``; the soundness argument in docs/integrity.md.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from . import _primitives as hazmat
from . import _wire, integrity, sealing
from ._array import FRAME_VALUES, LIMB_BITS, ArrayPublic, read_sum
from .base import (
    Authenticated,
    Buffer,
    IntegrityError,
    PartyFault,
    PartySecrets,
    Payload,
    ProtectionError,
    ProtectionParams,
    SolverKeys,
    StatContext,
)
from .encoding import (
    aggregate_bound,
    check_bound,
    check_shape,
    check_values,
    decode_fixed_in_place,
    fixed_point_bits,
)
from .public import EXTRA_FRAMES, SEALED_SEED_BYTES, SEED_BYTES, PublicScheme
from .statements import contribution_statement

__all__ = ["EXTRA_FRAMES", "SEALED_SEED_BYTES", "SEED_BYTES", "ProtectionScheme"]

BUNDLE_BYTES = 64  # mac_key || release_key


def _bundle_ad(public: bytes, party: str) -> bytes:
    return json.dumps(["bundle", _wire.sha256_hex(public), party], separators=(",", ":")).encode()


class ProtectionScheme(PublicScheme):
    """A mode's whole life cycle: the public side (``PublicScheme``) plus setup, protect, authenticate and open."""

    # ---- mode-specific parts ----------------------------------------------------------------------
    @abc.abstractmethod
    def _public_meta(self, params: ProtectionParams) -> tuple[dict[str, Any], bytes, Any]:
        """(meta with at least frac_bits, limb_bits, aggregate bound terms; opaque body; mode secret)."""

    @abc.abstractmethod
    def _hide(self, vector: np.ndarray, seed: bytes, ctx: StatContext, pub: _wire.Public) -> tuple[Buffer, ...]:
        """Party side: the int64 vector (data, then tag limbs; already minus ``_mask``'s words) as this mode's data
        frames. The vector is a fresh buffer of ``protect``: a mode may hide it in place and hand out views of it."""

    def _mask(self, seed: bytes, ctx: StatContext) -> hazmat.Keystream | None:
        """Party side: a keystream whose words the encoding subtracts mod 2^64 in the same pass (``shares``), or
        None."""
        return None

    @abc.abstractmethod
    def _unhide(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext, auth: Authenticated,
                pub: _wire.Public) -> np.ndarray:
        """Solver side: the exact int64 sum of the listed parties' vectors (IntegrityError if impossible)."""

    def export_secret(self, secret: Any) -> bytes:
        """The mode secret as bytes, for the solver's encrypted state (none by default)."""
        return b""

    def import_secret(self, blob: bytes, pub: _wire.Public) -> Any:
        return None

    # ---- setup ------------------------------------------------------------------------------------
    def solver_setup(self, params: ProtectionParams, recipients: Mapping[str, bytes]) -> SolverKeys:
        """Fresh session secrets; ``recipients``: each party's long-term X25519 sealing public key."""
        return self._setup_from_parts(params, recipients, hazmat.random_bytes(32), hazmat.random_bytes(32),
                                      hazmat.random_bytes(32),
                                      {name: hazmat.random_bytes(32) for name in recipients})

    def _setup_from_parts(self, params: ProtectionParams, recipients: Mapping[str, bytes], seal_private: bytes,
                          mac_key: bytes, release_key: bytes, ephemerals: Mapping[str, bytes]) -> SolverKeys:
        if params.mode != self.mode:
            raise ProtectionError(f"params are for mode {params.mode!r}, not {self.mode!r}")
        check_bound(params.bound, params.max_parties, params.min_parties)
        if len(recipients) != params.max_parties:
            raise ProtectionError(f"{len(recipients)} bundle recipients for max_parties={params.max_parties}")
        meta, body, secret = self._public_meta(params)
        meta.update({"v": _wire.VERSION, "mode": self.mode, "bound": float(params.bound),
                     "max_parties": params.max_parties, "min_parties": params.min_parties,
                     "tags": integrity.TAGS, "solver_x25519": hazmat.x25519_public(seal_private).hex()})
        public = _wire.encode_public(meta, body)
        bundles = _wire.encode_bundles({
            name: sealing.seal_to(key, mac_key + release_key, sealing.BUNDLE_INFO, _bundle_ad(public, name),
                                  ephemerals[name]) for name, key in recipients.items()})
        return SolverKeys(params, public, bundles, secret, seal_private, mac_key, release_key)

    def restore(self, params: ProtectionParams, public: bytes, bundles: bytes, blob: Mapping[str, str]) -> SolverKeys:
        """Rebuild the solver's keys from its encrypted state (``export``) after a restart."""
        pub = self._public(public)
        return SolverKeys(params, public, bundles, self.import_secret(bytes.fromhex(blob["mode_secret"]), pub),
                          bytes.fromhex(blob["seal_private"]), bytes.fromhex(blob["mac_key"]),
                          bytes.fromhex(blob["release_key"]))

    def export(self, keys: SolverKeys) -> dict[str, str]:
        return {"seal_private": keys.seal_private.hex(), "mac_key": keys.mac_key.hex(),
                "release_key": keys.release_key.hex(), "mode_secret": self.export_secret(keys.secret).hex()}

    def join(self, public: bytes, bundles: bytes, party: str, sealing_private: bytes) -> PartySecrets:
        """Party side: open this party's bundle of the (already signature-checked) setup."""
        self._public(public)
        sealed = _wire.decode_bundles(bundles).get(party)
        if sealed is None:
            raise ProtectionError(f"the setup holds no bundle for party {party!r}")
        try:
            plain = sealing.open_sealed(sealed, sealing_private, sealing.BUNDLE_INFO, _bundle_ad(public, party),
                                        BUNDLE_BYTES)
        except hazmat.AuthenticationFailed:
            raise ProtectionError(f"setup bundle of party {party!r}: authentication failed") from None
        return PartySecrets(plain[:32], plain[32:])

    def warm(self) -> None:
        """Load what protect and open compile (the MAC's kernels) before the first chunk (parties, solver)."""
        integrity.warm()

    # ---- party ------------------------------------------------------------------------------------
    def protect(self, values: np.ndarray, ctx: StatContext, public: bytes, secrets: PartySecrets,
                signer: Ed25519PrivateKey) -> Payload:
        return self._protect_from_parts(values, ctx, public, secrets, signer, hazmat.random_bytes(SEED_BYTES),
                                        hazmat.random_bytes(32))

    def _protect_from_parts(self, values: np.ndarray, ctx: StatContext, public: bytes, secrets: PartySecrets,
                            signer: Ed25519PrivateKey, seed: bytes, ephemeral: bytes) -> Payload:
        pub = self._public(public)
        if not ctx.party:
            raise ProtectionError("protect() needs the party's context (ctx.party is empty)")
        if len(seed) != SEED_BYTES:
            raise ProtectionError(f"a seed has {SEED_BYTES} bytes")
        check_shape(values, ctx)
        tag_key = hazmat.hkdf_sha256(seed, None, integrity.TAG_KEY_INFO + ctx.label(), 32)
        # the range is checked in the same pass as the encoding, before anything leaves this call
        vector = encode_with_tags(values, pub, secrets.mac_key, ctx.aggregate().label(), tag_key, ctx,
                                  self._mask(seed, ctx))
        frames = self._hide(vector, seed, ctx, pub)
        sealed = sealing.seal_to(bytes.fromhex(pub.meta["solver_x25519"]), seed, sealing.SEED_INFO, ctx.label(),
                                 ephemeral)
        signature = hazmat.ed25519_sign(signer, contribution_statement(ctx, pub.digest, values.shape[0], sealed))
        header = _wire.party_header(self.mode, ctx, values.shape[0], self._frame_values(pub), pub)
        return Payload(header, (*frames, sealed, signature))

    # ---- solver -----------------------------------------------------------------------------------
    def authenticate(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext,
                     verify_keys: Mapping[str, Ed25519PublicKey]) -> Authenticated:
        """Before opening anything: every listed party is in the roster, signed this chunk, and sealed a seed
        the solver can open. Raises PartyFault naming every party that fails."""
        pub = self._public(keys.public)
        n, parties = self._check_aggregate(aggregate, keys, ctx, pub)
        extras = aggregate.frames[len(aggregate.frames) - EXTRA_FRAMES * len(parties):]
        bad, seeds = [], []
        for i, party in enumerate(parties):
            sealed, signature = bytes(extras[2 * i]), bytes(extras[2 * i + 1])
            pctx = ctx.for_party(party)
            try:
                if party not in verify_keys:
                    raise hazmat.AuthenticationFailed()
                hazmat.ed25519_verify(verify_keys[party], signature,
                                      contribution_statement(pctx, pub.digest, n, sealed))
                seeds.append(sealing.open_sealed(sealed, keys.seal_private, sealing.SEED_INFO, pctx.label(),
                                                 SEED_BYTES))
            except hazmat.AuthenticationFailed:
                bad.append(party)
        if bad:
            raise PartyFault(bad, f"{ctx.statistic} chunk {ctx.chunk} of layer {ctx.layer}: contributions that "
                                  "do not authenticate (not in the roster, bad signature or seal)")
        return Authenticated(parties, tuple(seeds))

    def check_aggregate(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext) -> tuple[int, tuple[str, ...]]:
        """The solver's check of an aggregate chunk on arrival, before it is kept (no crypto): its header, party
        list and frame count, and every frame's size, so what it keeps is at most ``aggregate_bytes``."""
        return self._check_aggregate(aggregate, keys, ctx, self._public(keys.public))

    def _check_aggregate(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext,
                         pub: _wire.Public) -> tuple[int, tuple[str, ...]]:
        """``check_aggregate`` under public parameters decoded once by the caller."""
        n, parties = _wire.check_aggregate_header(aggregate, ctx, keys.params.min_parties,
                                                  keys.params.max_parties)
        tags, per_frame = integrity.tag_values(pub.meta["limb_bits"]), self._frame_values(pub)
        _wire.check_payload(aggregate, mode=self.mode, kind="aggregate", ctx=ctx, n_values=n, frame_values=per_frame,
                            public=pub, extra_frames=EXTRA_FRAMES * len(parties), tag_values=tags)
        for i in range(_wire.n_frames(n + tags, per_frame)):
            size, most = (_wire.nbytes(aggregate.frames[i]),
                          self._frame_bytes(pub, min(per_frame, n + tags - i * per_frame)))
            if not 0 < size <= most:
                raise ProtectionError(f"aggregate frame {i}: {size} bytes, at most {most} for its values")
        extras = aggregate.frames[len(aggregate.frames) - EXTRA_FRAMES * len(parties):]
        for sealed, signature in zip(extras[::2], extras[1::2], strict=True):
            if _wire.nbytes(sealed) != SEALED_SEED_BYTES or _wire.nbytes(signature) != hazmat.SIGNATURE_BYTES:
                raise ProtectionError(f"aggregate: each party's extras are a {SEALED_SEED_BYTES}-byte sealed seed "
                                      f"and a {hazmat.SIGNATURE_BYTES}-byte signature")
        return n, parties

    def aggregate_bytes(self, public: bytes, n_values: int, parties: int) -> int:
        """The most bytes an aggregate chunk of ``n_values`` over ``parties`` may hold (``check_aggregate``)."""
        pub = self._public(public)
        total, per_frame = n_values + integrity.tag_values(pub.meta["limb_bits"]), self._frame_values(pub)
        data = sum(self._frame_bytes(pub, min(per_frame, total - i * per_frame))
                   for i in range(_wire.n_frames(total, per_frame)))
        return data + parties * (SEALED_SEED_BYTES + hazmat.SIGNATURE_BYTES)

    def _frame_bytes(self, pub: _wire.Public, count: int) -> int:
        """The most bytes of one data frame holding ``count`` values (64-bit integers unless a mode says)."""
        return count * 8

    def open(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext, auth: Authenticated) -> np.ndarray:
        """The float64 sum of the listed parties, after the range and MAC checks (IntegrityError)."""
        pub = self._public(keys.public)  # decoded once per opening
        # the opened integers are this call's own buffer: decode them where they lie (no second vector)
        return decode_fixed_in_place(self._open_encoded(aggregate, keys, ctx, auth, pub), int(pub.meta["frac_bits"]))

    def open_encoded(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext, auth: Authenticated) -> np.ndarray:
        """The exact int64 sum of the listed parties' encodings, after the range and MAC checks."""
        return self._open_encoded(aggregate, keys, ctx, auth, self._public(keys.public))

    def _open_encoded(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext, auth: Authenticated,
                      pub: _wire.Public) -> np.ndarray:
        """``open_encoded`` under public parameters decoded once by the caller."""
        n = aggregate.header["n_values"]
        total = self._unhide(aggregate, keys, ctx, auth, pub)
        data, limbs = total[:n], total[n:]
        limb_bits = pub.meta["limb_bits"]
        where = f"{ctx.statistic} chunk {ctx.chunk} of layer {ctx.layer}"
        limit = self._aggregate_bound(pub, len(auth.parties))
        if int(np.max(data)) > limit or int(np.min(data)) < -limit:  # not abs(): |−2^63| wraps in int64
            raise IntegrityError(where, "range: the sum exceeds the bound of the listed in-bound contributions")
        if np.any(limbs < 0) or int(np.max(limbs)) > len(auth.parties) * ((1 << limb_bits) - 1):
            raise IntegrityError(where, "range: the tag limbs are out of range")
        pads = [[integrity.tag_pad(hazmat.hkdf_sha256(seed, None, integrity.TAG_KEY_INFO
                                                      + ctx.for_party(p).label(), 32), j)
                 for j in range(integrity.TAGS)] for p, seed in zip(auth.parties, auth.seeds, strict=True)]
        if not integrity.verify(data, limbs, keys.mac_key, ctx.aggregate().label(), pads, limb_bits):
            raise IntegrityError(where, "mac: the tags do not match the opened sum")
        return data

    def _aggregate_bound(self, pub: _wire.Public, parties: int) -> int:
        return aggregate_bound(pub.meta["bound"], parties, pub.meta["frac_bits"])


def encode_with_tags(values: np.ndarray, pub: _wire.Public, mac_key: bytes, label: bytes, tag_key: bytes,
                     ctx: StatContext, mask: hazmat.Keystream | None = None) -> np.ndarray:
    """A party's int64 vector: round(x · 2^f) of its (shape-checked) values, then its tags' limbs
    (``integrity``), all minus ``mask``'s words mod 2^64 when a mode masks (``shares``); ProtectionError if a
    value is not finite or exceeds the bound (``encoding.check_values``'s message).

    One pass, piece by piece: each piece is range-checked, encoded, tagged and masked into its place in the
    result while it is in cache (``integrity.TagStream.protect``); the only buffer as long as the vector is the
    result itself."""
    n, limb_bits = values.shape[0], pub.meta["limb_bits"]
    out = np.empty(n + integrity.tag_values(limb_bits), dtype=np.int64)
    words = out.view(np.uint64)
    step = min(integrity.PIECE_VALUES, n)
    stream, bound = integrity.TagStream(mac_key, label, step), pub.meta["bound"]
    for start in range(0, n, step):
        end = min(start + step, n)
        peak = stream.protect(values[start:end], pub.meta["frac_bits"], words[start:end], mask)
        if not peak <= bound:  # NaN, infinite or beyond the bound
            refuse_range(values, bound, ctx)
    out[n:] = integrity.to_limbs(integrity.finish_tags(stream, tag_key), limb_bits)
    if mask is not None:  # the mask continues over the tags' limbs
        tail = np.empty(out.shape[0] - n, dtype=np.uint64)
        mask.fill(tail.data)
        np.subtract(words[n:], tail, out=words[n:])
    return out


def refuse_range(values: np.ndarray, bound: float, ctx: StatContext) -> None:
    """Refuse ``values``, one of whose pieces had a largest magnitude that is NaN, infinite or beyond ``bound``:
    with ``encoding.check_values``'s message, which names the first offending value."""
    check_values(values, bound, ctx)
    raise ProtectionError(f"statistic {ctx.statistic!r} of layer {ctx.layer}: a value exceeds the bound {bound:.6g}")


class ArrayScheme(ArrayPublic, ProtectionScheme):
    """Fixed point with f = 59 − ceil(log2(P·bound)) fractional bits; vectors travel as they are (plain)
    unless a subclass hides them (shares)."""

    def _public_meta(self, params: ProtectionParams) -> tuple[dict[str, Any], bytes, Any]:
        meta = {"frac_bits": fixed_point_bits(params.bound, params.max_parties), "limb_bits": LIMB_BITS,
                "frame_values": FRAME_VALUES}
        return meta, b"", None

    def _hide(self, vector: np.ndarray, seed: bytes, ctx: StatContext, pub: _wire.Public) -> tuple[Buffer, ...]:
        return _wire.split_frames(vector.view(np.uint64), FRAME_VALUES)  # protect's fresh int64: no copy

    def _unhide(self, aggregate: Payload, keys: SolverKeys, ctx: StatContext, auth: Authenticated,
                pub: _wire.Public) -> np.ndarray:
        return read_sum(aggregate, FRAME_VALUES).view(np.int64)
