"""The release defences as a session setting (``session.defence``): refused at load when it is not one of the built
forms, written by `session init`, bound into the session digest, and run in a real networked session (solver,
coordinator and three parties in threads over CurveZMQ, the real party and solver engines on a tiny model), where
every released ΔW equals the simulated session's with the same parties and camouflage seeds."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tomllib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from network_doubles import Threads, make_config, simulation_of

from secure_collab.cli import main
from secure_collab.config import load_config
from secure_collab.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
HP = {"mom2_tokens": 600, "v_num_grad_steps": 4, "n_templates": 1, "template_length": 3}


def _one_line_error(capsys, command: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith(f"secure-collab {command}: error: "), err
    return err[0]


def _with_defence(path: Path, value: str) -> Path:
    """The session file at ``path`` with ``session.defence`` set to ``value`` (written as TOML text)."""
    text = path.read_text()
    assert "\ndefence = " not in text
    out = path.with_name("defended.toml")
    out.write_text(text.replace("[session]\n", f"[session]\ndefence = {json.dumps(value)}\n", 1))
    return out


@pytest.mark.parametrize(("value", "why"), [("decoys:0", "bad defence 'decoys:0'"), ("blur", "bad defence 'blur'"),
                                            ("rank:0", "bad defence 'rank:0'"), ("camouflage:2+", "bad defence ''"),
                                            ("noise:0", "bad defence 'noise:0'"),
                                            ("noise:-1", "bad defence 'noise:-1'"), ("delta:1e-9", "needs noise")])
def test_a_defence_that_is_not_built_or_not_a_form_is_refused_at_load_in_one_line(tmp_path, capsys, value, why):
    make_config(tmp_path)
    path = _with_defence(next(tmp_path.glob("config-*.toml")), value)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    message = str(exc.value)
    assert "\n" not in message and "session.defence" in message and why in message
    assert "camouflage:S (S > 0) | decoys:R[@P] (R >= 1; P in [0, 1]" in message  # it names the forms
    assert main(["session", "show", "--config", str(path)]) == 2  # every role loads the file the same way
    assert "session.defence" in _one_line_error(capsys, "session")


def test_the_defence_setting_loads_without_torch_and_is_in_the_digest(tmp_path):
    """The torch-free coordinator loads the session file, so parsing the setting must not load torch."""
    plain = make_config(tmp_path)
    path = _with_defence(next(tmp_path.glob("config-*.toml")), "rank:3+camouflage:0.5")
    probe = ("import json, sys; from secure_collab.config import load_config; c = load_config(sys.argv[1]); "
             "print(json.dumps([c.session.defence, c.digest, 'torch' in sys.modules]))")
    run = subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, cwd=ROOT,
                         timeout=120, check=True)
    defence, digest, torch_loaded = json.loads(run.stdout)
    assert defence == "rank:3+camouflage:0.5" and not torch_loaded
    defended = load_config(path)
    assert replace(defended.session, defence="none") == plain.session  # the one difference ...
    assert digest == defended.digest != plain.digest  # ... changes the digest every message carries


def test_session_init_writes_the_defence_and_the_file_loads(tmp_path, capsys):
    from secure_collab.keys import init_keys

    init_keys(tmp_path / "keys", ["a", "b", "c"])
    common = ["session", "init", "--model", "tiny-llama", "--roster", str(tmp_path / "keys/roster.toml"),
              "--id", "s-def", "--cache-dir", str(tmp_path / "cache"), "-q"]
    assert main([*common, "--out", str(tmp_path / "defended.toml"), "--defence", "camouflage:3"]) == 0
    text = (tmp_path / "defended.toml").read_text()
    assert tomllib.loads(text)["session"]["defence"] == "camouflage:3"
    assert "#" in next(line for line in text.splitlines() if line.startswith("defence = "))  # commented
    defended = load_config(tmp_path / "defended.toml")
    assert defended.session.defence == "camouflage:3"
    assert main(["session", "show", "--config", str(tmp_path / "defended.toml"), "--json", "-"]) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["defence"] == "camouflage:3" and "defence camouflage:3" in out.err
    # the default writes "none"; the two files differ in that setting only, and so in their digests
    assert main([*common, "--out", str(tmp_path / "plain.toml")]) == 0
    plain = load_config(tmp_path / "plain.toml")
    assert plain.session.defence == "none" and replace(defended.session, defence="none") == plain.session
    assert plain.digest != defended.digest
    # a bad setting is refused in one line before the model loads, and nothing is written
    capsys.readouterr()
    assert main([*common, "--out", str(tmp_path / "bad.toml"), "--defence", "blur"]) == 2
    assert "bad defence 'blur'" in _one_line_error(capsys, "session")
    assert not (tmp_path / "bad.toml").exists()


@pytest.mark.parametrize(("variant", "setting"), [("sequential", "camouflage:2+rank:2"),
                                                  ("oneshot", "camouflage:2+rank:2"),
                                                  ("sequential", "camouflage:2+decoys:2@0+rank:2")])
def test_a_defended_session_releases_what_the_simulation_does_at_the_truncated_rank(tmp_path, capitals, capsys,
                                                                                   variant, setting):
    """camouflage:2+rank:2 (and with decoys:2) over real sockets, shares mode: each party camouflages (and draws its
    decoys) with its own seeded generator (party i: random.Random(i)), the solver truncates; every ΔW released and
    applied equals run_edit's collab edit of the same parties with the same generators (so the generators are drawn
    from in the same order), has rank 2, and differs from the edit without camouflage (and decoys)."""
    from coordinator.server import run_coordinator
    from parties import run_party
    from parties.engine import PartyEditor
    from secure_collab.editing.defences import Defence, parse_defence
    from secure_collab.editing.memit import rel_diff_per_layer, restore, run_edit, snapshot, split_parties
    from secure_collab.ledger import Ledger
    from secure_collab.protection import get_scheme
    from solver.server import run_solver
    from solver.solve import SessionSolve

    cache = tmp_path / "cache"
    cfg = make_config(tmp_path, mode="shares", model="tiny-llama", d_k=96, d_v=64, layers=[1, 2], chunk_values=8192,
                      variant=variant,
                      defence=setting, value_bound=1e5, key_norm_bound=1e4, residual_norm_bound=1e4,
                      hparams=HP, network={"max_message_bytes": 1 << 20, "stage_timeout_s": 120.0,
                                           "solve_timeout_s": 120.0, "join_timeout_s": 60.0})
    names = ("a", "b", "c")
    split = split_parties(capitals[:6], 3)
    logs: dict[str, list[str]] = {n: [] for n in names}
    editors = {n: PartyEditor(cfg.session, split[i], cache=cache, log=logs[n].append, progress=False,
                              defence_rng=random.Random(i)) for i, n in enumerate(names)}
    solve = SessionSolve(cfg.session, cache=cache)
    scheme = get_scheme("shares")
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, solve))
    th.start("coordinator", lambda: run_coordinator(cfg, scheme))
    for n, ed in editors.items():
        th.start(n, lambda n=n, ed=ed: run_party(cfg, n, scheme, ed.compute_statistics, ed.apply_delta))
    th.join(240)
    assert th.results["coordinator"].ok, th.results["coordinator"].reason
    released = th.results["solver"].releases  # (round, layer) -> ΔW
    rounds = (0, 1) if "decoys" in setting else (0,)  # decoys: the repair round closes the session
    assert set(released) == {(r, layer) for r in rounds for layer in (1, 2)}
    for n, ed in editors.items():
        assert th.results[n].ok, (n, th.results[n].reason)
        assert all(np.array_equal(ed.applied[key], released[key]) for key in released), n
        assert any(line.startswith("camouflage on") and "2‖k‖" in line for line in logs[n]), logs[n]

    # the simulation of the same session: the same parties, targets' settings, C, templates and generators
    s = cfg.session
    lm, hp, covs, templates = simulation_of(s, cache)
    unedited = snapshot(lm, hp.layers)
    out = run_edit(lm, split, hp, covs, "collab", templates, defence=parse_defence(setting),
                   rngs=[random.Random(i) for i in range(3)])
    got = {layer: sum(torch.from_numpy(released[(r, layer)]) for r in rounds) for layer in s.layers}
    diffs = rel_diff_per_layer(got, out.deltas)
    assert max(diffs.values()) < 1e-9, diffs
    assert all(int(np.linalg.matrix_rank(released[(r, layer)])) == 2 for r in rounds for layer in s.layers)
    if "decoys" in setting:  # the repair round's release is the simulation's, and it pushed some decoys back
        repair = {layer: torch.from_numpy(released[(1, layer)]) for layer in s.layers}
        assert max(rel_diff_per_layer(repair, out.repair_deltas).values()) < 1e-9
        assert sum(out.repaired) > 0 and [ed.repairs is not None and len(ed.repairs) for ed in editors.values()] \
            == out.repaired
    if "decoys" in setting:  # each party's report counts its decoys whose answer the joint edit changed
        from secure_collab.editing.decoys import top1

        for (n, ed), d in zip(editors.items(), out.decoys, strict=True):  # on the simulation's edited model
            want = sum(a != b for a, b in zip(top1(lm, d.requests), d.answers, strict=True))
            assert ed.finish()["decoys"] == {"edits": 4, "answer_changed": want, "repaired": len(ed.repairs)}
            assert any(line.startswith(f"decoys: {want} of 4 decoy subjects' top-1 answer changed")
                       for line in logs[n]), logs[n]
    # control: without the camouflage (same targets, same rank) the release would be another one
    restore(lm, unedited)
    bare = run_edit(lm, split, hp, covs, "collab", templates, targets=out.targets, defence=Defence(0.0, 2))
    assert min(rel_diff_per_layer(got, bare.deltas).values()) > 1e-3

    # the coordinator's ledger records the session's defence, and `ledger show` displays it
    with Ledger(cfg.paths.ledger) as ledger:
        joining = [r for r in ledger.rows("stages") if r["event"] == "joining"]
    assert joining and all(json.loads(r["detail"])["defence"] == setting for r in joining)
    assert all(json.loads(r["detail"])["epsilon"] is None for r in joining)  # no noise: no ε
    capsys.readouterr()
    assert main(["ledger", "show", "--ledger", str(cfg.paths.ledger)]) == 0
    shown = capsys.readouterr().out
    assert f"session s1: defence {setting}" in shown
    if "decoys" in setting:  # the decoys never left a party; what the ledger says is that N counts them
        assert "the edit counts N include 2 secret decoy edits per real edit" in shown
        decoys = [r.subject for ed in editors.values() for d in ed.decoys.values() for r in d.requests]
        assert len(decoys) == 12 and decoys == [r.subject for d in out.decoys for r in d.requests]
        with Ledger(cfg.paths.ledger) as ledger:
            recorded = json.dumps({t: ledger.rows(t) for t in ("stages", "messages", "releases")}, default=str)
        assert not any(name in recorded for name in decoys if len(name) >= 6)


@pytest.mark.parametrize(("variant", "setting"), [("sequential", "noise:0.5"),
                                                  ("oneshot", "camouflage:2+rank:2+noise:0.5")])
def test_a_noised_session_releases_what_the_simulation_does_with_the_same_generators(tmp_path, capitals, capsys,
                                                                                   variant, setting):
    """noise:0.5 over real sockets, shares mode, alone and with camouflage and rank: each party clips to the declared
    κ = 32 (about half of tiny-llama's keys are longer) and ρ = 1 and adds its discrete Gaussian, keyed from its seeded
    generator (party i: random.Random(i), which also draws its decoys); the solver opens the noised sums (its checks
    allow for the noise) and solves with ΣG's PSD part. Every released and applied ΔW equals run_edit's with the same
    generators and the session's plan, differs from the release without defences, and the ledger and `session show`
    carry the session's (ε, δ)."""
    from coordinator.server import run_coordinator
    from parties import run_party
    from parties.engine import PartyEditor
    from secure_collab.editing.accounting import session_epsilon
    from secure_collab.editing.defences import parse_defence
    from secure_collab.editing.memit import rel_diff_per_layer, restore, run_edit, snapshot, split_parties
    from secure_collab.editing.noise import session_noise_plan
    from secure_collab.ledger import Ledger
    from secure_collab.protection import get_scheme
    from solver.server import run_solver
    from solver.solve import SessionSolve

    cache = tmp_path / "cache"
    cfg = make_config(tmp_path, mode="shares", model="tiny-llama", d_k=96, d_v=64, layers=[1, 2], chunk_values=8192,
                      variant=variant, defence=setting, value_bound=1e5, key_norm_bound=32.0,
                      residual_norm_bound=1.0,
                      hparams=HP, network={"max_message_bytes": 1 << 20, "stage_timeout_s": 120.0,
                                           "solve_timeout_s": 120.0, "join_timeout_s": 60.0})
    names = ("a", "b", "c")
    split = split_parties(capitals[:6], 3)
    logs: dict[str, list[str]] = {n: [] for n in names}
    editors = {n: PartyEditor(cfg.session, split[i], cache=cache, log=logs[n].append, progress=False,
                              defence_rng=random.Random(i)) for i, n in enumerate(names)}
    scheme = get_scheme("shares")
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, SessionSolve(cfg.session, cache=cache)))
    th.start("coordinator", lambda: run_coordinator(cfg, scheme))
    for n, ed in editors.items():
        th.start(n, lambda n=n, ed=ed: run_party(cfg, n, scheme, ed.compute_statistics, ed.apply_delta))
    th.join(240)
    assert th.results["coordinator"].ok, th.results["coordinator"].reason
    released = th.results["solver"].releases
    assert set(released) == {(0, 1), (0, 2)}
    for n, ed in editors.items():
        assert th.results[n].ok, (n, th.results[n].reason)
        assert all(np.array_equal(ed.applied[key], released[key]) for key in released), n
        assert any(line.startswith("noise on") and "‖k‖ ≤ 32" in line for line in logs[n]), logs[n]

    s = cfg.session
    plan = session_noise_plan(parse_defence(s.defence), s)
    lm, hp, covs, templates = simulation_of(s, cache)
    unedited = snapshot(lm, hp.layers)
    out = run_edit(lm, split, hp, covs, "collab", templates, defence=parse_defence(setting),
                   rngs=[random.Random(i) for i in range(3)], noise_plan=plan)
    got = {layer: torch.from_numpy(released[(0, layer)]) for layer in s.layers}
    diffs = rel_diff_per_layer(got, out.deltas)
    assert max(diffs.values()) < 1e-9, diffs
    restore(lm, unedited)
    bare = run_edit(lm, split, hp, covs, "collab", templates, targets=out.targets)
    assert min(rel_diff_per_layer(got, bare.deltas).values()) > 1e-2  # the noise (and the clipping) are there

    want = session_epsilon(parse_defence(s.defence), cfg)
    assert want is not None and want.releases == 2 and want.session > want.per_release > 0
    with Ledger(cfg.paths.ledger) as ledger:
        joining = [json.loads(r["detail"]) for r in ledger.rows("stages") if r["event"] == "joining"]
    assert joining and all(d["defence"] == setting and d["epsilon"] == want.session and d["delta"] == 1e-6
                           and d["epsilon_per_release"] == want.per_release for d in joining)
    capsys.readouterr()
    assert main(["ledger", "show", "--ledger", str(cfg.paths.ledger)]) == 0
    assert f"session s1: defence {setting}, (ε, δ) = ({want.session:.4g}, 1e-06)" in capsys.readouterr().out
    path = next(tmp_path.glob("config-*.toml"))
    assert main(["session", "show", "--config", str(path), "--json", "-"]) == 0
    shown = capsys.readouterr()
    assert json.loads(shown.out)["dp"]["epsilon"] == want.session and "(ε, δ)" in shown.err


