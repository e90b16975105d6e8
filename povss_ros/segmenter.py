"""The one high-level API: weights + vocabulary + device in, label maps out.

The CLI, the ROS node and the evaluation all go through `Segmenter`; none of them reaches
into `san/` internals. Teaching taps the same object (`encode`) so a concept is trained
against exactly the features inference will see.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .san.checkpoint import CheckpointError, guess_variant, load_state, read_state_dict
from .san.config import SANConfig, get_config
from .san.model import SAN, SANFeatures, build_san
from .vocabulary import parse_vocabulary

log = logging.getLogger(__name__)

UNLABELED = 65535
PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


class SegmenterError(RuntimeError):
    """A request the segmenter cannot serve, with what to change in the message."""


@dataclass
class Segmentation:
    """One image's result. `labels` ids index `class_names`; 65535 means unlabeled."""

    labels: np.ndarray  # [H, W] uint16
    confidence: np.ndarray  # [H, W] float32: the winning class's score
    class_names: list[str]
    class_scores: dict[int, float] = field(default_factory=dict)  # mean confidence per class
    personal_ids: list[int] = field(default_factory=list)

    def present(self) -> list[int]:
        return sorted(self.class_scores)


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SegmenterError(f"device {device!r} requested but CUDA is not available here")
    return dev


def config_for_weights(path: str | os.PathLike, variant: str | None) -> SANConfig:
    """Our own .safetensors files carry their config; official .pth files need `variant`."""
    if str(path).endswith(".safetensors"):
        import json

        from safetensors import safe_open

        try:
            with safe_open(str(path), "pt") as f:
                meta = f.metadata() or {}
        except Exception as exc:  # noqa: BLE001 - any unreadable header is a checkpoint error
            raise CheckpointError(f"{path} is not a readable safetensors file: {exc}") from exc
        if "config" in meta:
            return SANConfig.from_dict(json.loads(meta["config"]))
    return get_config(variant or "vit_b16")


class Segmenter:
    """SAN plus a vocabulary on one device; `segment(image)` returns a `Segmentation`."""

    def __init__(
        self,
        model: SAN,
        vocabulary: str | Sequence[str] = "coco_stuff",
        device: str = "auto",
        precision: str = "fp32",
        random_weights: bool = False,
    ) -> None:
        self.device = resolve_device(device)
        if precision not in PRECISIONS:
            raise SegmenterError(
                f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
            )
        if precision == "fp16" and self.device.type != "cuda":
            raise SegmenterError("fp16 needs a CUDA device; use fp32 (or bf16) on the CPU")
        self.precision = precision
        self.random_weights = random_weights
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.vocabulary: list[str] = []
        self.set_vocabulary(vocabulary)

    @classmethod
    def from_weights(
        cls,
        weights: str | os.PathLike | None,
        vocabulary: str | Sequence[str] = "coco_stuff",
        variant: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        seed: int = 0,
    ) -> Segmenter:
        """Load a checkpoint, or build random weights when `weights` is None (said loudly)."""
        if weights is None:
            cfg = get_config(variant or "vit_b16")
            log.warning(
                "no weights given: SAN %s runs with RANDOM weights (seed %d)", cfg.name, seed
            )
            return cls(build_san(cfg, seed), vocabulary, device, precision, random_weights=True)
        state = read_state_dict(weights)
        if variant is None and not str(weights).endswith(".safetensors"):
            variant = guess_variant(state)
        model = build_san(config_for_weights(weights, variant), seed=None)
        load_state(model, state, str(weights))
        return cls(model, vocabulary, device, precision)

    # ---------------------------------------------------------------- vocabulary
    def set_vocabulary(self, vocabulary: str | Sequence[str]) -> None:
        """Replace the open vocabulary; text embeddings are computed once per new word."""
        words = parse_vocabulary(vocabulary)
        rows = self.model.text_rows(words)
        self.vocabulary = words
        self._text_rows = rows

    @property
    def class_names(self) -> list[str]:
        return list(self.vocabulary)

    # ---------------------------------------------------------------- inference
    @contextlib.contextmanager
    def _autocast(self) -> Iterator[None]:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            yield
            return
        with torch.autocast(self.device.type, dtype=dtype):
            yield

    @torch.no_grad()
    def encode(self, images: np.ndarray | list[np.ndarray]) -> SANFeatures:
        """The frozen forward (Z, M, F) for RGB uint8 images; what teaching caches."""
        try:
            pixels, geometry = self.model.preprocess(images)
            with self._autocast():
                return self.model.encode(pixels, geometry)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            shapes = [img.shape[:2] for img in (images if isinstance(images, list) else [images])]
            raise SegmenterError(
                f"GPU out of memory segmenting images of size {shapes} at {self.precision}; "
                "try precision fp16/bf16, a smaller input resolution or fewer images at once"
            ) from exc

    def class_rows(self) -> torch.Tensor:
        """Normalized classifier rows [V(+personal), D] plus the void row last."""
        return self.model.class_rows(self._text_rows)

    @torch.no_grad()
    def decode(self, features: SANFeatures, index: int = 0) -> Segmentation:
        """Class logits, SAN's semantic inference and argmax for one encoded image."""
        logits = self.model.class_logits(
            features.mask_embeddings[index : index + 1], self.class_rows()
        )
        scores = self.model.semantic_scores(
            logits[0], features.mask_logits[index], features.geometry, index
        )
        return self._to_segmentation(scores, self.class_names)

    def segment(self, image: np.ndarray) -> Segmentation:
        """RGB uint8 HxWx3 image -> Segmentation at the image's own size."""
        return self.decode(self.encode(image))

    @staticmethod
    def _to_segmentation(
        scores: torch.Tensor, names: list[str], personal_ids: Sequence[int] = ()
    ) -> Segmentation:
        confidence, labels = scores.max(dim=0)
        labels_np = labels.to(torch.int32).cpu().numpy().astype(np.uint16)
        conf_np = confidence.float().cpu().numpy()
        ids, inverse = np.unique(labels_np, return_inverse=True)
        sums = np.bincount(inverse.ravel(), weights=conf_np.ravel())
        counts = np.bincount(inverse.ravel())
        class_scores = {int(i): float(s / c) for i, s, c in zip(ids, sums, counts)}
        return Segmentation(labels_np, conf_np, names, class_scores, list(personal_ids))
