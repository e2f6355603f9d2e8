"""A party over several processes: worker 0 takes part in the session, the others compute their share of it.

Launch: ``secure-collab party --workers W ...`` starts W − 1 copies of its own command as workers on this host, or
``torchrun --nproc-per-node W -m secure_collab party ...`` starts all W (rank 0 joins the session). Either way the
environment is torchrun's: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (``Launch.from_environment``).

Every worker loads the model and a ``parties.engine.PartyEditor`` with the same requests and ``Shard``; worker 0
sends the others each call that touches the shared state, before making it itself (``LeadEditor``), and they make the
same call (``serve``), so the collectives inside the editor meet in the same order. The command is a broadcast
int64 header (op, round, layer, payload kind, two sizes) and its payload: the solver's verdicts as JSON bytes, or ΔW
as float64 of the layer's shape. Nothing is pickled.

Two process groups: ``control`` (gloo) carries the commands, and a worker may wait there as long as the session lasts
(``idle_timeout``); ``sums`` (gloo on a CPU, NCCL on GPUs) carries the targets and statistics, where a worker waits
for the slowest one's share at most ``worker_timeout``. A worker that dies closes its sockets, so the others fail at
their next collective at once, in one line (``WorkerLost``), instead of waiting.
"""

from __future__ import annotations

import datetime
import enum
import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from secure_collab.errors import ConfigError, UserError
from secure_collab.parallel import Shard

DEFAULT_WORKER_TIMEOUT_S = 3600.0  # a worker's longest wait for the others' share of targets or statistics
JOIN_TIMEOUT = datetime.timedelta(seconds=300)  # for every worker to reach the rendezvous (before loading the model)
IDLE_TIMEOUT = datetime.timedelta(days=30)  # waiting for worker 0's next command (the session's own pace)
HEADER = 6  # int64: op, round, layer, payload kind, size 0, size 1


class WorkerLost(UserError, RuntimeError):
    """A worker of this party stopped (or cannot be reached): the party cannot compute its share."""


class Op(enum.IntEnum):
    STOP = 0
    STATS = 1  # compute_statistics(round, layer)
    APPLY = 2  # apply_delta(layer, ΔW)
    PLAN = 3  # tag_inputs(round): the round's targets and withheld requests
    DECIDED = 4  # decided(round, verdicts)


class Payload(enum.IntEnum):
    NONE = 0
    JSON = 1  # uint8, size 0 bytes
    FLOAT64 = 2  # (size 0, size 1)


MAX_JSON_BYTES = 1 << 24


@dataclass(frozen=True)
class Launch:
    rank: int
    world: int
    local_rank: int
    init_method: str = "env://"

    @staticmethod
    def from_environment(workers: int) -> Launch | None:
        """The launch torchrun (or worker 0's spawn) described in the environment; None when this party is one
        process. ``workers``: the --workers option (1 under torchrun, or the same count)."""
        if workers < 1:
            raise ConfigError(f"--workers must be at least 1, got {workers}")
        world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        if world > 1:
            if workers not in (1, world):
                raise ConfigError(f"--workers {workers} under a launcher of {world} processes (WORLD_SIZE): give "
                                  "one of them, not both")
            rank = int(os.environ["RANK"])
            return Launch(rank, world, int(os.environ.get("LOCAL_RANK", rank)))
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_workers(argv: list[str], workers: int) -> tuple[Launch, list[subprocess.Popen]]:
    """Start workers 1..W−1 as copies of this command (``python -m secure_collab ARGV``) with torchrun's environment;
    this process is worker 0 and hosts the rendezvous on a free loopback port."""
    port = free_port()
    children = []
    for rank in range(1, workers):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
               "LOCAL_RANK": str(rank), "WORLD_SIZE": str(workers)}
        children.append(subprocess.Popen([sys.executable, "-m", "secure_collab", *argv], env=env))
    return Launch(0, workers, 0, f"tcp://127.0.0.1:{port}"), children


