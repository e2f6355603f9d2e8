"""Forward hooks as context managers that always remove themselves (MEMIT's nethook, reduced)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import cast

import torch
from torch import nn


class StopForward(Exception):
    """Raised from a hook to end a forward pass once the highest needed layer has run."""


@contextmanager
def capture_input(module: nn.Module, stop: bool = False) -> Iterator[list[torch.Tensor]]:
    """Record the first positional input of ``module`` on every call; optionally stop the forward there."""
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple) -> None:
        store.append(args[0].detach())
        if stop:
            raise StopForward

    handle = module.register_forward_pre_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@contextmanager
def capture_output(module: nn.Module, stop: bool = False) -> Iterator[list[torch.Tensor]]:
    """Record the (first) output tensor of ``module`` on every call; optionally stop the forward there."""
    store: list[torch.Tensor] = []

    def hook(_m: nn.Module, _args: tuple, out: object) -> None:
        store.append(cast(torch.Tensor, out[0] if isinstance(out, tuple) else out).detach())
        if stop:
            raise StopForward

    handle = module.register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


@contextmanager
def edit_output(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Replace ``module``'s (first) output h by fn(h) during the context."""

    def hook(_m: nn.Module, _args: tuple, out: object) -> object:
        if isinstance(out, tuple):
            return (fn(out[0]), *out[1:])
        return fn(out)  # type: ignore[arg-type]

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()
