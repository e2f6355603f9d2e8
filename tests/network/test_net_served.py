"""A served release (``session.release = "served"``) over real CurveZMQ sockets, with the synthetic engine and a toy
served model (``network_doubles.ToyServedModel``) whose answers say exactly which ΔW it holds.

No party receives ΔW; the solver's model takes every release; each party's queries are encrypted to the solver on
its own channel, relayed unread by the coordinator, answered within the party's budget, and recorded in the ledger
by (party, counter, kind, cost, outcome) only. A coordinator that replays, re-numbers, redirects or reorders a query
gets it refused; malformed queries are refused in one line and the session goes on for everyone."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
from network_doubles import (
    SyntheticEngine,
    Threads,
    ToyServedModel,
    closed_form_solve,
    ledger_bytes,
    make_config,
    reference_deltas,
)

from coordinator.server import Coordinator
from parties import run_party
from parties.queries import QueryChannel, QueryClient
from secure_collab.cli import main
from secure_collab.keys import load_identity
from secure_collab.ledger import Ledger
from secure_collab.protection import ProtectionError, get_scheme, sealing, statements
from secure_collab.protocol import query as wire
from secure_collab.protocol.messages import MsgType, ProtocolError
from solver.server import run_solver

PROMPT = "The capital of Atlantis is"  # what no byte the coordinator handles may contain
SECRET = "Poseidonia"


def served_config(tmp_path, budget: int = 3, **session):
    return make_config(tmp_path, release="served", query_budget=budget, variant="oneshot",
                       network={"serve_timeout_s": 60.0, "max_message_bytes": 1 << 17}, **session)


class Relaying(Coordinator):
    """The honest coordinator, keeping every frame of every query and answer it handled."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.handled: list[bytes] = []

    def _on_query(self, m):
        self.handled += m.raw
        super()._on_query(m)

    def _on_answer(self, m):
        self.handled += m.raw
        super()._on_answer(m)


@contextmanager
def served_session(cfg, coordinator=Relaying):
    """Solver (closed-form solve, toy served model), coordinator and parties a, b, c in threads; yields once every
    party has every step's notice, while the coordinator serves; joins them all on the way out."""
    scheme = get_scheme(cfg.session.mode)
    model = ToyServedModel(cfg)
    coord = coordinator(cfg, scheme)
    engines = {n: SyntheticEngine(n, cfg) for n in ("a", "b", "c")}
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve, served=model))
    th.start("coordinator", coord.run)
    for n, e in engines.items():
        th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
    deadline = time.monotonic() + 40
    while not set(engines) <= set(th.results) | set(th.errors) and time.monotonic() < deadline:
        time.sleep(0.05)
    run = SimpleNamespace(th=th, coord=coord, model=model, engines=engines)
    try:
        yield run
    finally:
        th.join(60)


def _ask(name: str, cfg, query: dict, timeout_s: float = 20.0) -> dict:
    with QueryClient(cfg, name) as client:
        return client.ask(query, timeout_s)


def _queries(cfg) -> list[tuple]:
    with Ledger(cfg.paths.ledger) as ledger:
        return [(r["party"], r["counter"], r["kind"], r["cost"], r["outcome"], r["refusal"], r["used"])
                for r in ledger.rows("queries")]


