"""The perception engine: segmenter + concept store + teaching, safe to call from threads.

Everything the ROS node does that is not message plumbing lives here, so it is testable
without ROS: frames in -> labels with stable class ids and per-concept masks out;
teach / forget / list with the failure rules of the public contract (a failed teach
changes nothing; one teach at a time; concurrent frames keep flowing).
"""

from __future__ import annotations

import dataclasses
import logging
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
from .personal.teach import teach
from .san.checkpoint import CheckpointError, fingerprint
from .segmenter import Segmentation, Segmenter, SegmenterError
from .settings import EngineSettings
from .text_cache import resolve_cache_dir
from .vis import overlay
from .vocabulary import UNLABELED

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The engine cannot start (missing weights, bad device...): the process should exit."""


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
    labels: np.ndarray  # uint16 class ids (vocabulary index, or the concept's class id)
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
        self.teaching = False
        concepts, self.load_problems = store.load_all(
            self.fingerprint, segmenter.model.cfg.num_queries, segmenter.model.cfg.embed_dim
        )
        self._refresh_store_view()
        self.segmenter.set_concepts(concepts)

    def _refresh_store_view(self) -> None:
        """Re-read what the store records about its concepts (shots, class ids)."""
        metas = self.store.list()
        self._meta = {m.get("concept_id"): m for m in metas}
        self._class_ids = self.store.class_ids(metas)

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
        """A list of words, or one built-in name (``["auto"]``, ``["coco_stuff"]``)."""
        self.segmenter.set_vocabulary(words)

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
            words = self.vocabulary
            listed = f": {', '.join(words)}" if len(words) <= 30 else ""
            return TeachOutcome(
                False,
                f"base_class {base!r} is not in the vocabulary ({len(words)} words{listed}); "
                "name one of its words, or add the word to the vocabulary first",
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
            self.settings.teach,
            name=request.name.strip(),
            base_class=base,
            progress=progress,
        )
        self.store.save(concept, report, shots, self.fingerprint, self.segmenter.model.cfg.name)
        self._refresh_store_view()
        kept = [c for c in self.segmenter.concepts if concept_id(c.name) != cid]
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
        """The highest-scoring connected region of `base` under the open vocabulary alone (no
        personal concepts), or None with the reason."""
        seg = self.segmenter.decode(self.segmenter.encode(rgb), concepts=())
        region = (seg.labels == self.vocabulary.index(base)).astype(np.uint8)
        count, comp = cv2.connectedComponents(region)
        if count <= 1:
            return None, f"no {base!r} found"
        scores = [(seg.score[comp == k].sum(), k) for k in range(1, count)]
        scores.sort(reverse=True)
        best, k = scores[0]
        mean = float(seg.score[comp == k].mean())
        cfg = self.settings.teach
        if mean < cfg.auto_min_score:
            return None, f"{base!r} found only with a low score ({mean:.2f})"
        if len(scores) > 1 and best < cfg.auto_dominance * scores[1][0]:
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
            self._refresh_store_view()
            return True, f"forgot {cid}"


def build_engine(settings: EngineSettings) -> PerceptionEngine:
    """Start-up: load weights (or fail clearly), vocabulary, concept store."""
    if not settings.weights and not settings.allow_random_weights:
        raise StartupError(
            "parameter 'weights' is empty: set it to the SAN checkpoint (san_vit_b_16.pth from "
            "SAN's authors' Hugging Face page, Mendel192/san) or to a .safetensors of this project"
        )
    try:
        seg = Segmenter.from_weights(
            settings.weights or None, settings.vocabulary,
            settings.variant or None, settings.device, settings.precision,
            text_cache_dir=resolve_cache_dir(settings.text_cache_dir),
        )
    except (CheckpointError, SegmenterError, ValueError) as exc:
        raise StartupError(f"parameter 'weights' ({settings.weights}): {exc}") from exc
    if settings.input_min_size > 0:
        seg.model.cfg = dataclasses.replace(seg.model.cfg, min_size=settings.input_min_size)
    store = ConceptStore(Path(settings.concept_store).expanduser())
    return PerceptionEngine(seg, store, settings)