def test_epsilon_is_null_without_noise_and_a_noise_that_does_not_fit_is_refused_in_one_line(tmp_path, capsys):
    from secure_collab.session_file import describe

    assert describe(make_config(tmp_path / "plain", defence="rank:2"))["dp"] is None
    # noise below the ckks encoding's step (2^-13 at value_bound 1e5) cannot be added as accounted: refused at load
    with pytest.raises(ConfigError) as exc:
        make_config(tmp_path / "bad", mode="ckks", value_bound=1e5, key_norm_bound=1e-3, residual_norm_bound=1e-3,
                    defence="noise:1e-6")
    message = str(exc.value)
    assert "\n" not in message and "session.defence: noise:1e-06 gives each party σ" in message
    assert "below the encoding's step" in message
    assert main(["session", "show", "--config", str(next((tmp_path / "bad").glob("config-*.toml")))]) == 2
    assert "below the encoding's step" in _one_line_error(capsys, "session")


def test_session_init_declares_the_clipping_bounds_and_refuses_noise_that_does_not_fit(tmp_path, capsys):
    from secure_collab.keys import init_keys

    init_keys(tmp_path / "keys", ["a", "b", "c"])
    common = ["session", "init", "--model", "tiny-llama", "--roster", str(tmp_path / "keys/roster.toml"),
              "--id", "s-noise", "--cache-dir", str(tmp_path / "cache"), "-q", "--defence", "noise:2"]
    out = tmp_path / "noised.toml"
    assert main([*common, "--out", str(out), "--key-norm-bound", "16", "--residual-norm-bound", "32"]) == 0
    session = tomllib.loads(out.read_text())["session"]
    assert (session["key_norm_bound"], session["residual_norm_bound"], session["defence"]) == (16.0, 32.0, "noise:2")
    capsys.readouterr()
    assert main(["session", "show", "--config", str(out), "--json", "-"]) == 0
    shown = capsys.readouterr()
    dp = json.loads(shown.out)["dp"]
    releases = len(session["layers"]) * session["rounds"]
    assert dp["sensitivity"] == pytest.approx(16 * (16**2 + 32**2) ** 0.5) and dp["releases"] == releases
    assert f"({dp['epsilon']:.4g}, 1e-06) over {releases} releases" in shown.err
    # the default bounds (1000) leave a noise of σ ≈ 10^6 per party: refused in one line, nothing written
    assert main([*common, "--out", str(tmp_path / "bad.toml")]) == 2
    assert "leaves no room for 40σ" in _one_line_error(capsys, "session")
    assert not (tmp_path / "bad.toml").exists()