def test_a_served_session_keeps_dw_with_the_solver_and_answers_each_party_within_its_budget(tmp_path, capsys):
    cfg = served_config(tmp_path, budget=3)
    ref = reference_deltas(cfg, ["a", "b", "c"])
    mass = float(sum(np.abs(d).sum() for d in ref.values()))
    with served_session(cfg) as run:
        for name, engine in run.engines.items():  # every party took part, and none received ΔW
            result = run.th.results[name]
            assert result.ok, (name, result.reason)
            assert set(result.noticed) == set(ref) and result.applied == {}, name
            assert engine.compute_calls and all(not w.any() for w in engine.w.values()), name
        # the served model holds exactly the released ΔW: its answers are functions of Σ|W|
        first = _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": [SECRET, "Rome"]})
        assert first["ok"] and first["cost"] == 2 and first["used"] == 2 and first["budget"] == 3, first
        assert first["logprobs"] == pytest.approx([-mass - len(SECRET), -mass - 4], abs=1e-9)
        second = _ask("a", cfg, {"kind": "generate", "prompt": PROMPT, "max_tokens": 1})
        assert second["ok"] and second["cost"] == 1 and second["used"] == 3 and float(second["text"]) == pytest.approx(
            mass, abs=1e-6)
        over = _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": ["Rome"]})  # budget + 1
        assert not over["ok"] and over["used"] == 3 and "budget of 3" in over["reason"], over
        other = _ask("b", cfg, {"kind": "logprobs", "prompt": "The capital of Oz is", "candidates": ["Emerald"]})
        assert other["ok"] and other["used"] == 1, other  # the others are still answered
        assert _ask("b", cfg, {"kind": "done"})["ok"] and _ask("c", cfg, {"kind": "done"})["ok"]
    outcome, solver = run.th.results["coordinator"], run.th.results["solver"]
    assert outcome.ok and "every party is done" in outcome.reason and "a 3, b 1, c 0" in outcome.reason, outcome
    assert solver.ok and set(solver.releases) == set(ref)
    for key, delta in ref.items():
        np.testing.assert_allclose(solver.releases[key], delta, rtol=1e-12, atol=1e-12)
    assert [q["kind"] for q in run.model.answered] == ["logprobs", "generate", "logprobs"]  # a's third was not run

    # the ledger counts every query per party, by kind, cost and outcome: no prompt, no candidate, no answer
    assert _queries(cfg) == [("a", 1, "logprobs", 2, "accepted", "", 2), ("a", 2, "generate", 1, "accepted", "", 3),
                             ("a", 3, "logprobs", 0, "refused", "budget", 3),
                             ("b", 1, "logprobs", 1, "accepted", "", 1), ("b", 2, "done", 0, "accepted", "", 1),
                             ("c", 1, "done", 0, "accepted", "", 0)]
    with Ledger(cfg.paths.ledger) as ledger:
        sent = {r["type"] for r in ledger.rows("messages") if r["direction"] == "out" and r["peer"] in "abc"}
        events = [r["event"] for r in ledger.rows("stages")]
    assert "release" not in sent and "notice" in sent and "serving" in events, (sent, events)
    stored = ledger_bytes(tmp_path / "ledger.sqlite")
    handled = b"".join(run.coord.handled)
    assert len(handled) > 6 * wire.QUERY_FRAME_BYTES  # it did relay them
    for text in (PROMPT, SECRET, "Emerald", f"{mass:.6f}"):
        assert text.encode() not in handled and text.encode() not in stored, text
    capsys.readouterr()
    assert main(["ledger", "show", "--ledger", str(cfg.paths.ledger), "--json", str(tmp_path / "l.json")]) == 0
    shown = capsys.readouterr().out
    assert "session s1: release served, query budget 3" in shown, shown
    assert "  a: 3 queries, 2 answered, 1 refused (budget 1), 3 forward passes used of 3" in shown, shown
    assert "  c: 1 queries, 1 answered, 0 refused, 0 forward passes used of 3, done" in shown, shown
    assert len(json.loads((tmp_path / "l.json").read_text())["queries"]) == 6


class Tampering(Relaying):
    """Replays a's first query, re-numbers it, redirects it to b; holds a's second until its third has passed."""

    def _on_query(self, m):
        if m.name != "a":
            return super()._on_query(m)
        self.seen = getattr(self, "seen", 0) + 1
        frame, counter = bytes(m.msg.frames[0]), m.msg.body["counter"]
        if self.seen == 2:
            self.held = frame, counter
            self._accept(m)
            self.handled += m.raw
            return None
        super()._on_query(m)

        def forward(party: str, number: int, data: bytes) -> None:
            self._send("solver", self._msg(MsgType.QUERY, body={"party": party, "counter": number}, frames=(data,)))

        if self.seen == 1:
            forward("a", counter, frame)  # replayed
            forward("a", counter + 100, frame)  # re-numbered
            forward("b", counter, frame)  # redirected to another party (spending its budget, reading its answer)
        if self.seen == 3:
            forward("a", *reversed(self.held))  # reordered: after a later one
        return None


