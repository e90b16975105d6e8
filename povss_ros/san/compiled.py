"""An optional `torch.compile` of SAN's frozen forward, the part of a frame that costs.

Modes are torch.compile's: "default" (fused Inductor kernels), "reduce-overhead" (the same,
replayed as CUDA graphs on a GPU: one launch per frame instead of hundreds), "max-autotune"
(also searches matmul kernels; slowest to compile). Shapes are static: each new input size
compiles again (seconds to minutes), so a user warms the model up at start with the camera's
size (`Segmenter.warm_up`). Only the forward from normalized pixels to (Z, M, F) is compiled;
the decode, which depends on the vocabulary and the concepts, stays eager.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from .model import SAN, BatchGeometry, SANFeatures

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


class Encoder:
    """`SAN.encode` under the segmenter's autocast, compiled or not."""

    def __init__(self, model: SAN, mode: str,
                 autocast: Callable[[], contextlib.AbstractContextManager]) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {list(COMPILE_MODES)}, got {mode!r}")
        self.model, self.mode, self._autocast = model, mode, autocast
        self._compiled = None if mode == "off" else torch.compile(
            self._tensors, mode=None if mode == "default" else mode, dynamic=False)

    def _tensors(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._autocast():
            f = self.model.encode(pixels, None)
        return f.mask_embeddings, f.mask_logits, f.dense_features

    def __call__(self, pixels: torch.Tensor, geometry: BatchGeometry) -> SANFeatures:
        if self._compiled is None:
            with self._autocast():
                return self.model.encode(pixels, geometry)
        z, m, f = self._compiled(pixels)
        if self.mode == "reduce-overhead":  # CUDA graph outputs are reused by the next replay
            z, m, f = z.clone(), m.clone(), f.clone()
        return SANFeatures(z, m, f, geometry)
