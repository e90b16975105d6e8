"""The one high-level API: weights + vocabulary + device in, label maps out.

The CLI, the ROS node and the evaluation all go through `Segmenter`; none of them reaches
into `san/` internals. `encode` runs the frozen model once per image; `decode` turns those
features into a label map for the current vocabulary and any set of personal concepts.
Teaching taps `encode` too, so a concept is trained against exactly the features inference
will see.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from .personal.concept import Concept
from .personal.fusion import decode_concepts
from .personal.identity import (
    MIN_SIMILARITY,
    STAY_SIMILARITY,
    UNDECIDED,
    FrameRegions,
    keep_one,
    uses_identity,
)
from .precision import AUTO as AUTO_PRECISION
from .precision import CHOICES as PRECISION_CHOICES
from .precision import PRECISIONS, auto_precision, emulation_warning
from .san.checkpoint import guess_variant, load_state, read_state_dict
from .san.compiled import Encoder
from .san.config import get_config
from .san.model import SAN, SANFeatures, build_san
from .san.resize import check_mode
from .san.semantic import class_probs, masks_to_image
from .settings import EngineSettings
from .vocabulary import AUTO, DEFAULT_VOCABULARY, UNLABELED, parse_vocabulary
from .weights import config_for_weights, declared_vocabulary

log = logging.getLogger(__name__)

# The frame geometry SAN segments: SAN scales the shorter side up to min_size unless that
# would take the longer side past max_size; a frame so thin that the capped longer side leaves
# the shorter under one ViT patch (16 px) is refused (below half a pixel the resize itself
# fails; below a patch SAN sees mostly padding). Small frames are fine: they are scaled up.
MIN_SIDE = 16


def frame_problem(height: int, width: int, max_size: int) -> str | None:
    """Why SAN (longer side capped at `max_size`) cannot segment a `width`x`height` frame, or
    None: after SAN's resize the shorter side must keep at least `MIN_SIDE` px, that is the
    longer side may be at most max_size / MIN_SIDE times the shorter."""
    short, long = min(height, width), max(height, width)
    if short < 1 or long * MIN_SIDE > max_size * short:
        return (f"frame {width}x{height} is too thin for SAN: its longer side may be at most "
                f"{max_size / MIN_SIDE:g} times the shorter (the model scales the longer side to "
                f"at most {max_size} px, which must leave the shorter at least {MIN_SIDE} px)")
    return None


class SegmenterError(RuntimeError):
    """A request the segmenter cannot serve, with what to change in the message."""


@dataclass(frozen=True)
class Proposal:
    """One of SAN's mask proposals at the image's size, read under the open vocabulary."""

    mask: np.ndarray  # bool [H, W]: where its mask logit is positive
    word: str  # its most probable vocabulary word
    probability: float  # that word's probability (void dropped after the softmax)


@dataclass
class Segmentation:
    """One image's result. `labels` ids index `class_names`.

    `score` is the winning class's SAN score per pixel: the sum over mask proposals of
    P(class | proposal) x sigmoid(proposal). It ranks pixels and classes, but it is not a
    probability: where proposals overlap it exceeds 1.
    """

    labels: np.ndarray  # [H, W] uint16
    score: np.ndarray  # [H, W] float32, see above
    class_names: list[str]
    class_scores: dict[int, float] = field(default_factory=dict)  # mean `score` per class
    personal_ids: list[int] = field(default_factory=list)
    # Label id of each concept decided by identity -> its best region's similarity to the
    # shots (NaN: no candidate region; `personal.identity`).
    identity: dict[int, float] = field(default_factory=dict)

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


class SettingError(SegmenterError):
    """A SegmenterError about one setting; `setting` names it (the node's parameter and the
    CLI's flag of that name), so a caller can say which value to change."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present; asking for CUDA without one (or for a GPU index that
    is not there) is an error naming the `device` setting, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:  # torch's "Invalid device string"
        raise SettingError("device", f"device {device!r} is not a device: use auto, cpu, cuda "
                           f"or cuda:N ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingError("device", f"device {device!r} requested but CUDA is not "
                               "available here: use auto or cpu")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SettingError("device", f"device {device!r} requested but this machine has "
                               f"{count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return dev


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str]:
    """(precision, why) for a requested one on `device`, decided once at start-up and logged:
    "auto" is the fastest the device has natively (`precision.choose`); an explicit request
    runs as asked, with one warning when the device only emulates it (a measured matmul).
    fp16 on a CPU is refused; every refusal names the `precision` setting."""
    if precision not in PRECISION_CHOICES:
        raise SettingError(
            "precision", f"precision must be one of {list(PRECISION_CHOICES)}, got {precision!r}")
    if precision == AUTO_PRECISION:
        choice = auto_precision(device)
        log.info("precision auto on %s: %s (%s)", device, choice.precision, choice.reason)
        return choice.precision, f"auto: {choice.reason}"
    if precision == "fp16" and device.type != "cuda":
        raise SettingError("precision",
                           "precision fp16 needs a CUDA device; use auto, fp32 or bf16 on the CPU")
    warning = emulation_warning(precision, device)
    if warning:
        log.warning("%s", warning)
    return precision, "requested" + (" (emulated here)" if warning else "")


