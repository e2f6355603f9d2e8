"""Roster pinning: every role refuses a roster that differs from the digest its site agreed to."""

from __future__ import annotations

import pytest

from secure_collab.config import ConfigError, load_config, write_config
from secure_collab.keys import Roster, init_keys, load_public_identity, load_roster, write_identity

SESSION = {"id": "s", "mode": "shares", "layers": [1], "d_k": 4, "d_v": 3}


def test_pinned_roster_loads_and_an_added_party_key_is_refused(tmp_path):
    init_keys(tmp_path / "keys", ["a", "b"])
    cfg = write_config(tmp_path / "session.toml", SESSION)
    assert cfg.session.roster_sha256 == cfg.roster.digest()
    # the operator adds a key of its own as party "m" to the roster file every role reads
    rogue = write_identity(tmp_path / "rogue", "party", "m")
    roster = load_roster(tmp_path / "keys" / "roster.toml")
    grown = Roster.from_identities([roster.coordinator, roster.solver, *roster.parties.values(), rogue])
    (tmp_path / "keys" / "roster.toml").write_text(grown.to_toml())
    with pytest.raises(ConfigError, match="does not match session.roster_sha256"):
        load_config(tmp_path / "session.toml")


def test_swapped_key_changes_the_digest_and_an_unpinned_config_is_refused(tmp_path):
    init_keys(tmp_path / "keys", ["a", "b"])
    roster = load_roster(tmp_path / "keys" / "roster.toml")
    other = write_identity(tmp_path / "other", "party", "a")  # same name, another key pair
    swapped = Roster.from_identities([roster.coordinator, roster.solver, other, roster.parties["b"]])
    assert swapped.digest() != roster.digest()
    sent = load_public_identity(tmp_path / "other" / "party-a.public.toml")
    assert swapped.fingerprints()["party:a"] == sent.fingerprint()
    with pytest.raises(ConfigError, match="roster_sha256 is missing"):
        write_config(tmp_path / "session.toml", SESSION, pin_roster=False)