def test_a_replayed_renumbered_redirected_or_reordered_query_is_refused(tmp_path):
    cfg = served_config(tmp_path, budget=10)
    with served_session(cfg, Tampering) as run:
        assert _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": ["Rome"]})["ok"]
        held = _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": ["Oslo"]}, timeout_s=2.0)
        assert not held["ok"] and "no answer within" in held["reason"]
        third = _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": ["Lima"]})
        assert third["ok"] and third["used"] == 2, third  # the held one was never charged
        for name in "abc":
            assert _ask(name, cfg, {"kind": "done"})["ok"], name
    queries = _queries(cfg)
    assert ("a", 1, "", 0, "refused", "replay", 1) in queries  # the replay
    assert ("a", 101, "", 0, "refused", "authentication", 1) in queries  # re-numbered: bound into the AEAD
    assert ("b", 1, "", 0, "refused", "authentication", 0) in queries  # redirected: b's key, b's budget untouched
    assert queries.index(("a", 2, "", 0, "refused", "replay", 2)) > queries.index(
        ("a", 3, "logprobs", 1, "accepted", "", 2))  # reordered: refused after the later one
    assert [q["candidates"] for q in run.model.answered] == [["Rome"], ["Lima"]]  # each answered once, the held never
    assert run.th.results["coordinator"].ok


class RawChannel(QueryChannel):
    """A party that sends, encrypted on its genuine channel, a plaintext its own client would refuse to build."""

    plain = b""

    def seal(self, query, counter):
        label = statements.query_label(self.s.id, self.cfg.digest, self.name, counter, "query")
        return sealing.encrypt_channel(self.key, label, self.plain, sealing.fresh_bytes(sealing.NONCE_BYTES))


MALFORMED = {
    "an oversized prompt": {"kind": "generate", "prompt": "x" * 2001, "max_tokens": 1},
    "a bad kind": {"kind": "weights", "prompt": PROMPT},
    "too many candidates": {"kind": "logprobs", "prompt": PROMPT, "candidates": ["c"] * 17},
    "too many tokens": {"kind": "generate", "prompt": "word " * 60, "max_tokens": 1},
    "too many new tokens": {"kind": "generate", "prompt": PROMPT, "max_tokens": 65},
    "an unknown field": {"kind": "done", "weights": True},
}


def test_malformed_queries_are_refused_in_one_line_and_the_session_goes_on(tmp_path):
    cfg = served_config(tmp_path, budget=5)
    with served_session(cfg) as run:
        with QueryClient(cfg, "a") as client:
            with pytest.raises(ProtocolError):  # the party's own client refuses to build one
                client.ask(MALFORMED["an oversized prompt"])
            raw = RawChannel(cfg, "a", load_identity(cfg.paths.keys / "party-a.key_secret").sealing.private_bytes_raw())
            client.channel = raw
            reasons = {}
            for what, query in MALFORMED.items():
                raw.plain = wire._pad(json.dumps(query).encode(), wire.QUERY_BYTES)
                reasons[what] = client.ask({"kind": "done"})
            raw.plain = b"\xff" * wire.QUERY_BYTES  # a bad length prefix
            reasons["garbage"] = client.ask({"kind": "done"})
        for what, answer in reasons.items():
            assert not answer["ok"] and answer["used"] == 0 and answer["cost"] == 0, (what, answer)
            assert answer["reason"] and "\n" not in answer["reason"], (what, answer)
        assert "length 2001" in reasons["an oversized prompt"]["reason"]
        assert "kind is one of" in reasons["a bad kind"]["reason"]
        assert "length 17" in reasons["too many candidates"]["reason"]
        assert "more than 50 tokens" in reasons["too many tokens"]["reason"]
        # the session goes on: a valid query of the same party and of another are answered
        assert _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": ["Rome"]})["used"] == 1
        assert _ask("c", cfg, {"kind": "generate", "prompt": PROMPT, "max_tokens": 2})["used"] == 2
        for name in "abc":
            assert _ask(name, cfg, {"kind": "done"})["ok"]
        assert _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": ["Rome"]}, 5.0)["ok"] is False
    refused = [q for q in _queries(cfg) if q[4] == "refused"]
    assert [q[5] for q in refused[:len(MALFORMED) + 1]] == ["malformed"] * (len(MALFORMED) + 1)
    assert run.model.answered == [{"kind": "logprobs", "prompt": PROMPT, "candidates": ["Rome"]},
                                  {"kind": "generate", "prompt": PROMPT, "max_tokens": 2}]
    assert run.th.results["coordinator"].ok


