"""The perception engine: segmenter + concept store + teaching, safe to call from threads.

Everything the ROS node does that is not message plumbing lives here, so it is testable
without ROS: frames (and depth) in -> labels with stable class ids, objects with 3D and
per-concept masks out; teach / forget / list with the failure rules of the public contract
(a failed teach changes nothing; one teach at a time; concurrent frames keep flowing). What a
teach does is `teaching.learn`'s; the engine serialises teaches, stores what they learn
and swaps it in.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from .cameras import UNNAMED, CameraMemory, UnknownCamera, cameras_problem, describe_cameras
from .capture import CaptureBuffer
from .objects import DetectedObject, Intrinsics, class_infos, concept_masks, frame_objects
from .options import RUN, user_fields
from .personal.concept import Concept
from .personal.names import concept_id
from .personal.runtime import prepare_optimizer
from .personal.shots import features_nbytes
from .personal.store import NEGATIVES, ConceptError, ConceptStore
from .personal.store import shared as sharing
from .personal.store.layout import META, TENSORS
from .personal.store.schema import MAX_META_BYTES, MAX_TENSOR_BYTES, read_bounded
from .personal.teach import Progress
from .presence import PresenceFilter
from .san.checkpoint import CheckpointError, fingerprint
from .san.model import SANFeatures
from .segmenter import Segmentation, Segmenter, SegmenterError, class_scores
from .settings import EngineSettings
from .teaching.learn import StoredExamples, learn
from .teaching.requests import TeachOutcome, TeachRefused, TeachRequest
from .teaching.shot_masks import auto_mask, look
from .text_cache import resolve_cache_dir
from .vis import overlay
from .vocabulary import UNLABELED, stuff_words

log = logging.getLogger(__name__)


class StartupError(RuntimeError):
    """The engine cannot start (missing weights, bad device...): the process should exit."""


class TeachAbandoned(RuntimeError):
    """A running teach was called off (shutdown, deactivation): it stores nothing."""


@dataclass(frozen=True)
class ClassEntry:
    class_id: int
    name: str
    personal: bool = False
    concept_id: str = ""
    base_class: str = ""
    shots: int = 0


@dataclass
class FrameResult:
    labels: np.ndarray  # uint16 class ids (vocabulary index, or the concept's class id)
    concept_masks: dict[str, np.ndarray]  # concept id -> uint8 0/255, all 0 while it is absent
    segmentation: Segmentation
    model_seconds: float
    objects: list[DetectedObject] = field(default_factory=list)  # `objects.find_objects`
    objects_seconds: float = 0.0
    depth_problem: str = ""  # why a depth given with the frame gave no 3D ("" if none)
    batch: int = 1  # frames that went through SAN's forward together with this one (itself too)


@dataclass(frozen=True)
class CameraFrame:
    """One camera's frame for `PerceptionEngine.segment_frames`: what `segment` takes."""

    rgb: np.ndarray
    stamp_ns: int | None = None
    depth: np.ndarray | None = None
    intrinsics: Intrinsics | None = None
    camera: str = UNNAMED


