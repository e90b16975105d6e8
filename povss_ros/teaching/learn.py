"""Teaching: one request taken from validation to a fitted concept, ready to be stored.

The one home of a teach's rules. The request is checked (the name, the base class, whether
it would replace a concept); its frames are gathered (explicit images, else the newest
captured frames) and each is given a shot mask (`shot_masks`) or rejected with its reason;
the shots are encoded (a captured frame's kept encoding spares its forward); the concept is
fitted (`teach.teach`); the outcome is worded for the caller. The engine
(`perception.PerceptionEngine`) only serialises teaches, stores the concept and swaps it in.
No ROS here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..capture import CapturedFrame
from ..personal.concept import Concept
from ..personal.names import canonical_name, concept_id
from ..personal.shots import ShotFeatures, cache_shots
from ..personal.teach import Progress, TeachConfig, TeachReport, teach
from ..segmenter import Segmenter
from .requests import TeachOutcome, TeachRefused, TeachRequest
from .review import review_picture
from .shot_masks import (
    FrameNote,
    auto_mask,
    box_mask,
    look,
    mask_problem,
    parse_prompts,
    point_mask,
)

# A vocabulary this long or shorter is listed in full when a base class is not in it.
LISTED_WORDS = 30


@dataclass(frozen=True)
class TeachTarget:
    """Which concept a request teaches: its display name, id and base class word."""

    name: str
    concept_id: str
    base_class: str


@dataclass(frozen=True)
class TeachFrame:
    """One frame a teach looks at, before its shot mask is decided."""

    label: str  # "image 2", "frame stamped 12.345s"
    rgb: np.ndarray
    mask: np.ndarray | None  # an explicit mask for it (the request's or a `teach_mask`)
    source: str  # where that mask came from
    encoding: object | None  # its SAN features, when the node kept them


@dataclass
class Gathered:
    """The shots a teach trains on, the frames it rejected and the picture that explains it."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    rejected: list[str]  # one "<frame label>: <reason>" per rejected frame
    review: np.ndarray | None
    encodings: list[object | None]  # each shot's SAN features when the node kept them


@dataclass
class Learned:
    """A fitted concept that is not stored yet, with what it was learned from."""

    target: TeachTarget
    concept: Concept
    report: TeachReport
    shots: list[ShotFeatures]
    gathered: Gathered

    def outcome(self, class_id: int) -> TeachOutcome:
        """The caller's answer once the concept is stored under `class_id`."""
        report, rejected = self.report, self.gathered.rejected
        fit = report.fit_iou
        message = (f"learned {self.target.name!r} (id {self.target.concept_id}) from "
                   f"{len(self.shots)} shot(s) in {report.seconds:.2f}s, "
                   + (f"fit IoU {fit:.2f}" if fit == fit else "fit not measured"))
        if rejected:
            message += f"; rejected {len(rejected)} frame(s): " + "; ".join(rejected)
        return TeachOutcome(
            success=True, message=message, concept_id=self.target.concept_id,
            class_id=class_id, shots_used=len(self.shots), frames_rejected=len(rejected),
            training_seconds=float(report.seconds), fit_iou=float(fit),
            rejected_frames=rejected, review=self.gathered.review)


def check_target(request: TeachRequest, vocabulary: Sequence[str],
                 existing: set[str]) -> TeachTarget:
    """The concept `request` teaches; TeachRefused for a name with path parts, an empty or
    unknown base class, or a name already taken (`existing` ids) without `overwrite`.
    ValueError (`names.canonical_name`) for an empty name or one with control characters."""
    if any(sep in request.name for sep in ("/", "\\")) or request.name.strip() in (".", ".."):
        raise TeachRefused(f"invalid concept name {request.name!r}: no path parts")
    name = canonical_name(request.name)
    cid = concept_id(request.name)
    base = request.base_class.strip()
    if not base:
        raise TeachRefused("base_class is empty: name the word this concept is a kind of")
    if base not in vocabulary:
        listed = f": {', '.join(vocabulary)}" if len(vocabulary) <= LISTED_WORDS else ""
        raise TeachRefused(
            f"base_class {base!r} is not in the vocabulary ({len(vocabulary)} words{listed}); "
            "name one of its words, or add the word to the vocabulary first")
    if cid in existing and not request.overwrite:
        raise TeachRefused(f"a concept named {name!r} exists (id {cid}); set overwrite to "
                           "replace it")
    return TeachTarget(name, cid, base)