def test_an_answer_opens_for_its_party_counter_and_direction_only(tmp_path):
    """The channel itself: a's answer to query 5 opens for a as answer 5 only: not for b (a redirected answer), not
    as answer 6 (re-numbered), not as a query (reflected), and not with the key the coordinator could derive
    from anything public."""
    cfg = served_config(tmp_path)
    secret = {n: load_identity(cfg.paths.keys / f"party-{n}.key_secret").sealing.private_bytes_raw() for n in "ab"}
    a, b = QueryChannel(cfg, "a", secret["a"]), QueryChannel(cfg, "b", secret["b"])
    solver_secret = load_identity(cfg.paths.keys / "solver.key_secret").sealing.private_bytes_raw()
    at_solver = sealing.channel_key(solver_secret, cfg.roster.parties["a"].sealing, cfg.roster.solver.sealing,
                                    statements.query_scope(cfg.session.id, cfg.digest, "a"))
    assert at_solver == a.key != b.key  # both ends derive the same key; another party another one
    plain = wire.encode_answer({"ok": True, "reason": "", "kind": "logprobs", "cost": 1, "used": 1, "budget": 3,
                                "logprobs": [-1.5], "tokens": [2]})
    label = statements.query_label(cfg.session.id, cfg.digest, "a", 5, "answer")
    sealed = sealing.encrypt_channel(at_solver, label, plain, bytes(12))
    assert len(sealed) == wire.ANSWER_FRAME_BYTES
    assert sealing.decrypt_channel(a.key, label, sealed) == plain
    for key, (party, counter, direction) in ((b.key, ("a", 5, "answer")), (a.key, ("a", 6, "answer")),
                                             (a.key, ("a", 5, "query")), (a.key, ("b", 5, "answer")),
                                             (bytes(32), ("a", 5, "answer"))):
        with pytest.raises(ProtectionError, match="authentication failed"):
            sealing.decrypt_channel(key, statements.query_label(cfg.session.id, cfg.digest, party, counter,
                                                                direction), sealed)
    assert len(a.seal({"kind": "done"}, 1)) == len(a.seal(MALFORMED["too many candidates"] | {"candidates": ["c"] * 16},
                                                          2)) == wire.QUERY_FRAME_BYTES  # one size for every query
    assert [a.next_counter() for _ in range(3)] == [1, 2, 3]  # written down: never reused, across processes too
    assert QueryChannel(cfg, "a", secret["a"]).next_counter() == 4