class PerceptionEngine:
    """Thread-safe facade: `segment` from the frame thread, `teach` & co from service threads.

    One model and one concept store serve every camera in `cameras` (`cameras.CameraMemory`:
    each keeps its own captured frames and presence history); a camera argument of ""
    means the first camera."""

    def __init__(self, segmenter: Segmenter, store: ConceptStore, settings: EngineSettings,
                 cameras: Sequence[str] = (UNNAMED,)) -> None:
        problem = cameras_problem(list(cameras))
        if problem:
            raise ValueError(f"cameras {problem}")
        self.segmenter = segmenter
        self.store = store
        self.settings = settings
        self.cameras: dict[str, CameraMemory] = {
            name: CameraMemory(self._capture_buffer(settings), settings.objects.presence_filter())
            for name in cameras}
        self.fingerprint = fingerprint(segmenter.model)
        self._home_device = segmenter.device
        self.segmenter.input_min_size = settings.input_min_size
        self.segmenter.resize = settings.resize
        self.segmenter.identity_min_similarity = settings.objects.identity_min_similarity
        self.segmenter.identity_stay_similarity = settings.objects.identity_stay_similarity
        self._stuff = stuff_words(settings.objects.stuff_words)
        # Concept swaps so far, and the swap that last replaced each concept id (a teach, a
        # correction, a forget): a concept's presence history is its own version's alone.
        self.concepts_version = 0
        self._replaced: dict[str, int] = {}
        self._teach_lock = threading.Lock()
        # Why the running teach is called off (None: it is not), and why no teach may run
        # until `allow_teaching` (a paused node); both set and read under `_teach_flags`.
        self._teach_flags = threading.Lock()
        self._abandon_reason: str | None = None
        self._held: str | None = None
        # Sharing concepts with other nodes (`adopt_shared`, `shared_message`): this node's id
        # in the messages, who is told of each teach and forget here (event, concept id,
        # stamp), and the newest forget seen of each concept id (time, node id), so that an
        # older teach arriving later from another node does not bring it back; kept in the
        # store (`ConceptStore.remember_forgotten`), so a restart keeps them too.
        self.node_id = ""
        self.share_listener: Callable[[str, str, str], None] | None = None
        self.teaching = False
        concepts, problems = store.load_all(
            self.fingerprint, segmenter.model.cfg.num_queries, segmenter.model.cfg.embed_dim
        )
        self._forgotten = store.forgotten(problems)
        self.store_unwritable = store.unwritable()  # why teach/forget are refused, "" if not
        self.load_problems = problems if not self.store_unwritable else [
            f"{self.store_unwritable}; running without teaching: frames are segmented with the "
            f"{len(concepts)} concept(s) read, teach_concept and forget_concept are refused",
            *problems]
        self._refresh_store_view()
        self.segmenter.set_concepts(concepts)

    @staticmethod
    def _capture_buffer(settings: EngineSettings) -> CaptureBuffer:
        return CaptureBuffer(settings.capture_buffer_size, settings.capture_buffer_mib * 2**20,
                             settings.capture_encodings_mib * 2**20)

    def camera(self, name: str = UNNAMED) -> CameraMemory:
        """What the engine keeps of camera `name` ("": the first camera); UnknownCamera,
        naming the cameras there are, for any other name."""
        if name == UNNAMED:
            return next(iter(self.cameras.values()))
        if name not in self.cameras:
            raise UnknownCamera(f"no camera {name[:64]!r} here: the cameras are "
                                f"{describe_cameras(list(self.cameras))}")
        return self.cameras[name]

    @property
    def capture(self) -> CaptureBuffer:
        """The first camera's captured frames (a one-camera engine's only ones)."""
        return self.camera().capture

    def _refresh_store_view(self) -> None:
        """Re-read what the store records about its concepts (shots, class ids)."""
        view = self.store.scan()
        self._meta, self._class_ids = view.metas, view.class_ids

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
            shots = self._meta.get(cid, {}).get("shots", 0)  # type-checked by the store
            class_id = self._class_ids.get(cid, UNLABELED)  # as `segment` maps it
            out.append(ClassEntry(class_id, c.name, True, cid, c.base_class, shots))
        return out

    def class_table(self) -> list[ClassEntry]:
        words = [ClassEntry(i, w) for i, w in enumerate(self.vocabulary)]
        return words + self.concept_entries()

    # ---------------------------------------------------------------- run-time settings
    def set_vocabulary(self, words: list[str]) -> None:
        """A list of words, or one built-in name (``["auto"]``, ``["coco_stuff"]``)."""
        self.segmenter.set_vocabulary(words)
        self.settings = dataclasses.replace(self.settings, vocabulary=list(words))

    def update_settings(self, new: EngineSettings) -> None:
        """Apply the run-time settings of `new` (vocabulary, input size, capture buffer,
        teach defaults): from the next frame, and from the next teach for teach settings (a
        running teach keeps its own). Settings read at start-up must be unchanged."""
        fixed = [f.name for f in user_fields(EngineSettings)
                 if f.metadata["read"] != RUN and getattr(new, f.name) != getattr(self.settings,
                                                                                f.name)]
        if fixed:
            raise ValueError(f"{', '.join(fixed)} is read when the model is loaded: "
                             "build a new engine to change it")
        if new.vocabulary != self.settings.vocabulary:
            self.segmenter.set_vocabulary(new.vocabulary)
        self.segmenter.input_min_size = new.input_min_size
        self.segmenter.resize = new.resize
        self.segmenter.identity_min_similarity = new.objects.identity_min_similarity
        self.segmenter.identity_stay_similarity = new.objects.identity_stay_similarity
        self._stuff = stuff_words(new.objects.stuff_words)
        # what a presence history was judged by: when it changes, presence starts afresh
        judged = ("presence_enter", "presence_enter_window", "presence_leave",
                  "presence_leave_window", "identity_min_similarity",
                  "identity_stay_similarity")
        restart = any(getattr(new.objects, c) != getattr(self.settings.objects, c)
                      for c in judged)
        for memory in self.cameras.values():
            if restart:
                memory.presence = new.objects.presence_filter()
            memory.capture.resize(new.capture_buffer_size, new.capture_buffer_mib * 2**20,
                                  new.capture_encodings_mib * 2**20)
        self.settings = new

    def release_gpu(self) -> None:
        """Move the model off the GPU and return its memory to the driver (CPU: no-op)."""
        if self._home_device.type != "cuda":
            return
        self.segmenter.move_to(torch.device("cpu"))
        torch.cuda.empty_cache()

    def restore_gpu(self) -> None:
        """Undo `release_gpu`: the model back on its device."""
        if self.segmenter.device != self._home_device:
            self.segmenter.move_to(self._home_device)

    # ---------------------------------------------------------------- frames

    def segment(self, rgb: np.ndarray, stamp_ns: int | None = None,
                depth: np.ndarray | None = None,
                intrinsics: Intrinsics | None = None, camera: str = UNNAMED) -> FrameResult:
        """Labels, objects and concept masks of one frame of `camera` (`after_model`); with
        the stamp of a captured frame, its encoding is kept for teaching
        (`capture_encodings_mib`)."""
        memory = self.camera(camera)
        start = time.perf_counter()
        version = self.concepts_version  # read before the decode: see `after_model`
        features = self.segmenter.encode(rgb)
        seg = self.segmenter.decode(features, held=self._in_view(memory.presence))
        seconds = time.perf_counter() - start
        if stamp_ns is not None:
            memory.capture.add_encoding(stamp_ns, features, features_nbytes(features), rgb)
        return self.after_model(seg, seconds, depth, intrinsics, version, camera)

    def _in_view(self, presence: PresenceFilter) -> set[str]:
        """The names of the concepts a camera's presence filter has present now (their current
        versions): identity keeps them at `identity_stay_similarity` in its next frame."""
        return {c.name for c in self.segmenter.concepts
                if presence.present(cid := concept_id(c.name), self._replaced.get(cid, 0))}

    def segment_frames(self, frames: Sequence[CameraFrame],
                       batch: bool = True) -> list[FrameResult | Exception]:
        """`segment` for frames of several cameras, in order. With `batch`, frames of one size
        go through SAN's frozen forward together (one forward for them all; frames of another
        size get their own, as padding them to one size would change their result); each is
        then decoded on its own, so every result equals `segment`'s of that frame (within
        the forward's floating-point reassociation: a batched matmul may sum in another
        order). A frame that fails is returned as its exception and the others are
        unaffected; when a batched forward fails, its frames are tried alone, so one bad
        frame fails alone."""
        out: list[FrameResult | Exception | None] = [None] * len(frames)
        groups: dict[tuple, list[int]] = {}
        for i, frame in enumerate(frames):
            key = np.shape(frame.rgb) if batch else (i,)
            groups.setdefault(key, []).append(i)
        for indices in groups.values():
            if len(indices) > 1:
                try:
                    results = self._segment_together([frames[i] for i in indices])
                except Exception:  # noqa: BLE001 - retried alone below, each with its error
                    log.warning("a batched forward of %d frames failed; segmenting them one "
                                "at a time", len(indices), exc_info=True)
                else:
                    for i, result in zip(indices, results):
                        out[i] = result
                    continue
            for i in indices:
                f = frames[i]
                try:
                    out[i] = self.segment(f.rgb, f.stamp_ns, f.depth, f.intrinsics, f.camera)
                except Exception as exc:  # noqa: BLE001 - one bad frame fails alone
                    out[i] = exc
        return out

    def _segment_together(self, frames: Sequence[CameraFrame]) -> list[FrameResult | Exception]:
        """Frames of one size through one forward, then decoded one by one; the forward's
        time is shared out evenly between them."""
        memories = [self.camera(f.camera) for f in frames]  # UnknownCamera before any work
        start = time.perf_counter()
        version = self.concepts_version  # read before the decode: see `after_model`
        features = self.segmenter.encode([f.rgb for f in frames])
        forward = (time.perf_counter() - start) / len(frames)
        out: list[FrameResult | Exception] = []
        for i, (frame, memory) in enumerate(zip(frames, memories)):
            try:
                start = time.perf_counter()
                own = _own_copy(features.select(i))  # the batch's tensors are not kept alive
                seg = self.segmenter.decode(own, held=self._in_view(memory.presence))
                seconds = forward + time.perf_counter() - start
                if frame.stamp_ns is not None:
                    memory.capture.add_encoding(frame.stamp_ns, own, features_nbytes(own),
                                                frame.rgb)
                result = self.after_model(seg, seconds, frame.depth, frame.intrinsics, version,
                                          frame.camera)
                result.batch = len(frames)
                out.append(result)
            except Exception as exc:  # noqa: BLE001 - one bad frame fails alone
                out.append(exc)
        return out

    def after_model(self, seg: Segmentation, model_seconds: float = 0.0,
                    depth: np.ndarray | None = None,
                    intrinsics: Intrinsics | None = None,
                    decoded_at: int | None = None, camera: str = UNNAMED) -> FrameResult:
        """What a frame needs after SAN: class ids, objects and concept masks. With a registered
        `depth` (metres, NaN or 0 = none; resampled when only its size differs) and the colour
        camera's `intrinsics`, objects carry 3D; a depth that cannot be used (another aspect,
        no intrinsics) skips 3D alone and says why in `depth_problem`. `decoded_at`: the
        `concepts_version` read before `seg` was decoded (None: `seg` was decoded with the
        concepts in use now), so that a frame decoded by a concept since replaced does not
        count for its successor (`_steady_presence`). `camera`: whose presence history the
        frame adds to."""
        presence = self.camera(camera).presence
        start = time.perf_counter()
        if decoded_at is None:
            decoded_at = self.concepts_version
        v = len(seg.class_names) - len(seg.personal_ids)
        ids = [self._class_ids.get(concept_id(n), UNLABELED) for n in seg.class_names[v:]]
        lut = np.concatenate([np.arange(v, dtype=np.uint16), np.array(ids, np.uint16)])
        labels = lut[seg.labels]
        objects, problem = frame_objects(seg.labels, seg.score,
                                         class_infos(seg.class_names, v, lut, self._stuff,
                                                     seg.identity),
                                         self.settings.objects, depth, intrinsics)
        objects = self._steady_presence(objects, seg, labels, decoded_at, presence)
        return FrameResult(labels, concept_masks(objects, *labels.shape), seg, model_seconds,
                           objects, time.perf_counter() - start, problem)

    def _steady_presence(self, objects: list[DetectedObject], seg: Segmentation,
                         labels: np.ndarray, decoded_at: int,
                         presence: PresenceFilter) -> list[DetectedObject]:
        """Each concept's entry as the camera's presence filter has it, and every output
        agreeing with it: a concept region that is not published (below the presence gate,
        or seen before the concept counts as present) goes back to its base word, in `labels`
        and `seg.labels` too (no base word in the vocabulary: unlabeled), and its entry is
        empty; a present concept missed in this frame stays present, without a region.
        A concept replaced (taught again, corrected, forgotten) starts a fresh history: the
        old concept's frames say nothing about the new one, and a frame decoded before the
        swap (`decoded_at`) is not counted (the concept is absent in it)."""
        concepts = {concept_id(c.name): c for c in self.segmenter.concepts}
        presence.keep_only(set(concepts))
        words = {w: i for i, w in enumerate(seg.class_names[: len(seg.class_names) -
                                                              len(seg.personal_ids)])}
        out, held_back = [], False
        for o in objects:
            if not o.concept_id:
                out.append(o)
                continue
            version = self._replaced.get(o.concept_id, 0)
            if decoded_at < version:  # decided by the concept it replaced
                present = presence.present(o.concept_id, version)
                o = dataclasses.replace(o, present=False)
            else:
                present = presence.update(o.concept_id, o.present, version)
            if present and o.present:
                out.append(o)
                continue
            if o.area:  # a region that is not published: its base word
                region = o.full_mask(*labels.shape)
                taught = concepts.get(o.concept_id)  # None: forgotten since the decode
                base = words.get(taught.base_class, UNLABELED) if taught else UNLABELED
                labels[region] = base
                seg.labels[region] = base
                held_back = True
            out.append(DetectedObject(o.class_id, o.name, o.concept_id, 0.0, 0, (0, 0, 0, 0),
                                      np.zeros((0, 0), bool), present=present))
        if held_back:  # the per-class scores follow the labels (`povss segment`'s classes)
            seg.class_scores = class_scores(seg.labels, seg.score)
        return out

    def overlay(self, rgb: np.ndarray, frame: FrameResult) -> np.ndarray:
        seg = frame.segmentation
        return overlay(rgb, seg.labels, seg.class_names, seg.personal_ids)

    # ---------------------------------------------------------------- teaching
    def teach(self, request: TeachRequest, progress: Progress | None = None) -> TeachOutcome:
        """Learn a concept; on any failure the store, the concepts and the ids are unchanged."""
        if self.store_unwritable:  # before any work: nothing could be stored
            return TeachOutcome(False, self.store_unwritable)
        if not self._teach_lock.acquire(blocking=False):
            return TeachOutcome(False, "another teach_concept is running; try again when it ends")
        with self._teach_flags:
            self.teaching = True
            self._abandon_reason = self._held  # a pause before this teach began holds too
        try:
            self._stop_if_abandoned()
            return self._teach(request, self._abandonable(progress))
        except TeachAbandoned as exc:
            return TeachOutcome(False, f"teach abandoned, nothing stored: {exc}")
        except TeachRefused as exc:
            return exc.outcome()
        except (ValueError, SegmenterError, CheckpointError, OSError) as exc:
            return TeachOutcome(False, str(exc))
        finally:
            with self._teach_flags:
                self.teaching = False
            self._teach_lock.release()

    def abandon_teach(self, reason: str, *, until_allowed: bool = False) -> bool:
        """Call off a running teach at its next model forward, frame or training iteration;
        True if one was running.

        The teach then fails with `reason` and stores nothing; `teaching` turns False once its
        caller has been answered. ``until_allowed``: every teach that begins before
        `allow_teaching` fails the same way (a node pausing: a teach whose request was being
        read when the pause came must not run after it).
        """
        with self._teach_flags:
            if until_allowed:
                self._held = reason
            self._abandon_reason = reason
            return self.teaching

    def _stop_if_abandoned(self) -> None:
        """TeachAbandoned once the running teach is called off (between two forwards or two
        training iterations)."""
        reason = self._abandon_reason
        if reason is not None:
            raise TeachAbandoned(reason)

    def allow_teaching(self) -> None:
        """Undo ``abandon_teach(..., until_allowed=True)``: teaches run again."""
        with self._teach_flags:
            self._held = None

    def _abandonable(self, progress: Progress | None) -> Progress:
        """`progress`, wrapped to raise TeachAbandoned once `abandon_teach` was called."""

        def step(it: int, total: int, loss: float) -> None:
            self._stop_if_abandoned()
            if progress is not None:
                progress(it, total, loss)

        return step

    def _teach(self, request: TeachRequest, progress: Progress) -> TeachOutcome:
        capture = self.camera(request.camera).capture  # UnknownCamera: a ValueError, refused
        captured = [] if request.images else capture.recent(
            request.num_frames or self.settings.teach_default_frames)
        if not request.images and not captured and len(self.cameras) > 1:
            raise ValueError(f"no frames captured yet on camera "
                             f"{request.camera or next(iter(self.cameras))!r}: is anything "
                             f"published on its image topic?")
        learned = learn(self.segmenter, request, captured, self.settings.teach, progress,
                        self._stored_examples, self._stop_if_abandoned)
        self._stop_if_abandoned()  # called off during the fit evaluation
        self.store.save(learned.concept, learned.report, learned.shots, self.fingerprint,
                        self.segmenter.model.cfg.name, learned.negatives)
        self._refresh_store_view()
        cid = learned.target.concept_id
        self._swap(cid, learned.concept)
        self._announce(sharing.TAUGHT, cid, self._meta[cid].get("created_at", ""))
        outcome = learned.outcome(self._class_ids[cid])
        if not request.images and len(self.cameras) > 1:  # whose frames, when there is a choice
            outcome.message += f"; frames of camera {request.camera or next(iter(self.cameras))}"
        return outcome

    def _announce(self, event: str, cid: str, stamp: str) -> None:
        """Tell `share_listener` of a teach or forget made here; its failure fails nothing."""
        if self.share_listener is None:
            return
        try:
            self.share_listener(event, cid, stamp)
        except Exception:  # noqa: BLE001 - the store already changed: only sharing failed
            log.exception("sharing %s of concept %s failed", event, cid)

    def _swap(self, cid: str, concept: Concept | None = None) -> None:
        """Take `cid`'s concept out of the segmenter and put `concept` (None: nothing) in its
        place, then record the replacement (after the swap, so that a frame that read the new
        version was decoded with the new concept: `_steady_presence`)."""
        kept = [c for c in self.segmenter.concepts if concept_id(c.name) != cid]
        self.segmenter.set_concepts(kept if concept is None else [*kept, concept])
        self.concepts_version += 1
        self._replaced[cid] = self.concepts_version

    def _stored_examples(self, cid: str) -> StoredExamples | None:
        """What the store holds for `cid` (None: nothing), for a teach to build on: its shots
        and look-alikes, how many of them could not be read back, what it was taught as, and
        why it is not in use when it is not (taught for other weights: skipped at start-up,
        still stored)."""
        meta = self._meta.get(cid)
        if meta is None:
            return None
        images, masks = self.store.load_shots(cid)
        negative_images, negative_masks = self.store.load_shots(cid, NEGATIVES)
        unreadable = {"shots": max(0, meta.get("shots", 0) - len(images)),
                      "look-alikes": max(0, meta.get("negatives", 0) - len(negative_images))}
        unused = ""
        if not any(concept_id(c.name) == cid for c in self.segmenter.concepts):
            unused = ("it was taught for other weights" if meta["model_fingerprint"] !=
                      self.fingerprint else "it could not be loaded for this model")
        info = meta["concept"]  # its fields' types are checked by the store
        return StoredExamples(images, masks, negative_images, negative_masks,
                              unique=info.get("unique", True), base_class=info["base_class"],
                              unused=unused, unreadable=unreadable)

    def auto_mask(self, rgb: np.ndarray, base: str) -> tuple[np.ndarray | None, str]:
        """The automatic teach mask of one frame (`shot_masks.auto_mask`), or None with why."""
        cfg = self.settings.teach
        view = look(self.segmenter, rgb, proposals=False)
        return auto_mask(view, base, cfg.auto_min_score, cfg.auto_dominance)

    def forget(self, name_or_id: str) -> tuple[bool, str]:
        """Remove a stored concept: a name first, else an exact id (`ConceptStore.resolve`)."""
        with self._teach_lock:
            why = self.store.unwritable()
            if why:
                return False, f"{why}; nothing forgotten"
            view = self.store.scan()
            cid, note = self.store.resolve(name_or_id, view)
            if cid is None:
                return False, note
            try:
                self.store.delete_id(cid)
            except OSError as exc:
                return False, f"cannot forget {cid}: {exc}"
            self._swap(cid)
            self._refresh_store_view()
            now = datetime.now(timezone.utc)
            note += self._remember_forgotten(cid, (now, self.node_id))
            self._announce(sharing.FORGOTTEN, cid, now.isoformat())
            return True, f"forgot {view.metas[cid]['name']!r} (id {cid}){note}"

    def _remember_forgotten(self, cid: str, when: tuple[datetime, str]) -> str:
        """Keep the forget of `cid` (time, node) in memory and in the store; "" or, when the
        store could not record it, a note saying what that means (the forget itself stands)."""
        gone = self._forgotten.get(cid)
        if gone is not None and not sharing.newer(*when, *gone):
            return ""
        self._forgotten[cid] = when
        try:
            self.store.remember_forgotten(cid, *when)
        except OSError as exc:
            log.warning("could not record that %s was forgotten: %s", cid, exc)
            return (f" (not recorded in the store: {exc}; after a restart an older shared "
                    "copy could be adopted again)")
        return ""

    # ---------------------------------------------------------------- sharing
    def shared_message(self, event: str, cid: str, stamp: str, shots: bool = False) -> bytes:
        """The message telling other nodes of a teach (the stored files of `cid`, with its
        shots and look-alikes when `shots`) or a forget (`shared.pack`)."""
        files, examples = None, None
        if event == sharing.TAUGHT:
            folder = self.store.path(cid)
            files = {sharing.META_KEY: read_bounded(folder / META, MAX_META_BYTES),
                     sharing.TENSORS_KEY: read_bounded(folder / TENSORS, MAX_TENSOR_BYTES)}
            if shots:
                examples = {kind: list(zip(*self.store.load_shots(cid, kind)))
                            for kind in sharing.KINDS}
        return sharing.pack(event, self.node_id, cid, self.fingerprint, stamp, files, examples)

    def _version(self, meta: dict) -> tuple[datetime, str]:
        """(created_at, node that taught it) of a stored concept, for `shared.newer`; a
        concept with no readable created_at loses to any shared one."""
        try:
            stamp = sharing.parse_stamp(meta.get("created_at"))
        except ConceptError:
            stamp = datetime.min.replace(tzinfo=timezone.utc)
        origin = meta.get("shared_from")
        return stamp, origin if isinstance(origin, str) else self.node_id

    def adopt_shared(self, data: bytes) -> tuple[str, str]:
        """Take a concept message of another node: checked as a stored concept is at load
        (`shared.unpack`; ConceptError, and nothing stored, when it fails), then, when it is
        newer than what this node holds of that id (`shared.newer`), committed atomically to
        the store and swapped in like a teach (a forget: removed like a forget). Returns (what
        was done, "" when nothing was: this node's own message, or not newer; a warning, ""
        when none: the concept's class id here is not the sender's, `ConceptStore.adopt`)."""
        cfg = self.segmenter.model.cfg
        msg = sharing.unpack(data, self.fingerprint, cfg.num_queries, cfg.embed_dim)
        if msg.sender == self.node_id:
            return "", ""
        note = ""
        with self._teach_lock:
            if self.store_unwritable:
                raise ConceptError(f"{self.store_unwritable}; nothing adopted")
            cid, when = msg.concept_id, (msg.stamp, msg.sender)
            local = self.store.scan().metas.get(cid)
            gone = self._forgotten.get(cid)
            if msg.event == sharing.FORGOTTEN:
                note = self._remember_forgotten(cid, when).strip(" ()")
                if local is None or not sharing.newer(*when, *self._version(local)):
                    return "", note
                self.store.delete_id(cid)
                action = f"forgot {local['name']!r} (id {cid})"
                self._swap(cid)
            else:
                if gone is not None and not sharing.newer(*when, *gone):
                    return "", ""  # forgotten since it was taught
                if local is not None and not sharing.newer(*when, *self._version(local)):
                    return "", ""
                _, note = self.store.adopt(msg.meta, msg.tensors, msg.examples)
                self._swap(cid, msg.concept)
                action = f"adopted {msg.meta['name']!r} (id {cid})"
            self._refresh_store_view()
            if cid in self._class_ids:
                action += f", class id {self._class_ids[cid]}"
            return f"{action}, as {msg.sender} shared it", note


