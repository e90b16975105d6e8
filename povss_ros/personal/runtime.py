"""Training-loop plumbing: the optimizer's start-up import, model freezing, per-thread CPU
threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from ..san.model import SAN


def prepare_optimizer() -> None:
    """Construct one `torch.optim.Adam` and drop it, so that a teach later does not wait.

    The first construction in a process imports torch._dynamo (hundreds of modules, about a
    second on a desktop CPU); the engine calls this at start-up (configure), not the robot's
    first /teach_concept request. Later constructions cost microseconds."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1e-3)


@contextlib.contextmanager
def intra_op_threads(threads: int | None, device: torch.device) -> Iterator[None]:
    """Temporarily set torch's intra-op threads for CPU work (see `TeachConfig.threads`)."""
    if threads is None or device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def frozen(model: SAN) -> Iterator[None]:
    """No gradient may reach SAN (bg row and logit scale are in the graph): flags restored."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