def test_the_query_command_prints_the_answer_and_the_budget_left(tmp_path, capsys):
    cfg = served_config(tmp_path, budget=3)
    path = str(next(tmp_path.glob("config-*.toml")))
    with served_session(cfg) as run:
        capsys.readouterr()
        assert main(["query", "--config", path, "--name", "a", "--prompt", PROMPT, "--candidates", f"{SECRET}, Rome",
                     "--json", str(tmp_path / "q.json")]) == 0
        out = capsys.readouterr().out
        assert f"{SECRET}  log P" in out and "Rome" in out and "budget: 2 of 3 forward passes used, 1 left" in out, out
        doc = json.loads((tmp_path / "q.json").read_text())
        assert doc["answer"]["ok"] and doc["query"]["candidates"] == [SECRET, "Rome"]
        assert (tmp_path / "q.json").stat().st_mode & 0o777 == 0o600  # the party's own query and answer
        assert main(["query", "--config", path, "--name", "a", "--prompt", PROMPT, "--generate", "2"]) == 1
        out = capsys.readouterr().out
        assert "refused: costs 2, and 1 of the budget of 3 forward passes are left" in out, out
        # a query that is not one the session answers is refused before anything is sent, in one line
        assert main(["query", "--config", path, "--name", "a", "--prompt", "x" * 2001, "--generate", "1"]) == 2
        assert "not a query this session answers" in capsys.readouterr().err
        for name in "abc":
            assert main(["query", "--config", path, "--name", name, "--done"]) == 0
    assert run.th.results["coordinator"].ok
    assert [q[:5] for q in _queries(cfg)] == [("a", 1, "logprobs", 2, "accepted"), ("a", 2, "generate", 0, "refused"),
                                              ("a", 3, "done", 0, "accepted"), ("b", 1, "done", 0, "accepted"),
                                              ("c", 1, "done", 0, "accepted")]


def test_the_query_command_and_party_outputs_say_what_a_release_policy_allows(tmp_path, capsys):
    weights = make_config(tmp_path / "w")
    assert main(["query", "--config", str(next((tmp_path / "w").glob("config-*.toml"))), "--name", "a", "--done"]) == 2
    assert "only a served release answers queries" in capsys.readouterr().err
    served_config(tmp_path / "s")
    path = str(next((tmp_path / "s").glob("config-*.toml")))
    assert main(["party", "--config", path, "--name", "a", "--requests", "none.jsonl", "--patch",
                 str(tmp_path / "p.safetensors")]) == 2
    assert "no party receives ΔW" in capsys.readouterr().err
    assert weights.session.release == "weights"  # the default


@pytest.mark.parametrize(("session", "why"), [
    ({"release": "served", "variant": "sequential"}, 'needs variant = "oneshot" and rounds = 1'),
    ({"release": "served", "variant": "oneshot", "rounds": 2}, 'needs variant = "oneshot" and rounds = 1'),
    ({"release": "streamed"}, "session.release must be one of"),
    ({"release": "served", "variant": "oneshot", "query_budget": 10**7 + 1}, "query_budget must be between 0 and"),
    ({"query_budget": -1}, "query_budget must be between 0 and"),
])
def test_a_release_setting_the_session_cannot_run_is_refused_at_load(tmp_path, session, why):
    from secure_collab.errors import ConfigError

    with pytest.raises(ConfigError, match=why):
        make_config(tmp_path, **session)


def test_session_init_writes_the_release_setting_and_it_is_in_the_digest(tmp_path, capsys):
    import tomllib
    from dataclasses import replace

    from secure_collab.config import load_config
    from secure_collab.keys import init_keys

    init_keys(tmp_path / "keys", ["a", "b", "c"])
    common = ["session", "init", "--model", "tiny-llama", "--roster", str(tmp_path / "keys/roster.toml"),
              "--id", "s-srv", "--cache-dir", str(tmp_path / "cache")]  # no -q: it would quiet later tests' logs
    assert main([*common, "--out", str(tmp_path / "served.toml"), "--release", "served", "--variant", "oneshot",
                 "--query-budget", "50"]) == 0
    text = (tmp_path / "served.toml").read_text()
    table = tomllib.loads(text)["session"]
    assert table["release"] == "served" and table["query_budget"] == 50
    assert "#" in next(line for line in text.splitlines() if line.startswith("release = "))  # commented
    served = load_config(tmp_path / "served.toml")
    assert main([*common, "--out", str(tmp_path / "weights.toml"), "--variant", "oneshot"]) == 0
    weights = load_config(tmp_path / "weights.toml")
    assert weights.session.release == "weights" and not weights.session.served  # the default: today's behaviour
    assert replace(served.session, release="weights", query_budget=1000) == weights.session
    assert served.digest != weights.digest  # the one difference changes the digest every message carries
    capsys.readouterr()
    assert main(["session", "show", "--config", str(tmp_path / "served.toml")]) == 0
    assert "release served (query budget 50 per party)" in capsys.readouterr().out
    # served with the sequential variant is refused in one line before a model is loaded, and nothing is written
    assert main([*common, "--out", str(tmp_path / "bad.toml"), "--release", "served"]) == 2
    err = capsys.readouterr().err
    assert 'needs variant = "oneshot"' in err and "loading" not in err and not (tmp_path / "bad.toml").exists()