def _own_copy(features: SANFeatures) -> SANFeatures:
    """One image's features in tensors of their own (a slice of a batch keeps the whole
    batch's storage alive, and would be counted at its slice's size)."""
    return SANFeatures(features.mask_embeddings.clone(), features.mask_logits.clone(),
                       features.dense_features.clone(), features.geometry)


def build_engine(settings: EngineSettings,
                 cameras: Sequence[str] = (UNNAMED,)) -> PerceptionEngine:
    """Start-up: load weights (or fail clearly), vocabulary, concept store; one engine for
    the `cameras` (`PerceptionEngine`)."""
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
            compile_mode=settings.compile, resize=settings.resize)
    except (CheckpointError, SegmenterError, ValueError) as exc:
        # Name the parameter the error is about: a SettingError or VocabularyError says which.
        name = getattr(exc, "setting", "weights")
        value = getattr(settings, name, settings.weights)
        shown = f"{len(value)} words" if isinstance(value, list) else value
        raise StartupError(f"parameter '{name}' ({shown}): {exc}") from exc
    try:  # an unwritable store is not fatal: the engine runs without teaching
        store = ConceptStore(Path(settings.concept_store).expanduser())
    except (OSError, RuntimeError) as exc:  # e.g. a symbolic-link loop in the path
        raise StartupError(f"parameter 'concept_store' ({settings.concept_store}): {exc}") from exc
    prepare_optimizer()  # the first teach must not pay the optimizer's import
    return PerceptionEngine(seg, store, settings, cameras)
