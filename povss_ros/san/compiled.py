"""SAN's frozen forward as a frame runs it: in the segmenter's precision, compiled or not.

Reduced precision is autocast; eager, with the frozen forward's matmul and convolution weights
cast once (`Encoder`). Compile modes are torch.compile's: "default" (fused Inductor kernels),
"reduce-overhead" (the same, replayed as CUDA graphs on a GPU: one launch per frame instead
of hundreds), "max-autotune" (also searches matmul kernels; slowest to compile). Shapes are
static: each new input size compiles again (seconds to minutes), so a user warms the model up
at start with the camera's size (`Segmenter.warm_up`). Only the forward from normalized pixels
to (Z, M, F) is compiled; the decode, which depends on the vocabulary and the concepts, stays
eager.
"""

from __future__ import annotations

import contextlib
import copy
import threading

import torch
from torch import nn

from .clip import MultiheadSelfAttention
from .model import SAN, BatchGeometry, SANFeatures

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")


class Encoder:
    """`SAN.encode` in ``dtype`` (None: fp32; else autocast to it), compiled or not.

    Autocast casts every matmul and convolution weight on every call (most of ViT-B/16's
    weights, memory traffic on a CPU and hundreds of kernels on a GPU). Eager, the encoder
    runs a copy of the model whose such weights (`_autocast_slots`) are cast once and which
    shares every other tensor with it: autocast's cast is the same rounding, so the outputs are bit
    for bit those of plain autocast. The copy is made again when the model moves, its config
    is replaced, or one of those weights changes (in place, or replaced); `release` drops it
    (the segmenter's `move_to`). Weights written behind autocast's back (`p.data.copy_`) are
    not seen: call `release`.
    """

    def __init__(self, model: SAN, mode: str, dtype: torch.dtype | None) -> None:
        if mode not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {list(COMPILE_MODES)}, got {mode!r}")
        self.model, self.mode, self.dtype = model, mode, dtype
        self._slots = _autocast_slots(model)
        self._copy: tuple[tuple, SAN] | None = None
        self._copy_lock = threading.Lock()
        self._compiled = None if mode == "off" else torch.compile(
            self._tensors, mode=None if mode == "default" else mode, dynamic=False)

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.model.device.type, dtype=self.dtype)

    def _tensors(self, pixels: torch.Tensor) -> tuple[torch.Tensor, ...]:
        with self._autocast():
            f = self.model.encode(pixels, None)
        return f.mask_embeddings, f.mask_logits, f.dense_features

    def frozen_model(self) -> SAN:
        """The model an eager frame runs: in fp32 the model itself, else its copy with the
        matmul and convolution weights in ``dtype`` (made on first use; see the class doc)."""
        if self.dtype is None:
            return self.model
        weights = [getattr(module, name) for module, name in self._slots]
        key = (id(self.model.cfg), *((id(p), p.data_ptr(), p.device, p._version) for p in weights))
        with self._copy_lock:
            if self._copy is None or self._copy[0] != key:
                self._copy = None  # free the old copy before making the new one
                shared = {id(t): t for t in (*self.model.parameters(), *self.model.buffers())}
                shared[id(self.model.ov_classifier)] = self.model.ov_classifier  # not run
                for p in weights:
                    shared[id(p)] = nn.Parameter(p.detach().to(self.dtype), requires_grad=False)
                self._copy = (key, copy.deepcopy(self.model, shared))
            return self._copy[1]

    def release(self) -> None:
        """Drop the cast copy (it is made again on the next frame)."""
        with self._copy_lock:
            self._copy = None

    def __call__(self, pixels: torch.Tensor, geometry: BatchGeometry) -> SANFeatures:
        if self._compiled is None:
            model = self.frozen_model()
            with self._autocast():
                return model.encode(pixels, geometry)
        z, m, f = self._compiled(pixels)
        if self.mode == "reduce-overhead":  # CUDA graph outputs are reused by the next replay
            z, m, f = z.clone(), m.clone(), f.clone()
        return SANFeatures(z, m, f, geometry)


def _autocast_slots(model: SAN) -> list[tuple[nn.Module, str]]:
    """Where the frozen forward's weights that autocast casts on every call live, as (module,
    parameter name), so a replaced parameter is seen without walking the model each frame:
    Linear and Conv2d weights and biases, and CLIP attention's packed in_proj (an `F.linear`).
    Not the text tower's, nor the mask decoder's `bias_scaling`, whose two numbers are read in
    fp32."""
    slots: list[tuple[nn.Module, str]] = []
    for prefix, module in model.named_modules():
        if prefix.startswith(("ov_classifier", "criterion")) or prefix.endswith("bias_scaling"):
            continue
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            slots += [(module, name) for name, _ in module.named_parameters(recurse=False)]
        elif isinstance(module, MultiheadSelfAttention):
            slots += [(module, "in_proj_weight"), (module, "in_proj_bias")]
    return slots