class Segmenter:
    """SAN plus a vocabulary on one device; `segment(image)` returns a `Segmentation`."""

    def __init__(
        self,
        model: SAN,
        vocabulary: str | Sequence[str] = AUTO,
        device: str = "auto",
        precision: str = "fp32",
        random_weights: bool = False,
        text_cache_dir: str | os.PathLike | None = None,
        known_words: Sequence[str] | None = None,
        compile_mode: str = "off",
        resize: str = EngineSettings.resize,
    ) -> None:
        """``vocabulary`` "auto": ``known_words`` if given, else COCO-Stuff's 171 words.
        ``known_words``: the words the weights were trained on, when the file declares them;
        other vocabulary words are accepted with a warning (their text rows are untrained).
        ``text_cache_dir``: keep the vocabulary's text rows on disk there (`text_cache`), so
        the next start skips the text tower; None: compute them every time.
        ``precision``: fp32 (the default: exact, reproducible), bf16, fp16 (CUDA only) or
        auto, the fastest the device has natively (`resolve_precision`; the node and `povss`
        default to auto). `precision` holds the one decided, `precision_reason` why.
        ``compile_mode``: torch.compile the frozen forward (`san.compiled`); call `warm_up`.
        ``resize``: how frames are resized for SAN (`resize`); its default is the settings'
        (`EngineSettings.resize`, SAN's official resize), the one every entry point uses."""
        self.device = resolve_device(device)
        self.precision, self.precision_reason = resolve_precision(precision, self.device)
        self.random_weights = random_weights
        self.known_words = list(known_words) if known_words is not None else None
        # SAN's -100 attention masks and confident softmax/sigmoid outputs produce subnormal
        # floats (< 1e-38). They carry no information at fp32 yet make CPU matmuls several
        # times slower, so flush them to zero (process-wide, CPU only).
        torch.set_flush_denormal(True)
        self.model = model.to(self.device).eval()
        self.resize = resize
        self._native_min_size = model.cfg.min_size
        for p in self.model.parameters():
            p.requires_grad_(False)
        self._state = _State((), None, ())
        # Held by whatever replaces `_state` or moves the model (frames only read `_state`):
        # one change at a time, so none undoes another or leaves tensors on two devices.
        self._changes = threading.RLock()
        # How like its shots a region must be to be a unique concept (`personal.identity`), and
        # to stay one while the caller holds it in view (`decode`'s `held`).
        self.identity_min_similarity = MIN_SIMILARITY
        self.identity_stay_similarity = STAY_SIMILARITY
        self.encoder = Encoder(self.model, compile_mode, PRECISIONS[self.precision])
        self._text_cache = None
        if text_cache_dir is not None and not random_weights:
            from .text_cache import TextRowCache

            self._text_cache = TextRowCache(text_cache_dir, self.model.ov_classifier)
        self.set_vocabulary(vocabulary)

    @classmethod
    def from_weights(
        cls,
        weights: str | os.PathLike | None,
        vocabulary: str | Sequence[str] = AUTO,
        variant: str | None = None,
        device: str = "auto",
        precision: str = "fp32",
        seed: int = 0,
        text_cache_dir: str | os.PathLike | None = None,
        compile_mode: str = "off",
        resize: str = EngineSettings.resize,
    ) -> Segmenter:
        """Load a checkpoint, or build random weights when `weights` is None (said loudly).

        ``vocabulary`` "auto": the words the file declares (`weights.declared_vocabulary`), else
        COCO-Stuff's. ``text_cache_dir`` is used for real weights only (random rows are not
        worth keeping). A compiled model (``compile_mode``) is warmed up here, at a 4:3 frame
        of the model's input size, so compiling happens at start-up."""
        if weights is None:
            cfg = get_config(variant or "vit_b16")
            log.warning(
                "no weights given: SAN %s runs with RANDOM weights (seed %d)", cfg.name, seed
            )
            seg = cls(build_san(cfg, seed), vocabulary, device, precision, random_weights=True,
                      compile_mode=compile_mode, resize=resize)
        else:
            state = read_state_dict(weights)
            if variant is None and not str(weights).endswith(".safetensors"):
                variant = guess_variant(state)
            model = build_san(config_for_weights(weights, variant), seed=None)
            load_state(model, state, str(weights))
            seg = cls(model, vocabulary, device, precision, text_cache_dir=text_cache_dir,
                      known_words=declared_vocabulary(weights), compile_mode=compile_mode,
                      resize=resize)
        if compile_mode != "off":
            short = seg.model.cfg.min_size
            log.info("compiling SAN's forward (%s) at %dx%d", compile_mode, short * 4 // 3, short)
            seg.warm_up(short, short * 4 // 3)
        return seg

    # ---------------------------------------------------------------- vocabulary, concepts
    @property
    def default_vocabulary(self) -> list[str]:
        """The words the weights declare, else COCO-Stuff's (the official checkpoints')."""
        return list(self.known_words) if self.known_words else parse_vocabulary(DEFAULT_VOCABULARY)

    def unknown_words(self, words: Sequence[str]) -> list[str]:
        """Words outside the ones the weights declare ([] when they declare none)."""
        if not self.known_words:
            return []
        known = set(self.known_words)
        return [w for w in words if w not in known]

    def set_vocabulary(self, vocabulary: str | Sequence[str]) -> None:
        """Replace the open vocabulary; text embeddings are computed once per new word.

        A one-element list is taken as that string (a ROS string-array parameter holding
        "auto", "coco_stuff" or a file name). "auto" is `default_vocabulary`. Words the
        weights do not declare are kept, with one warning naming them."""
        if not isinstance(vocabulary, str) and len(vocabulary) == 1:
            vocabulary = vocabulary[0]
        words = parse_vocabulary(self.default_vocabulary if vocabulary == AUTO else vocabulary)
        unknown = self.unknown_words(words)
        if unknown:
            log.warning(
                "%d vocabulary word(s) unknown to this model, which was trained on %d words "
                "(%s): %s; their labels will be unreliable", len(unknown), len(self.known_words),
                ", ".join(self.known_words[:20]), ", ".join(unknown[:20]))
        with self._changes:  # the rows on the model's device, whatever moves it meanwhile
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
        with self._changes:  # on the device the model is on once a move in progress ends
            moved = tuple(c.to(self.device).eval() for c in concepts)
            self._state = _State(self._state.vocabulary, self._state.text_rows, moved)

    def move_to(self, device: torch.device) -> None:
        """Move the model, text rows and concepts to `device` (e.g. off the GPU and back)."""
        with self._changes:  # a concept or vocabulary set meanwhile waits, then follows
            state = self._state
            rows = state.text_rows.to(device) if state.text_rows is not None else None
            concepts = tuple(c.to(device) for c in state.concepts)
            self.encoder.release()
            self.model.to(device)
            self.device = device
            self._state = _State(state.vocabulary, rows, concepts)

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

    @property
    def resize(self) -> str:
        """How frames are resized for SAN (`san.resize`): "exact" (the official PIL resize)
        or "fast" (torch, on the device). Kept on the model, so teaching resizes alike."""
        return self.model.resize

    @resize.setter
    def resize(self, mode: str) -> None:
        self.model.resize = check_mode(mode)

    @property
    def input_min_size(self) -> int:
        """The shorter side frames are scaled to before SAN (SAN's `min_size`)."""
        return self.model.cfg.min_size

    @input_min_size.setter
    def input_min_size(self, size: int) -> None:
        """Scale frames' shorter side to `size` (0 or less: the weights' own)."""
        self.model.cfg = dataclasses.replace(
            self.model.cfg, min_size=size if size > 0 else self._native_min_size)

    # ---------------------------------------------------------------- inference
    def frame_problem(self, image: np.ndarray) -> str | None:
        """Why this model cannot segment `image` (its size, `frame_problem`), or None."""
        h, w = np.shape(image)[:2]
        return frame_problem(int(h), int(w), self.model.cfg.max_size)

    def warm_up(self, height: int, width: int, times: int = 2) -> None:
        """Run `times` frames of this size through the model: compiles the forward (when
        compiled) and settles the allocator and kernel choices, so the first camera frame is
        not slow."""
        frame = np.full((height, width, 3), 128, np.uint8)
        for _ in range(times):
            self.decode(self.encode(frame))

    @torch.no_grad()
    def encode(self, images: np.ndarray | list[np.ndarray]) -> SANFeatures:
        """The frozen forward (Z, M, F) for RGB uint8 images; what teaching caches.
        SegmenterError for a frame SAN cannot segment (`frame_problem`)."""
        for img in images if isinstance(images, list) else [images]:
            problem = self.frame_problem(img) if np.ndim(img) >= 2 else None
            if problem:
                raise SegmenterError(problem)
        try:
            pixels, geometry = self.model.preprocess(images)
            return self.encoder(pixels, geometry)
        except torch.cuda.OutOfMemoryError as exc:
            torch.cuda.empty_cache()
            shapes = [img.shape[:2] for img in (images if isinstance(images, list) else [images])]
            raise SegmenterError(
                f"GPU out of memory segmenting images of size {shapes} at {self.precision}; "
                "try precision fp16/bf16, a smaller input resolution or fewer images at once"
            ) from exc

    @torch.no_grad()
    def decode(
        self,
        features: SANFeatures,
        concepts: Sequence[Concept] | None = None,
        *,
        index: int = 0,
        joint: bool = False,
        identity: bool = True,
        held: Collection[str] = (),
    ) -> Segmentation:
        """SAN's semantic inference with class rows [vocabulary; concepts; void] for one image.

        ``concepts`` None: the ones set with `set_concepts`; ``()``: none (plain SAN over the
        vocabulary). A concept adds its class row and, when it has one, its negative mask
        proposal (`personal.concept.personal_logits`); several concepts each decide as if
        alone and are fused (`personal.fusion`; ``joint``: all in one softmax instead, for
        comparison). A concept taught as one object then keeps at most one region, the one
        most like its shots (`personal.identity`; ``identity`` False: every region the
        classifier gives it, the paper's rule): a region at least `identity_min_similarity`
        like them, or `identity_stay_similarity` for the concepts named in ``held`` (those the
        caller already sees in this camera's view). With no concepts, or only concepts whose
        components are all off, this is plain SAN bit for bit.
        """
        state = self._state  # one snapshot: a vocabulary set meanwhile is the next frame's
        chosen = state.concepts if concepts is None else tuple(concepts)
        seg = self._decode_with(state, chosen, features, index, joint)
        if identity:
            self._keep_one_each(seg, state, chosen, features, index, held)
        return seg

    def _decode_with(self, state: _State, concepts: tuple[Concept, ...],
                     features: SANFeatures, index: int, joint: bool = False) -> Segmentation:
        """The fused decoding of image `index` with the vocabulary of `state`."""
        z = features.mask_embeddings[index : index + 1]
        m = features.mask_logits[index : index + 1]
        score, labels = decode_concepts(
            self.model, state.text_rows, concepts, z, m, features.geometry, index, joint
        )
        v = len(state.vocabulary)
        names = [*state.vocabulary, *(c.name for c in concepts)]
        return self._to_segmentation(score, labels, names, list(range(v, v + len(concepts))))

    def _keep_one_each(self, seg: Segmentation, state: _State, concepts: Sequence[Concept],
                       features: SANFeatures, index: int, held: Collection[str] = ()) -> None:
        """Each concept taught as one object keeps at most its one region (`identity`), in
        place, the other concepts of its base word as its rivals; pixels taken from it whose
        base word is not in the vocabulary get plain SAN's label (of the same `state`).
        `seg.identity` records each such concept's best similarity."""
        v = len(state.vocabulary)
        words = {w: i for i, w in enumerate(state.vocabulary)}
        one_image, plain = features.select(index), None
        regions = FrameRegions(one_image)  # found once, again only where a concept changed
        for k, concept in enumerate(concepts):
            if not uses_identity(concept):
                continue
            others = [c.f_per.reshape(1, -1) for j, c in enumerate(concepts)
                      if j != k and c.base_class == concept.base_class and uses_identity(c)]
            own, base = v + k, words.get(concept.base_class)
            fixed = [v + j for j in range(len(concepts)) if j != k]  # theirs, never taken
            least = (self.identity_stay_similarity if concept.name in held
                     else self.identity_min_similarity)
            seg.labels, choice = keep_one(seg.labels, own, base, one_image, concept, least,
                                          torch.cat(others) if others else None, fixed,
                                          regions)
            seg.identity[own] = choice.similarity
            undecided = seg.labels == UNDECIDED
            if undecided.any():
                plain = plain or self._decode_with(state, (), features, index)
                seg.labels[undecided] = plain.labels[undecided]
                seg.score[undecided] = plain.score[undecided]
        if seg.identity:
            seg.class_scores = class_scores(seg.labels, seg.score)

    @torch.no_grad()
    def proposals(self, features: SANFeatures, index: int = 0) -> list[Proposal]:
        """SAN's mask proposals of image `index` at its own size, each with its most probable
        vocabulary word (no personal concepts): what an operator's box or point picks from."""
        model, words = self.model, self.vocabulary
        rows = model.class_rows(self.text_rows)
        logits = model.class_logits(features.mask_embeddings[index : index + 1], rows)
        best = class_probs(logits[0]).max(dim=1)
        masks = features.mask_logits[index]
        return [Proposal((masks_to_image(masks[q : q + 1], features.geometry, index)[0] > 0)
                         .cpu().numpy(), words[int(best.indices[q])], float(best.values[q]))
                for q in range(masks.shape[0])]

    def segment(self, image: np.ndarray) -> Segmentation:
        """RGB uint8 HxWx3 image -> Segmentation at the image's own size."""
        return self.decode(self.encode(image))

    @staticmethod
    def _to_segmentation(
        score: torch.Tensor,
        labels: torch.Tensor,
        names: list[str],
        personal_ids: Sequence[int] = (),
    ) -> Segmentation:
        both = torch.stack([labels.to(torch.int32), score.float().view(torch.int32)]).cpu()
        labels_np = both[0].numpy().astype(np.uint16)  # one copy off the device per frame
        score_np = both[1].view(torch.float32).numpy()
        return Segmentation(labels_np, score_np, names, class_scores(labels_np, score_np),
                            list(personal_ids))


def class_scores(labels: np.ndarray, score: np.ndarray) -> dict[int, float]:
    """The mean `score` of each class present in `labels` (unsigned integers; `UNLABELED`,
    no class, left out)."""
    flat = labels.ravel()
    sums = np.bincount(flat, weights=score.ravel())
    counts = np.bincount(flat, minlength=len(sums))
    return {int(i): float(sums[i] / counts[i]) for i in np.flatnonzero(counts)
            if i != UNLABELED}
