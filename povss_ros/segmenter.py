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

from .personal.concept import Concept
from .personal.fusion import decode_concepts
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
    # [H, W] float32: the winning class's SAN score, sum over masks of P(class) x P(mask);
    # comparable between pixels, not a probability (it can exceed 1).
    confidence: np.ndarray
    class_names: list[str]
    class_scores: dict[int, float] = field(default_factory=dict)  # mean confidence per class
    personal_ids: list[int] = field(default_factory=list)

    def present(self) -> list[int]:
        return sorted(self.class_scores)


@dataclass(frozen=True)
class _State:
    """What one frame is decoded against; replaced whole so readers never see a mix."""

    vocabulary: tuple[str, ...]
    text_rows: torch.Tensor | None
    concepts: tuple[Concept, ...]

    def class_names(self) -> list[str]:
        return [*self.vocabulary, *(c.name for c in self.concepts)]


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
        text_cache_dir: str | os.PathLike | None = None,
    ) -> None:
        """``text_cache_dir``: keep the vocabulary's text rows on disk there (`text_cache`), so
        the next start skips the text tower; None: compute them every time."""
        self.device = resolve_device(device)
        if precision not in PRECISIONS:
            raise SegmenterError(
                f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}"
            )
        if precision == "fp16" and self.device.type != "cuda":
            raise SegmenterError("fp16 needs a CUDA device; use fp32 (or bf16) on the CPU")
        self.precision = precision
        self.random_weights = random_weights
        # SAN's -100 attention masks and confident softmax/sigmoid outputs produce subnormal
        # floats (< 1e-38). They carry no information at fp32 yet make CPU matmuls several
        # times slower, so flush them to zero (process-wide, CPU only).
        torch.set_flush_denormal(True)
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._state = _State((), None, ())
        self._text_cache = None
        if text_cache_dir is not None and not random_weights:
            from .text_cache import TextRowCache

            self._text_cache = TextRowCache(text_cache_dir, self.model.ov_classifier)
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
        text_cache_dir: str | os.PathLike | None = None,
    ) -> Segmenter:
        """Load a checkpoint, or build random weights when `weights` is None (said loudly).

        ``text_cache_dir`` is used for real weights only (random rows are not worth keeping)."""
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
        return cls(model, vocabulary, device, precision, text_cache_dir=text_cache_dir)

    # ---------------------------------------------------------------- vocabulary, concepts
    def set_vocabulary(self, vocabulary: str | Sequence[str]) -> None:
        """Replace the open vocabulary; text embeddings are computed once per new word."""
        words = parse_vocabulary(vocabulary)
        if self._text_cache is not None:
            loaded = self._text_cache.load()
            if loaded:
                log.info("%d text rows from %s", loaded, self._text_cache.path)
        rows = self.model.text_rows(words)
        if self._text_cache is not None:
            self._text_cache.save()
        self._state = _State(tuple(words), rows, self._state.concepts)

    def set_concepts(self, concepts: Sequence[Concept]) -> None:
        """Replace the personal concepts used from the next frame on (one atomic swap)."""
        for c in concepts:
            if c.n_queries != self.model.cfg.num_queries or c.dim != self.model.cfg.embed_dim:
                raise SegmenterError(f"concept {c.name!r} was made for another SAN variant")
        moved = tuple(c.to(self.device).eval() for c in concepts)
        self._state = _State(self._state.vocabulary, self._state.text_rows, moved)

    @property
    def vocabulary(self) -> list[str]:
        return list(self._state.vocabulary)

    @property
    def concepts(self) -> tuple[Concept, ...]:
        return self._state.concepts

    @property
    def text_rows(self) -> torch.Tensor:
        """T_open [V, D] of the current vocabulary (what concepts are taught against)."""
        return self._state.text_rows

    @property
    def class_names(self) -> list[str]:
        """Label ids: vocabulary words first, then personal concepts in their order."""
        return self._state.class_names()

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

    @torch.no_grad()
    def decode(self, features: SANFeatures, index: int = 0, joint: bool = False) -> Segmentation:
        """SAN's semantic inference with class rows [vocabulary; concepts; void] for one image.

        A concept adds its class row and, when it has one, its negative mask proposal
        (`personal.concept.personal_logits`); several concepts each decide as if alone and
        are fused (`personal.fusion`; ``joint``: all in one softmax instead, for comparison).
        With no concepts, or only concepts whose components are all off, this is plain SAN
        bit for bit.
        """
        state = self._state
        z = features.mask_embeddings[index : index + 1]
        m = features.mask_logits[index : index + 1]
        confidence, labels = decode_concepts(
            self.model, state.text_rows, state.concepts, z, m, features.geometry, index, joint
        )
        v = len(state.vocabulary)
        personal = list(range(v, v + len(state.concepts)))
        return self._to_segmentation(confidence, labels, state.class_names(), personal)

    def segment(self, image: np.ndarray) -> Segmentation:
        """RGB uint8 HxWx3 image -> Segmentation at the image's own size."""
        return self.decode(self.encode(image))

    @staticmethod
    def _to_segmentation(
        confidence: torch.Tensor,
        labels: torch.Tensor,
        names: list[str],
        personal_ids: Sequence[int] = (),
    ) -> Segmentation:
        labels_np = labels.to(torch.int32).cpu().numpy().astype(np.uint16)
        conf_np = confidence.float().cpu().numpy()
        ids, inverse = np.unique(labels_np, return_inverse=True)
        sums = np.bincount(inverse.ravel(), weights=conf_np.ravel())
        counts = np.bincount(inverse.ravel())
        class_scores = {int(i): float(s / c) for i, s, c in zip(ids, sums, counts)}
        return Segmentation(labels_np, conf_np, names, class_scores, list(personal_ids))
