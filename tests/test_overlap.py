"""The solver's overlap/conflict rule on tags, and the normalised fact inputs the tags are computed from."""

from __future__ import annotations

import pytest

from secure_collab.data.requests import Request
from secure_collab.overlap import AUGMENT, KEEP, WITHDRAW, Applied, decide, fact_inputs, relation_key

PRIO = ["a", "b", "c"]


def _t(s: str, o: str) -> tuple[bytes, bytes]:
    return (b"sr:" + s.encode(), b"sro:" + s.encode() + b"/" + o.encode())


def _actions(d, party):
    return [v.action for v in d.verdicts[party]]


def test_normalised_inputs_ignore_case_spacing_and_unicode_form_and_follow_the_format():
    a = Request(subject="Danielle  Darrieux", prompt="The mother tongue of {} is", target_new="English",
                relation="P103")
    b = Request(subject="danielle darrieux", prompt="{} spoke", target_new="ENGLISH ", relation="p103")
    assert fact_inputs(a) == fact_inputs(b)  # CounterFact: the relation id, not the prompt
    z1 = Request(subject="Paris", prompt="Which country is {} in?", target_new="Italy")
    z2 = Request(subject="Paris", prompt="Where is {}?", target_new="Italy")
    assert relation_key(z1) == "template:which country is {} in?"
    assert fact_inputs(z1) != fact_inputs(z2)  # zsRE / JSONL: the template with the subject removed
    assert fact_inputs(Request(subject="ｐａｒｉｓ", prompt="Which country is {} in?", target_new="Italy")) == \
        fact_inputs(z1)  # NFKC
    # length prefixes: moving text between fields changes the input
    x = Request(subject="ab", prompt="{} c", target_new="d", relation="r")
    y = Request(subject="a", prompt="{} c", target_new="d", relation="br")
    assert fact_inputs(x)[0] != fact_inputs(y)[0]
    assert fact_inputs(a)[0] != fact_inputs(a)[1]


def _holders(d, party):
    return [v.holders for v in d.verdicts[party]]


def test_a_duplicate_counts_once_and_no_copy_is_withdrawn():
    tags = {"a": [_t("s1", "o")], "b": [_t("s1", "o"), _t("s2", "o")], "c": [_t("s1", "o")]}
    d = decide(tags, round_=0, label=b"L", dedupe=True, policy="none", priority=PRIO)
    assert _actions(d, "a") == [KEEP] and _actions(d, "b") == [KEEP, KEEP] and _actions(d, "c") == [KEEP]
    assert _holders(d, "a") == [3] and _holders(d, "b") == [3, 1] and _holders(d, "c") == [3]  # 1/3 each: one copy
    assert d.verdicts["a"][0].weight + d.verdicts["b"][0].weight + d.verdicts["c"][0].weight == pytest.approx(1.0)
    assert d.verdicts["a"][0].kind == "duplicate" and d.verdicts["b"][1].kind == ""
    assert [k for _, k in d.records] == ["duplicate"]
    assert d.verdicts["a"][0].decision == d.verdicts["c"][0].decision == d.records[0][0]
    assert all(b"s1" not in did.encode() for did, _ in d.records)  # an id, not the tag
    nod = decide(tags, round_=0, label=b"L", dedupe=False, policy="none", priority=PRIO)
    assert all(v.action == KEEP and v.holders == 1 for vs in nod.verdicts.values() for v in vs) and nod.records == []
    # decision ids are bound to the round's label
    assert decide(tags, round_=1, label=b"M", dedupe=True, policy="none", priority=PRIO).records != d.records


def test_a_party_repeating_a_tag_is_one_holder_and_cannot_dilute_another():
    """b tags c's fact five times: b's repeats withdraw (its own), c keeps at 1/2, not 1/6."""
    tags = {"b": [_t("s1", "o")] * 5, "c": [_t("s1", "o")]}
    d = decide(tags, round_=0, label=b"L", dedupe=True, policy="none", priority=PRIO)
    assert _actions(d, "b") == [KEEP] + [WITHDRAW] * 4 and _holders(d, "b") == [2, 1, 1, 1, 1]
    assert _actions(d, "c") == [KEEP] and _holders(d, "c") == [2]
    assert "own repeat" in d.verdicts["b"][1].reason
    won = decide({"a": [_t("s", "o2")] * 3, "b": [_t("s", "o2")], "c": [_t("s", "o1")]}, round_=0, label=b"L",
                 dedupe=True, policy="priority", priority=PRIO)
    assert _actions(won, "a") == [AUGMENT, WITHDRAW, WITHDRAW] and _holders(won, "a") == [2, 1, 1]
    assert _actions(won, "b") == [KEEP] and _holders(won, "b") == [2] and _actions(won, "c") == [WITHDRAW]