def worker_device(device: str, local_rank: int) -> str:
    """auto or cuda: this worker's own GPU (cuda:LOCAL_RANK) when there are GPUs; anything else as given."""
    if device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{local_rank}"
    return "cpu" if device == "auto" else device


@dataclass
class WorkerGroup:
    """This process's place among the party's workers: the command channel and the ``Shard`` of the sums."""

    launch: Launch
    control: Any  # the gloo group of the commands
    shard: Shard
    children: list[subprocess.Popen] = field(default_factory=list)

    @staticmethod
    def join(launch: Launch, device: str, worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
             children: list[subprocess.Popen] | None = None) -> WorkerGroup:
        import torch.distributed as dist

        on_gpu = torch.device(device).type == "cuda"
        try:
            dist.init_process_group("gloo", init_method=launch.init_method, rank=launch.rank,
                                    world_size=launch.world, timeout=JOIN_TIMEOUT)
            control = dist.new_group(backend="gloo", timeout=IDLE_TIMEOUT)
            sums = dist.new_group(backend="nccl" if on_gpu else "gloo",
                                  timeout=datetime.timedelta(seconds=worker_timeout_s))
        except (RuntimeError, ValueError) as exc:
            for child in children or []:
                child.kill()
            raise WorkerLost(f"the party's {launch.world} workers could not meet: {_first_line(exc)}") from None
        shard = Shard(launch.rank, launch.world, sums, torch.device(device) if on_gpu else None)
        return WorkerGroup(launch, control, shard, list(children or []))

    def ready(self) -> None:
        """Every worker has its model and editor (a worker that failed to load has exited: this fails at once)."""
        with self.watched("start-up (loading the model)"):
            self.shard.sum([torch.ones(1)])

    # ---- the command channel ------------------------------------------------------------------------------------
    def send(self, op: Op, round_: int = 0, layer: int = 0, payload: Any = None) -> None:
        """Worker 0: tell the others to make this call (then make it)."""
        import torch.distributed as dist

        kind, data = Payload.NONE, None
        if isinstance(payload, np.ndarray):
            kind, data = Payload.FLOAT64, torch.from_numpy(np.ascontiguousarray(payload, dtype=np.float64))
        elif payload is not None:
            kind = Payload.JSON
            data = torch.frombuffer(bytearray(json.dumps(payload).encode()), dtype=torch.uint8)
        shape = (0, 0) if data is None else (data.shape[0], data.shape[1] if data.ndim == 2 else 0)
        header = torch.tensor([int(op), round_, layer, int(kind), *shape], dtype=torch.int64)
        dist.broadcast(header, src=0, group=self.control)
        if data is not None:
            dist.broadcast(data, src=0, group=self.control)

    def receive(self, d_v: int, d_k: int) -> tuple[Op, int, int, Any]:
        """Workers 1..: the next call worker 0 makes, checked before use."""
        import torch.distributed as dist

        header = torch.zeros(HEADER, dtype=torch.int64)
        dist.broadcast(header, src=0, group=self.control)
        op_, round_, layer, kind_, n0, n1 = (int(x) for x in header)
        try:
            op, kind = Op(op_), Payload(kind_)
        except ValueError:
            raise WorkerLost(f"worker 0 sent an unknown command {op_}/{kind_}") from None
        if kind is Payload.FLOAT64:
            if (n0, n1) != (d_v, d_k):
                raise WorkerLost(f"worker 0 sent ΔW of shape {(n0, n1)}, not the layer's {(d_v, d_k)}")
            data = torch.zeros(n0, n1, dtype=torch.float64)
            dist.broadcast(data, src=0, group=self.control)
            return op, round_, layer, data.numpy()
        if kind is Payload.JSON:
            if not 0 <= n0 <= MAX_JSON_BYTES:
                raise WorkerLost(f"worker 0 sent {n0} bytes of JSON")
            raw = torch.zeros(n0, dtype=torch.uint8)
            dist.broadcast(raw, src=0, group=self.control)
            return op, round_, layer, json.loads(raw.numpy().tobytes().decode())
        return op, round_, layer, None

    # ---- failures and the end -----------------------------------------------------------------------------------
    @contextmanager
    def watched(self, what: str) -> Iterator[None]:
        """A collective failed because a worker stopped: one line naming what was being done and who exited."""
        try:
            yield
        except RuntimeError as exc:
            if isinstance(exc, WorkerLost) or not _is_collective_error(exc):
                raise
            raise WorkerLost(f"a worker of this party stopped during {what} ({self.exits() or 'see its log'}): "
                             f"{_first_line(exc)}") from None

    def exits(self) -> str:
        codes = [(i + 1, c.poll()) for i, c in enumerate(self.children)]
        return ", ".join(f"worker {rank} exited with code {code}" for rank, code in codes if code is not None)

    def close(self, timeout_s: float = 60.0) -> None:
        """Worker 0: tell the others to stop (if they can still hear), wait for the spawned ones, leave the group."""
        import torch.distributed as dist

        if self.launch.rank == 0:
            try:
                self.send(Op.STOP)
            except RuntimeError:
                pass  # one is gone already: the others fail at their next collective and exit
        for child in self.children:
            try:
                child.wait(timeout_s)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if dist.is_initialized():
            dist.destroy_process_group()


