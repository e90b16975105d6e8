"""The perception engine: segmenter + concept store + teaching, safe to call from threads.

Everything the ROS node does that is not message plumbing lives here, so it is testable
without ROS: frames in -> labels with stable class ids and per-concept masks out;
teach / forget / list with the failure rules of the public contract (a failed teach
changes nothing; one teach at a time; concurrent frames keep flowing).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from .capture import CaptureBuffer
from .personal.names import canonical_name, concept_id
from .personal.shots import cache_shots
from .personal.store import ConceptStore
from .personal.teach import TeachConfig, teach
from .san.checkpoint import CheckpointError, fingerprint
from .segmenter import Segmentation, Segmenter, SegmenterError
from .text_cache import default_cache_dir
from .vis import overlay

log = logging.getLogger(__name__)
UNLABELED = 65535
PERSONAL_ID_BASE = 32768  # personal class ids live far above any vocabulary's ids


class StartupError(RuntimeError):
    """The engine cannot start (missing weights, bad device...): the process should exit."""


@dataclass
class EngineSettings:
    weights: str | None = None
    allow_random_weights: bool = False
    variant: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    vocabulary: list[str] = field(default_factory=lambda: ["coco_stuff"])
    text_cache_dir: Path | None = field(default_factory=default_cache_dir)
    concept_store: Path = Path("~/.povss/concepts").expanduser()
    input_min_size: int = 0
    capture_buffer_size: int = 30
    teach_default_frames: int = 5
    auto_min_confidence: float = 0.3
    auto_dominance: float = 2.0
    iterations: int = 200
    learning_rate: float = 5e-4
    alpha: float = 0.1
    lambda_m: float = 10.0
    lambda_z: float = 0.1
    even_negative: bool = True  # ours: the node never lets a negative proposal relabel objects

    def teach_config(self) -> TeachConfig:
        return TeachConfig(
            lr=self.learning_rate,
            iterations=self.iterations,
            alpha=self.alpha,
            lambda_m=self.lambda_m,
            lambda_z=self.lambda_z,
            even_negative=self.even_negative,
        )


@dataclass(frozen=True)
class ClassEntry:
    class_id: int
    name: str
    personal: bool = False
    concept_id: str = ""
    base_class: str = ""
    shots: int = 0


@dataclass
class TeachRequest:
    name: str
    base_class: str
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    num_frames: int = 0
    overwrite: bool = False


@dataclass
class TeachOutcome:
    success: bool
    message: str
    concept_id: str = ""
    class_id: int = 0
    shots_used: int = 0
    frames_rejected: int = 0
    training_seconds: float = 0.0
    fit_iou: float = 0.0


@dataclass
class FrameResult:
    labels: np.ndarray  # uint16 class ids (vocabulary index, or PERSONAL_ID_BASE + slot)
    concept_masks: dict[str, np.ndarray]  # concept id -> uint8 0/255
    segmentation: Segmentation
    model_seconds: float


class PerceptionEngine:
    """Thread-safe facade: `segment` from the frame thread, `teach` & co from service threads."""

    def __init__(self, segmenter: Segmenter, store: ConceptStore, settings: EngineSettings) -> None:
        self.segmenter = segmenter
        self.store = store
        self.settings = settings
        self.capture = CaptureBuffer(settings.capture_buffer_size)
        self.fingerprint = fingerprint(segmenter.model)
        self._teach_lock = threading.Lock()
        self._ids_path = store.root / ".class_ids.json"
        self._class_ids: dict[str, int] = self._read_class_ids()
        self.teaching = False
        concepts, self.load_problems = store.load_all(
            self.fingerprint, segmenter.model.cfg.num_queries, segmenter.model.cfg.embed_dim
        )
        self._meta = {concept_id(m["name"]): m for m in store.list()}
        for c in concepts:
            self._assign_class_id(concept_id(c.name))
        self.segmenter.set_concepts(concepts)
        self._write_class_ids()

    # ---------------------------------------------------------------- descriptions
    @property
    def vocabulary(self) -> list[str]:
        return self.segmenter.vocabulary

    def describe(self) -> str:
        cfg = self.segmenter.model.cfg
        kind = "RANDOM weights" if self.segmenter.random_weights else f"weights {self.fingerprint}"
        return f"{cfg.name} on {self.device_name()} ({self.segmenter.precision}, {kind})"

    def device_name(self) -> str:
        dev = self.segmenter.device
        return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"

    def gpu_memory_mib(self) -> str:
        dev = self.segmenter.device
        if dev.type != "cuda":
            return "n/a"
        return f"{torch.cuda.max_memory_allocated(dev) / 2**20:.0f}"

    def concept_entries(self) -> list[ClassEntry]:
        out = []
        for c in self.segmenter.concepts:
            cid = concept_id(c.name)
            shots = int(self._meta.get(cid, {}).get("shots", 0))
            out.append(ClassEntry(self._class_ids[cid], c.name, True, cid, c.base_class, shots))
        return out

    def class_table(self) -> list[ClassEntry]:
        words = [ClassEntry(i, w) for i, w in enumerate(self.vocabulary)]
        return words + self.concept_entries()

    # ---------------------------------------------------------------- frames
    def set_vocabulary(self, words: list[str]) -> None:
        spec = words[0] if len(words) == 1 else words
        self.segmenter.set_vocabulary(spec)

    def segment(self, rgb: np.ndarray) -> FrameResult:
        start = time.perf_counter()
        seg = self.segmenter.segment(rgb)
        seconds = time.perf_counter() - start
        v = len(seg.class_names) - len(seg.personal_ids)
        ids = [self._class_ids.get(concept_id(n), UNLABELED) for n in seg.class_names[v:]]
        lut = np.concatenate([np.arange(v, dtype=np.uint16), np.array(ids, np.uint16)])
        labels = lut[seg.labels]
        masks = {
            concept_id(seg.class_names[k]): np.where(seg.labels == k, 255, 0).astype(np.uint8)
            for k in seg.personal_ids
        }
        return FrameResult(labels, masks, seg, seconds)

    def overlay(self, rgb: np.ndarray, frame: FrameResult) -> np.ndarray:
        seg = frame.segmentation
        return overlay(rgb, seg.labels, seg.class_names, seg.personal_ids)

    # ---------------------------------------------------------------- teaching
    def teach(
        self, request: TeachRequest, progress: Callable[[int, int, float], None] | None = None
    ) -> TeachOutcome:
        """Learn a concept; on any failure the store, the concepts and the ids are unchanged."""
        if not self._teach_lock.acquire(blocking=False):
            return TeachOutcome(False, "another teach_concept is running; try again when it ends")
        self.teaching = True
        try:
            return self._teach(request, progress)
        except (ValueError, SegmenterError, CheckpointError, OSError) as exc:
            return TeachOutcome(False, str(exc))
        finally:
            self.teaching = False
            self._teach_lock.release()

    def _teach(self, request: TeachRequest, progress) -> TeachOutcome:  # noqa: ANN001
        if any(sep in request.name for sep in ("/", "\\")) or request.name.strip() in (".", ".."):
            return TeachOutcome(False, f"invalid concept name {request.name!r}: no path parts")
        name = canonical_name(request.name)  # raises ValueError on empty/control chars
        cid = concept_id(request.name)
        base = request.base_class.strip()
        if not base:
            return TeachOutcome(
                False, "base_class is empty: name the word this concept is a kind of"
            )
        if base not in self.vocabulary:
            return TeachOutcome(
                False,
                f"base_class {base!r} is not in the vocabulary ({len(self.vocabulary)} words); "
                "add it to the 'vocabulary' parameter first",
            )
        existing = {concept_id(c.name) for c in self.segmenter.concepts}
        if cid in existing and not request.overwrite:
            return TeachOutcome(
                False, f"a concept named {name!r} exists (id {cid}); set overwrite to replace it"
            )
        images, masks, notes = self._gather_shots(request, base)
        if not images:
            return TeachOutcome(
                False, "no usable shots: " + "; ".join(notes), frames_rejected=len(notes)
            )
        shots = cache_shots(self.segmenter, images, masks)
        rows = self.segmenter.text_rows
        words = self.vocabulary
        base_ref = words.index(base)
        concept, report = teach(
            self.segmenter.model,
            rows,
            base_ref,
            shots,
            self.settings.teach_config(),
            name=request.name.strip(),
            base_class=base,
            progress=progress,
        )
        self.store.save(concept, report, shots, self.fingerprint, self.segmenter.model.cfg.name)
        self._meta[cid] = next((m for m in self.store.list() if m.get("concept_id") == cid), {})
        kept = [c for c in self.segmenter.concepts if concept_id(c.name) != cid]
        self._assign_class_id(cid)
        self._write_class_ids()
        self.segmenter.set_concepts([*kept, concept])
        msg = (
            f"learned {name!r} (id {cid}) from {len(images)} shot(s) in "
            f"{report.seconds:.2f}s, fit IoU {report.fit_iou:.2f}"
        )
        if notes:
            msg += f"; rejected {len(notes)} frame(s): " + "; ".join(notes)
        return TeachOutcome(
            True,
            msg,
            cid,
            self._class_ids[cid],
            len(images),
            len(notes),
            float(report.seconds),
            float(report.fit_iou),
        )

    def _gather_shots(
        self, request: TeachRequest, base: str
    ) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
        """Explicit shots, else captured frames with teach masks or automatic masks."""
        if request.masks and not request.images:
            raise ValueError("masks were given without images")
        if request.images:
            if request.masks and len(request.masks) != len(request.images):
                raise ValueError(
                    f"{len(request.images)} images but {len(request.masks)} masks: give one mask "
                    "per image, or none for automatic masks"
                )
            if request.masks:
                return list(request.images), list(request.masks), []
            frames = [(f"image {i}", img, None) for i, img in enumerate(request.images)]
        else:
            count = request.num_frames or self.settings.teach_default_frames
            captured = self.capture.recent(count)
            if not captured:
                raise ValueError("no camera frames captured yet: is anything published on image?")
            frames = [(f"frame stamped {f.stamp_ns / 1e9:.3f}s", f.rgb, f.mask) for f in captured]
        images, masks, notes = [], [], []
        for label, rgb, mask in frames:
            if mask is None:
                mask, why = self.auto_mask(rgb, base)
                if mask is None:
                    notes.append(f"{label}: {why}")
                    continue
            images.append(rgb)
            masks.append(mask)
        return images, masks, notes

    def auto_mask(self, rgb: np.ndarray, base: str) -> tuple[np.ndarray | None, str]:
        """The most confident connected region of `base`, or None with the reason."""
        probe = Segmenter(
            self.segmenter.model,
            self.vocabulary,
            str(self.segmenter.device),
            self.segmenter.precision,
        )  # the open vocabulary, no personal classes
        seg = probe.segment(rgb)
        region = (seg.labels == self.vocabulary.index(base)).astype(np.uint8)
        count, comp = cv2.connectedComponents(region)
        if count <= 1:
            return None, f"no {base!r} found"
        scores = [(seg.confidence[comp == k].sum(), k) for k in range(1, count)]
        scores.sort(reverse=True)
        best, k = scores[0]
        mean = float(seg.confidence[comp == k].mean())
        if mean < self.settings.auto_min_confidence:
            return None, f"{base!r} found only with low confidence ({mean:.2f})"
        if len(scores) > 1 and best < self.settings.auto_dominance * scores[1][0]:
            return None, f"ambiguous: {len(scores)} similar {base!r} regions"
        return comp == k, ""

    def forget(self, name_or_id: str) -> tuple[bool, str]:
        with self._teach_lock:
            try:
                cid = name_or_id if name_or_id in self._class_ids else concept_id(name_or_id)
            except ValueError as exc:
                return False, str(exc)
            kept = [c for c in self.segmenter.concepts if concept_id(c.name) != cid]
            if len(kept) == len(self.segmenter.concepts):
                return False, f"no concept named {name_or_id!r}"
            self.store.delete(cid)
            self.segmenter.set_concepts(kept)
            self._class_ids.pop(cid, None)
            self._meta.pop(cid, None)
            self._write_class_ids()
            return True, f"forgot {cid}"

    # ---------------------------------------------------------------- class ids
    def _read_class_ids(self) -> dict[str, int]:
        try:
            data = json.loads(self._ids_path.read_text())
            return {str(k): int(v) for k, v in data.items()}
        except (OSError, ValueError, AttributeError):
            return {}

    def _assign_class_id(self, cid: str) -> None:
        if cid not in self._class_ids:
            used = set(self._class_ids.values())
            self._class_ids[cid] = next(
                i for i in range(PERSONAL_ID_BASE, UNLABELED) if i not in used
            )

    def _write_class_ids(self) -> None:
        live = {concept_id(c.name) for c in self.segmenter.concepts} | set(self._class_ids)
        data = {k: v for k, v in self._class_ids.items() if k in live}
        tmp = self._ids_path.with_name(f".class_ids.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.replace(tmp, self._ids_path)


def build_engine(settings: EngineSettings) -> PerceptionEngine:
    """Start-up: load weights (or fail clearly), vocabulary, concept store."""
    if not settings.weights and not settings.allow_random_weights:
        raise StartupError(
            "parameter 'weights' is empty: set it to the SAN checkpoint (san_vit_b_16.pth from "
            "SAN's authors' Hugging Face page, Mendel192/san) or to a .safetensors of this project"
        )
    try:
        spec = settings.vocabulary[0] if len(settings.vocabulary) == 1 else settings.vocabulary
        seg = Segmenter.from_weights(
            settings.weights, spec, settings.variant, settings.device, settings.precision,
            text_cache_dir=settings.text_cache_dir,
        )
    except (CheckpointError, SegmenterError, ValueError) as exc:
        raise StartupError(f"parameter 'weights' ({settings.weights}): {exc}") from exc
    if settings.input_min_size > 0:
        import dataclasses

        seg.model.cfg = dataclasses.replace(seg.model.cfg, min_size=settings.input_min_size)
    return PerceptionEngine(seg, ConceptStore(settings.concept_store), settings)
