"""Interleaved repeated timing, medians with their spread, and what machine and versions a figure came from."""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from typing import Any


def interleaved(variants: dict[str, Callable[[], Any]], reps: int) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run every variant once per repetition, in turn (A B A B ...), and time each run: ({name: seconds per
    run}, {name: the last run's return value}). Interleaving spreads the load of a shared machine evenly."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    last: dict[str, Any] = {}
    for _ in range(reps):
        for name, fn in variants.items():
            start = time.perf_counter()
            last[name] = fn()
            times[name].append(time.perf_counter() - start)
    return times, last


def summary(values: list[float]) -> dict[str, Any]:
    """Median with min, max and the runs themselves."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values),
            "runs": [round(v, 6) for v in values]}


def paired_ratio(num: list[float], den: list[float]) -> dict[str, Any]:
    """Median of the per-repetition ratios num[i] / den[i] (runs of the same repetition sit side by side)."""
    return summary([a / b for a, b in zip(num, den, strict=True)])


def machine() -> dict[str, Any]:
    """The machine and the versions a run measured with."""
    import os

    import numpy as np
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "cpu": _cpu_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
                            "torch_threads": torch.get_num_threads(), "numpy": np.__version__,
                            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for name in ("transformers", "tenseal", "cryptography", "zmq", "flwr"):
        info[name] = _version(name)
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def _version(module: str) -> str | None:
    import importlib.metadata

    dist = {"zmq": "pyzmq"}.get(module, module)
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
