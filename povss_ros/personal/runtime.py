"""Training-loop plumbing: a lazy-import-free Adam, model freezing, per-thread CPU threads."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence

import torch

from ..san.model import SAN


class Adam:
    """Textbook Adam (Kingma & Ba), torch.optim.Adam's defaults: betas 0.9/0.999, eps 1e-8.

    Not torch.optim.Adam itself: constructing one the first time in a process imports
    torch._dynamo (hundreds of modules, over a second), a delay the robot's first
    /teach_concept request would pay. Same update rule (tested against it).
    """

    def __init__(
        self,
        params: Sequence[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr, self.betas, self.eps, self.steps = lr, betas, eps, 0
        self.m = [torch.zeros_like(p) for p in self.params]
        self.v = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        b1, b2 = self.betas
        self.steps += 1
        correction1, correction2 = 1 - b1**self.steps, 1 - b2**self.steps
        for p, m, v in zip(self.params, self.m, self.v):
            if p.grad is None:
                continue
            m.mul_(b1).add_(p.grad, alpha=1 - b1)
            v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(correction2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-self.lr / correction1)


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
