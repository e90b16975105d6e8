"""An exponential moving average of a model's weights, for the weights a training run ships.

The raw weights at the last step carry the noise of the last few batches; an average over the
last few hundred steps is a cheap, common way to smooth it out (Polyak averaging). Only the
copy is averaged: the optimizer keeps stepping the raw weights, so tracking an average never
changes the training run itself.
"""

from __future__ import annotations

import torch
from torch import nn


class WeightAverage:
    """EMA of a module's floating-point parameters; its buffers are copied, not averaged.

    Buffers are not trained, and some hold infinities (the text tower's causal mask is -inf
    above the diagonal) that an average would turn into NaN (-inf - -inf).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` over the first updates, so that
    the average is not dominated by the random initial weights of a short run.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.averaged = {k for k, p in model.named_parameters() if p.is_floating_point()}

    def current_decay(self) -> float:
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average toward the model's current weights (call after each step)."""
        d = self.current_decay()
        for k, v in model.state_dict().items():
            avg = self.shadow[k]
            if k in self.averaged:
                avg.lerp_(v.detach(), 1.0 - d)
            else:
                avg.copy_(v)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Load the averaged weights into `model` (its raw weights are overwritten)."""
        model.load_state_dict(self.shadow)

    def state_dict(self) -> dict:
        return {"decay": self.decay, "updates": self.updates,
                "shadow": {k: v.cpu() for k, v in self.shadow.items()}}

    def load_state_dict(self, state: dict) -> None:
        if state["decay"] != self.decay or state["shadow"].keys() != self.shadow.keys():
            raise ValueError("a weight average of another decay or model")
        self.updates = int(state["updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