def test_a_fact_applied_in_an_earlier_round_is_kept_at_its_share():
    """A tag in round 0 proves nothing was applied: later holders keep it (near-zero residual if it was)."""
    history = {b"sr:s1": Applied(b"sro:s1/o", "c", 0)}
    d = decide({"a": [_t("s1", "o")], "b": [_t("s1", "o")]}, round_=1, label=b"L", dedupe=True, policy="none",
               priority=PRIO, history=history)
    assert _actions(d, "a") == [KEEP] and _actions(d, "b") == [KEEP]
    assert _holders(d, "a") == [2] and _holders(d, "b") == [2]
    assert "earlier round" in d.verdicts["a"][0].reason and [k for _, k in d.records] == ["duplicate"]
    alone = decide({"a": [_t("s1", "o")]}, round_=1, label=b"L", dedupe=True, policy="none", priority=PRIO,
                   history=history)
    assert _actions(alone, "a") == [KEEP] and _holders(alone, "a") == [1] and alone.verdicts["a"][0].kind == "duplicate"
    assert d.applied == {} and alone.applied == {}  # the earlier record stands


@pytest.mark.parametrize(("policy", "winner"), [("priority", "o2"), ("majority", "o1"), ("first", "o2")])
def test_conflict_policies_pick_a_winner_that_augments(policy, winner):
    # a (top priority) wants o2; b and c want o1. Under "first" nothing was applied before, so the declared
    # priority decides: the order in which tags reach the solver is the coordinator's to choose (red team 3)
    tags = {"a": [_t("s", "o2")], "b": [_t("s", "o1")], "c": [_t("s", "o1")]}
    d = decide(tags, round_=0, label=b"L", dedupe=True, policy=policy, priority=PRIO)
    if winner == "o2":
        assert _actions(d, "a") == [AUGMENT] and _actions(d, "b") == [WITHDRAW] and _actions(d, "c") == [WITHDRAW]
        assert d.verdicts["b"][0].kind == "conflict" and _holders(d, "a") == [1]
    else:  # the winner's second backer keeps its copy: each at 1/2, so the winning object counts once
        assert _actions(d, "b") == [AUGMENT] and _actions(d, "a") == [WITHDRAW] and _actions(d, "c") == [KEEP]
        assert d.verdicts["c"][0].kind == "duplicate" and d.verdicts["a"][0].kind == "conflict"
        assert _holders(d, "b") == [2] and _holders(d, "c") == [2] and _holders(d, "a") == [1]
    assert [k for _, k in d.records] == ["conflict"]
    assert d.applied[b"sr:s"].sro == b"sro:s/" + winner.encode()


def test_conflict_with_an_applied_fact_and_the_unresolved_case():
    history = {b"sr:s": Applied(b"sro:s/o1", "c", 0)}
    tags = {"a": [_t("s", "o2")], "b": [_t("s", "o3")]}
    first = decide(tags, round_=1, label=b"L", dedupe=True, policy="first", priority=PRIO, history=history)
    assert _actions(first, "a") == [WITHDRAW] and _actions(first, "b") == [WITHDRAW]  # the applied one stands
    again = decide({"a": [_t("s", "o1")], "b": [_t("s", "o3")]}, round_=1, label=b"L", dedupe=True, policy="first",
                   priority=PRIO, history=history)
    assert _actions(again, "a") == [KEEP] and _holders(again, "a") == [1]  # the applied object, tagged again: kept
    prio = decide(tags, round_=1, label=b"L", dedupe=True, policy="priority", priority=PRIO, history=history)
    assert _actions(prio, "a") == [AUGMENT] and _actions(prio, "b") == [WITHDRAW]  # a overrides c's edit
    none = decide(tags, round_=1, label=b"L", dedupe=True, policy="none", priority=PRIO, history=history)
    assert _actions(none, "a") == [KEEP] and _actions(none, "b") == [KEEP] and none.records == []


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="unknown conflict policy"):
        decide({}, round_=0, label=b"", dedupe=True, policy="vote", priority=PRIO)
    with pytest.raises(ValueError, match="without a priority"):
        decide({"z": []}, round_=0, label=b"", dedupe=True, policy="none", priority=PRIO)