def teach_frames(request: TeachRequest, captured: Sequence[CapturedFrame]) -> list[TeachFrame]:
    """The frames a teach looks at, oldest first: the request's images, else `captured`.
    ValueError for masks without images, a mask count other than the images', no frame at
    all, or an image that is not RGB uint8."""
    if request.masks and not request.images:
        raise ValueError("masks were given without images")
    if request.images:
        if request.masks and len(request.masks) != len(request.images):
            raise ValueError(f"{len(request.images)} images but {len(request.masks)} masks: give "
                             "one mask per image, or none for automatic masks")
        masks = list(request.masks) or [None] * len(request.images)
        frames = [TeachFrame(f"image {i}", np.asarray(img), m, "given mask", None)
                  for i, (img, m) in enumerate(zip(request.images, masks))]
    else:
        if not captured:
            raise ValueError("no camera frames captured yet: is anything published on image?")
        frames = [TeachFrame(f"frame stamped {f.stamp_ns / 1e9:.3f}s", f.rgb, f.mask,
                             "teach mask", f.encoding) for f in captured]
    for frame in frames:
        img = frame.rgb
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
            raise ValueError(f"{frame.label}: expected an RGB uint8 HxWx3 image, got "
                             f"{img.dtype} {img.shape}")
    return frames


def gather_shots(
    segmenter: Segmenter,
    request: TeachRequest,
    captured: Sequence[CapturedFrame],
    base: str,
    min_score: float,
    dominance: float,
) -> Gathered:
    """Each frame's shot mask: an explicit mask, else its prompt's (a prompt wins over a
    `teach_mask` of the same frame: it is the request's own word), else the automatic mask
    (`auto_mask` with `min_score` and `dominance`); frames without one, frames SAN cannot
    segment (`Segmenter.frame_problem`) and frames whose explicit mask is unusable
    (`shot_masks.mask_problem`) are rejected with the reason, alone. ValueError for a
    malformed request."""
    frames = teach_frames(request, captured)
    shapes = [(f.label, f.rgb.shape[:2]) for f in frames]
    prompts = parse_prompts(request.boxes, request.points, shapes, bool(request.masks))
    notes = []
    for frame, prompt in zip(frames, prompts):
        problem = (segmenter.frame_problem(frame.rgb)
                   or mask_problem(frame.mask, frame.source, frame.rgb.shape[:2]))
        if problem or (prompt is None and frame.mask is not None):  # rejected alone, or its mask
            notes.append(FrameNote(frame.label, frame.rgb, None if problem else frame.mask,
                                   problem or frame.source, encoding=frame.encoding))
            continue
        view = look(segmenter, frame.rgb, proposals=prompt is not None, features=frame.encoding)
        if prompt is None:
            chosen, how = auto_mask(view, base, min_score, dominance)
        else:
            chosen, how = (box_mask if prompt.kind == "box" else point_mask)(view, prompt.xy)
            how = f"{prompt.describe()}: {how}"
        shown = None if chosen is not None else view  # a rejected frame shows its candidates
        notes.append(FrameNote(frame.label, frame.rgb, chosen, how, prompt, shown, view.features))
    used = [n for n in notes if n.mask is not None]
    return Gathered([n.rgb for n in used], [n.mask for n in used],
                    [f"{n.label}: {n.how}" for n in notes if n.mask is None],
                    review_picture(notes, base), [n.encoding for n in used])


def learn(
    segmenter: Segmenter,
    request: TeachRequest,
    captured: Sequence[CapturedFrame],
    cfg: TeachConfig,
    progress: Progress | None = None,
) -> Learned:
    """Validate `request`, gather its shots (from `captured` when it has no images) and fit
    the concept against the segmenter's current vocabulary. TeachRefused (a ValueError) with
    the reason, the rejected frames and the review picture when it cannot; nothing is stored
    here either way."""
    existing = {concept_id(c.name) for c in segmenter.concepts}
    target = check_target(request, segmenter.vocabulary, existing)
    gathered = gather_shots(segmenter, request, captured, target.base_class,
                            cfg.auto_min_score, cfg.auto_dominance)
    if not gathered.images:
        raise TeachRefused("no usable shots: " + "; ".join(gathered.rejected),
                           gathered.rejected, gathered.review)
    shots = cache_shots(segmenter, gathered.images, gathered.masks, gathered.encodings)
    concept, report = teach(
        segmenter.model, segmenter.text_rows, segmenter.vocabulary.index(target.base_class),
        shots, cfg, name=request.name.strip(), base_class=target.base_class, progress=progress)
    return Learned(target, concept, report, shots, gathered)