def _is_collective_error(exc: BaseException) -> bool:
    import torch.distributed as dist

    text = str(exc)
    return isinstance(exc, dist.DistError) or "gloo" in text or "Connection closed" in text or "NCCL" in text


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else type(exc).__name__


class LeadEditor:
    """Worker 0's side of the editor: each call that changes or reads the shared state is sent to the others first."""

    def __init__(self, editor: Any, group: WorkerGroup) -> None:
        self.editor, self.group = editor, group

    def compute_statistics(self, round_: int, layer: int) -> dict[str, Any]:
        with self.group.watched(f"the statistics of round {round_} layer {layer}"):
            self.group.send(Op.STATS, round_, layer)
            out: dict[str, Any] = self.editor.compute_statistics(round_, layer)
            return out

    def apply_delta(self, layer: int, delta: np.ndarray) -> None:
        with self.group.watched(f"applying ΔW of layer {layer}"):
            self.group.send(Op.APPLY, 0, layer, np.asarray(delta, dtype=np.float64))
            self.editor.apply_delta(layer, delta)

    def tag_inputs(self, round_: int) -> list[tuple[bytes, bytes]]:
        with self.group.watched(f"the targets of round {round_}"):
            self.group.send(Op.PLAN, round_)
            out: list[tuple[bytes, bytes]] = self.editor.tag_inputs(round_)
            return out

    def decided(self, round_: int, verdicts: list) -> None:
        with self.group.watched(f"the solver's decision of round {round_}"):
            self.group.send(Op.DECIDED, round_, 0, [list(v) for v in verdicts])
            self.editor.decided(round_, verdicts)


def serve(editor: Any, group: WorkerGroup, d_v: int, d_k: int) -> None:
    """Workers 1..: make each call worker 0 makes, until it says stop (or is gone: ``WorkerLost``)."""
    handlers: dict[Op, Callable[[int, int, Any], Any]] = {
        Op.STATS: lambda r, lay, _: editor.compute_statistics(r, lay),
        Op.APPLY: lambda _r, lay, delta: editor.apply_delta(lay, delta),
        Op.PLAN: lambda r, _lay, _p: editor.tag_inputs(r),
        Op.DECIDED: lambda r, _lay, verdicts: editor.decided(r, [tuple(v) for v in verdicts]),
    }
    while True:
        try:
            op, round_, layer, payload = group.receive(d_v, d_k)
        except RuntimeError as exc:
            if isinstance(exc, WorkerLost) or not _is_collective_error(exc):
                raise
            raise WorkerLost(f"worker {group.launch.rank}: worker 0 of this party (the one in the session) is gone: "
                             f"{_first_line(exc)}") from None
        if op is Op.STOP:
            return
        with group.watched(f"{op.name.lower()} of round {round_} layer {layer}"):
            handlers[op](round_, layer, payload)