def test_with_tags_the_solver_expects_the_decoys_in_n_and_the_session_completes(tmp_path, capitals):
    """decoys:2 with dedupe (tags and the solver's edit-count check on): each party's N is 3 × its kept requests, the
    solver's expected count (tags − withdrawn + augmented) × (1 + R) agrees, every step is released, and the decoys
    are drawn after the verdicts (a duplicate's weight is 1/2, its decoys' 1); the repair round (no tags, no
    decisions) is released too."""
    from coordinator.server import run_coordinator
    from parties import run_party
    from parties.engine import PartyEditor
    from secure_collab.protection import get_scheme
    from solver.server import run_solver
    from solver.solve import SessionSolve

    cache = tmp_path / "cache"
    cfg = make_config(tmp_path, mode="shares", model="tiny-llama", d_k=96, d_v=64, layers=[1, 2], chunk_values=8192,
                      defence="decoys:2@0", dedupe=True, max_edits_per_party=4, value_bound=1e5, key_norm_bound=1e4,
                      residual_norm_bound=1e4, hparams=HP,
                      network={"max_message_bytes": 1 << 20, "stage_timeout_s": 120.0, "solve_timeout_s": 120.0,
                               "join_timeout_s": 60.0})
    split = [capitals[0:2], capitals[2:4], [capitals[4], capitals[0]]]  # capitals[0] held by a and c
    editors = {n: PartyEditor(cfg.session, split[i], cache=cache, progress=False, defence_rng=random.Random(i))
               for i, n in enumerate("abc")}
    scheme = get_scheme("shares")
    th = Threads()
    th.start("solver", lambda: run_solver(cfg, scheme, SessionSolve(cfg.session, cache=cache)))
    th.start("coordinator", lambda: run_coordinator(cfg, scheme))
    for n, ed in editors.items():
        th.start(n, lambda n=n, ed=ed: run_party(cfg, n, scheme, ed.compute_statistics, ed.apply_delta, tagger=ed))
    th.join(240)
    assert th.results["coordinator"].ok, th.results["coordinator"].reason
    assert set(th.results["solver"].releases) == {(0, 1), (0, 2), (1, 1), (1, 2)}
    for n, ed in editors.items():
        assert th.results[n].ok, (n, th.results[n].reason)
        assert len(ed.decoys[0]) == 2 * len(ed.plan[0]) == 4 and ed.repairs is not None
    assert [float(w) for w in editors["c"].weights[0]] == [1.0, 0.5]
