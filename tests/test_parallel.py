"""A party over two real processes (torch.distributed, gloo): its statistics equal one process's.

The reference is the single-process path (``PartyEditor`` without a shard, ``layer_covariances`` without one).
Tolerance 1e-12 relative (max |a − b| / max |b|): with one request per forward batch (the CPU default) every key,
residual and target of a worker is the lone process's bit for bit, so the sums differ only in the order of their
float64 additions (a few ulp, ~1e-16); 1e-12 leaves room for that and nothing else.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from tests.test_session_engine import _session

TOL = 1e-12
DELTA_SCALE = 1e-3


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _steps(session):
    """The calls a party makes in a round: targets and tags, the solver's verdicts, statistics per layer, ΔW."""
    verdicts = [(0, "augment", "conflict", "ab" * 32, 1), (1, "withdraw", "conflict", "cd" * 32, 1),
                (2, "keep", "duplicate", "ef" * 32, 2), (3, "keep", "none", "01" * 32, 1)]
    return verdicts, [(layer, torch.full((session.d_v, session.d_k), DELTA_SCALE * (k + 1), dtype=torch.float64))
                      for k, layer in enumerate(session.layers)]


def _run(editor, session, verdicts, deltas) -> dict[str, torch.Tensor]:
    out = {}
    editor.tag_inputs(0)
    editor.decided(0, verdicts)
    for layer, delta in deltas:
        stats = editor.compute_statistics(0, layer)
        out[f"G{layer}"], out[f"B{layer}"] = torch.from_numpy(stats["G"]), torch.from_numpy(stats["B"])
        out[f"N{layer}"] = torch.tensor([stats["N"]])
        editor.apply_delta(layer, delta.numpy())
    return out


def _worker(rank: int, port: int, model: str, variant: str, requests: list, cache: str, out: str) -> None:
    torch.set_num_threads(1)
    from safetensors.torch import save_file

    from parties.engine import PartyEditor
    from parties.workers import Launch, LeadEditor, WorkerGroup, serve
    from secure_collab.covariance import layer_covariances

    session = _session(Path(cache), model=model, variant=variant, rounds=1, dedupe=True,
                       **({"d_k": 128, "d_v": 64} if model == "tiny-gpt2" else {}))
    group = WorkerGroup.join(Launch(rank, 2, rank, f"tcp://127.0.0.1:{port}"), "cpu")
    try:
        editor = PartyEditor(session, requests, cache=Path(cache), log=lambda _m: None, progress=False,
                             target_cache=False, shard=group.shard)
        covs = layer_covariances(editor.lm, session.layers, tokens=600, max_seq_len=32, use_cache=False,
                                 progress=False, shard=group.shard)
        group.ready()
        if rank == 0:
            verdicts, deltas = _steps(session)
            result = _run(LeadEditor(editor, group), session, verdicts, deltas)
            result.update({f"C{layer}": c for layer, c in covs.items()})
            save_file({k: v.contiguous() for k, v in result.items()}, out)
        else:
            serve(editor, group, session.d_v, session.d_k)
    finally:
        group.close()


def _reference(model: str, variant: str, requests: list, cache: Path) -> dict[str, torch.Tensor]:
    from parties.engine import PartyEditor
    from secure_collab.covariance import layer_covariances

    session = _session(cache, model=model, variant=variant, rounds=1, dedupe=True,
                       **({"d_k": 128, "d_v": 64} if model == "tiny-gpt2" else {}))
    editor = PartyEditor(session, requests, cache=cache, log=lambda _m: None, progress=False, target_cache=False)
    covs = layer_covariances(editor.lm, session.layers, tokens=600, max_seq_len=32, use_cache=False,
                             progress=False)
    verdicts, deltas = _steps(session)
    out = _run(editor, session, verdicts, deltas)
    out.update({f"C{layer}": c for layer, c in covs.items()})
    return out


@pytest.mark.parametrize(("model", "variant"), [("tiny-gpt2", "sequential"), ("tiny-llama", "oneshot")])
def test_two_gloo_workers_give_the_single_process_statistics(tmp_path, capitals, model, variant):
    requests = [*capitals[:4], capitals[0], capitals[4]]  # a repeat (withheld by dedupe) and an odd count
    out = tmp_path / "dist.safetensors"
    mp.start_processes(_worker, args=(_port(), model, variant, requests, str(tmp_path), str(out)), nprocs=2,
                       start_method="spawn", join=True)
    from safetensors.torch import load_file

    got = load_file(str(out))
    want = _reference(model, variant, requests, tmp_path)
    assert sorted(got) == sorted(want)
    rel = {}
    for key, ref in want.items():
        if key.startswith("N"):
            assert torch.equal(got[key], ref), key  # N: 3 kept + 2 augmented
            continue
        assert got[key].dtype == torch.float64
        rel[key] = float((got[key] - ref).abs().max() / ref.abs().max())
    print(f"{model} {variant}: max relative difference {max(rel.values()):.3g}", rel)
    assert max(rel.values()) <= TOL, rel
    assert all(float(want[k].abs().max()) > 0 for k in rel)  # nothing vacuous


@pytest.mark.parametrize(("n", "batch", "world"), [(6, 1, 2), (7, 1, 3), (5, 2, 2), (9, 4, 2), (3, 0, 2), (1, 1, 3),
                                                   (0, 1, 2), (10, 0, 4)])
def test_shares_are_whole_batches_that_cover_the_requests_once(n, batch, world):
    from secure_collab.parallel import Shard

    shares = [Shard(r, world).rows(n, batch) for r in range(world)]
    assert [i for s in shares for i in s] == list(range(n))  # contiguous, in order, each once
    if batch:
        assert all(s.start % batch == 0 for s in shares if len(s))  # batches are not cut
    unit = batch or max(1, -(-n // world))
    batches = [-(-len(s) // unit) for s in shares]
    assert max(batches) - min(batches) <= 1  # near-equal in batches


def test_the_cli_default_worker_timeout_is_the_libraries():
    from parties.workers import DEFAULT_WORKER_TIMEOUT_S
    from secure_collab.cli.party import DEFAULT_WORKER_TIMEOUT_S as CLI

    assert CLI == DEFAULT_WORKER_TIMEOUT_S


def test_device_map_is_opt_in_and_gives_the_same_model_on_a_cpu(capitals):
    """accelerate's device_map path (on a CPU-only host everything lands on the CPU): the same weights and keys as
    the default path; the default path is untouched (no accelerate hooks)."""
    from secure_collab.editing.keys import compute_keys
    from secure_collab.models import load_model

    plain, spread = load_model("tiny-llama"), load_model("tiny-llama", device_map="auto")
    assert spread.source_digest == plain.source_digest and spread.device.type == "cpu"
    assert not hasattr(plain.model, "hf_device_map") and not hasattr(plain.model.model, "_hf_hook")
    a = compute_keys(plain, capitals[:2], 1, ["{}"], 1)
    b = compute_keys(spread, capitals[:2], 1, ["{}"], 1)
    assert torch.equal(a, b)
