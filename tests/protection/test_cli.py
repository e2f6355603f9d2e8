"""`secure-collab protection-check` end to end on small dimensions."""

from __future__ import annotations

import json

import pytest

from secure_collab.cli import main

FIELDS = {"mode", "parties", "dim", "dropouts", "max_abs_err", "max_rel_err", "bytes_per_value",
          "protect_seconds", "accumulate_seconds", "open_seconds", "coordinator_peak_bytes"}


# ckks dim 89: 4,005 values + 6 integrity-tag limbs fill one 4,096-slot ciphertext
@pytest.mark.parametrize(("mode", "dim", "max_bytes"), [("shares", 40, 8.2), ("plain", 40, 8.2), ("ckks", 89, 33)])
def test_protection_check_writes_the_issue_fields(tmp_path, capsys, mode, dim, max_bytes):
    out = tmp_path / "r.json"
    code = main(["protection-check", "--mode", mode, "--parties", "4", "--dim", str(dim), "--dropouts", "1",
                 "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert FIELDS <= set(result)
    assert result["ok"] and result["n_values"] == dim * (dim + 1) // 2
    assert result["bytes_per_value"] <= max_bytes * (1 + 200 / result["n_values"])  # header overhead
    assert "max relative error" in capsys.readouterr().out  # the human summary; JSON only where --json says
    assert main(["protection-check", "--mode", mode, "--parties", "4", "--dim", str(dim), "--dropouts", "1",
                 "--json", "-", "--quiet"]) == 0
    again = json.loads(capsys.readouterr().out)  # stdout is the JSON document alone
    assert again["ok"] and {k: again[k] for k in ("mode", "n_values", "dim")} == {k: result[k] for k in
                                                                                 ("mode", "n_values", "dim")}


def test_protection_check_refuses_bad_arguments(capsys):
    assert main(["protection-check", "--mode", "shares", "--parties", "2", "--dim", "4", "--dropouts", "2",
                 "--quiet"]) == 2
    with pytest.raises(SystemExit):
        main(["protection-check", "--mode", "none", "--parties", "2", "--dim", "4"])


def _check(tmp_path, mode: str, dim: int, chunk: int, memory: int, name: str = "s.json") -> dict:
    out = tmp_path / name
    assert main(["protection-check", "--mode", mode, "--parties", "4", "--dim", str(dim), "--dropouts", "1",
                 "--chunk-values", str(chunk), "--coordinator-memory", str(memory), "--json", str(out), "-q"]) == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("mode", ["shares", "plain"])
def test_streamed_check_holds_a_window_and_still_equals_the_sum(tmp_path, mode):
    """Tiny chunks and a window of a few of them: the opened chunks still equal the float64 sum of the 3 parties
    that send (one drops out), and the coordinator held the window's sums, no more (plus the payload in flight)."""
    from tests.protection.conftest import make_session

    dim, chunk, memory = 250, 4_000, 100_000  # 31,375 values: 8 chunks
    result = _check(tmp_path, mode, dim, chunk, memory)
    assert result["ok"] and result["max_rel_err"] <= result["target_rel_err"]
    # each chunk's running sum, by hand: the values and 4 integrity-tag limbs as 64-bit integers, and each sending
    # party's 80-byte sealed seed and 64-byte signature
    one_sum = (chunk + 4) * 8 + 3 * (80 + 64)
    assert result["chunks"] == 8 and result["window_chunks"] == memory // one_sum == 3
    s = make_session(mode, 4, 1.0)
    aggregate = s.scheme.aggregate_bytes(s.keys.public, chunk, 3)
    payload = result["payload_bytes"] / result["chunks"]  # what one party sends per chunk, header included
    python_objects = 16 << 10  # the accumulators' Python objects and the calls' small temporaries (~7 KB)
    assert result["coordinator_peak_bytes"] <= result["window_chunks"] * aggregate + payload + python_objects
    # and it did hold a window: every sum of the window is open while the last party's chunks arrive
    assert result["coordinator_held_bytes"] >= (result["window_chunks"] - 1) * (chunk + 4) * 8


def test_streamed_ckks_peak_follows_the_window_not_the_statistic(tmp_path):
    """ckks with a window of 2 chunks: the sum is right with a dropout, and 3 times as many chunks leave the
    coordinator's peak where it was (its add parses a whole payload, so the peak is not a formula of the sums)."""
    small = _check(tmp_path, "ckks", 60, 600, 150_000, "small.json")
    large = _check(tmp_path, "ckks", 104, 600, 150_000, "large.json")
    for r in (small, large):
        assert r["ok"] and r["window_chunks"] == 150_000 // r["chunk_sum_bytes"] == 2
    assert (small["chunks"], large["chunks"]) == (4, 10)
    assert large["coordinator_peak_bytes"] <= 1.1 * small["coordinator_peak_bytes"]


def test_a_window_smaller_than_one_chunk_is_refused_in_one_line(capsys):
    assert main(["protection-check", "--mode", "shares", "--parties", "3", "--dim", "40", "--chunk-values", "64",
                 "--coordinator-memory", "900"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "holds no chunk's running sum (976 bytes" in err
    assert main(["protection-check", "--mode", "shares", "--parties", "3", "--dim", "40", "--chunk-values", "0",
                 "-q"]) == 2


def test_uniform_written_in_pieces_is_the_one_shot_stream():
    """The check's random statistics, made a piece at a time, are the values of the whole AES-CTR stream at once."""
    import numpy as np
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from secure_collab.bench.protection import uniform

    n, seed, party, bound = (1 << 17) + 5, 3, 2, 2.5
    enc = Cipher(algorithms.AES(seed.to_bytes(16, "big")), modes.CTR(party.to_bytes(16, "big"))).encryptor()
    raw = np.frombuffer(enc.update(bytes(8 * n)), dtype=np.uint64)
    want = (2.0 * np.ldexp((raw >> np.uint64(11)).astype(np.float64), -53) - 1.0) * bound
    assert np.array_equal(uniform(seed, party, n, bound), want)