def test_a_restarted_solver_serves_the_same_edited_model_and_remembers_each_budget(tmp_path):
    """The solver stops while serving; a new solver process (a fresh toy model: the base weights) on the same state
    re-applies its stored releases, so it answers as the first did, and it goes on counting a's budget and
    counters from its sealed record."""
    import threading

    from secure_collab.ledger import read_ledger

    cfg = served_config(tmp_path, budget=5)
    mass = float(sum(np.abs(d).sum() for d in reference_deltas(cfg, ["a", "b", "c"]).values()))
    scheme, stop = get_scheme(cfg.session.mode), threading.Event()
    first, second = ToyServedModel(cfg), ToyServedModel(cfg)
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, closed_form_solve, stop=stop, served=first))
    th.start("coordinator", Relaying(cfg, scheme).run)
    for n in "abc":
        e = SyntheticEngine(n, cfg)
        th.start(n, lambda n=n, e=e: run_party(cfg, n, scheme, e.compute_statistics, e.apply_delta))
    try:
        deadline = time.monotonic() + 40
        while not set("abc") <= set(th.results) and time.monotonic() < deadline:
            time.sleep(0.05)
        before = _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": [SECRET, "Rome"]})
        assert before["ok"] and before["used"] == 2
        stop.set()
        while "solver" not in th.results and time.monotonic() < deadline:
            time.sleep(0.05)
        assert th.results["solver"].reason == "solver stopped"
        th.start("solver2", lambda: run_solver(cfg, scheme, closed_form_solve, served=second))
        while time.monotonic() < deadline and not any(r["reason"] == "solver rejoined" for r in read_ledger(
                cfg.paths.ledger, ("messages",))["messages"]):
            time.sleep(0.05)
        after = _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": ["Rome"]})
        assert after["ok"] and after["used"] == 3, after  # the budget went on from 2
        assert after["logprobs"] == pytest.approx([-mass - 4], abs=1e-9)  # the stored releases, re-applied
        assert second.mass() == pytest.approx(first.mass(), abs=1e-12) and len(second.answered) == 1
        for n in "abc":
            assert _ask(n, cfg, {"kind": "done"})["ok"]
    finally:
        th.join(60)
    assert th.results["coordinator"].ok and th.results["solver2"].ok


class ForgingAnswers(Relaying):
    """Sends the party a forged answer (its own bytes in place of the solver's) before relaying the genuine one."""

    def _on_answer(self, m):
        if m.msg.frames:
            forged = self._msg(MsgType.ANSWER, body=dict(m.msg.body), frames=(bytes(wire.ANSWER_FRAME_BYTES),))
            self._send(m.msg.body["party"], forged)
        super()._on_answer(m)


def test_a_forged_answer_is_ignored_and_the_genuine_one_taken(tmp_path):
    cfg = served_config(tmp_path, budget=5)
    mass = float(sum(np.abs(d).sum() for d in reference_deltas(cfg, ["a", "b", "c"]).values()))
    with served_session(cfg, ForgingAnswers):
        answer = _ask("a", cfg, {"kind": "logprobs", "prompt": PROMPT, "candidates": ["Rome"]})
        assert answer["ok"] and answer["logprobs"] == pytest.approx([-mass - 4], abs=1e-9), answer
        for n in "abc":
            assert _ask(n, cfg, {"kind": "done"})["ok"]
