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

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..capture import CapturedFrame
from ..personal.concept import Concept
from ..personal.names import canonical_name, concept_id
from ..personal.shots import ShotFeatures, cache_shots
from ..personal.store import MAX_LOOK_ALIKES
from ..personal.teach import Progress, TeachConfig, TeachReport, teach
from ..segmenter import Segmenter
from .requests import TeachOutcome, TeachRefused, TeachRequest
from .review import review_picture
from .shot_masks import (
    MIN_AREA_FRACTION,
    FrameNote,
    FrameView,
    Prompt,
    auto_mask,
    box_mask,
    look,
    mask_problem,
    parse_prompts,
    point_mask,
)

# A vocabulary this long or shorter is listed in full when a base class is not in it.
LISTED_WORDS = 30
# A look-alike may share at most this fraction of the smaller of its mask and the positive's.
OVERLAP_SHARE = 0.1
# Where a captured frame's mask came from: the `teach_mask` topic.
TEACH_MASK = "teach mask"


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
    # "Not this one": look-alikes, each an image, its mask and its features when known.
    negative_images: list[np.ndarray] = field(default_factory=list)
    negative_masks: list[np.ndarray] = field(default_factory=list)
    negative_encodings: list[object | None] = field(default_factory=list)


@dataclass
class StoredExamples:
    """A stored concept as a teach sees it: its shots and look-alikes (images, masks), what a
    correction adds to and an overwrite keeps the look-alikes of, and what it was taught as.
    `unused` says why it is stored but not in use ("" when it is in use): a concept taught
    for other weights is fitted again by a correction, never replaced without `overwrite`.
    `unreadable` counts the stored "shots" and "look-alikes" that could not be read back."""

    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    negative_images: list[np.ndarray] = field(default_factory=list)
    negative_masks: list[np.ndarray] = field(default_factory=list)
    unique: bool = True
    base_class: str = ""
    unused: str = ""
    unreadable: dict[str, int] = field(default_factory=dict)


# What a teach asks of the store: a concept id's stored examples, None when it has none.
StoredLookup = Callable[[str], StoredExamples | None]


@dataclass
class Learned:
    """A fitted concept that is not stored yet, with what it was learned from."""

    target: TeachTarget
    concept: Concept
    report: TeachReport
    shots: list[ShotFeatures]
    gathered: Gathered
    negatives: list[ShotFeatures] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what became of the stored examples

    def outcome(self, class_id: int) -> TeachOutcome:
        """The caller's answer once the concept is stored under `class_id`."""
        report, rejected = self.report, self.gathered.rejected
        fit = report.fit_iou
        message = (f"learned {self.target.name!r} (id {self.target.concept_id}) from "
                   f"{len(self.shots)} shot(s)"
                   + (f" and {len(self.negatives)} look-alike(s)" if self.negatives else "")
                   + f" in {report.seconds:.2f}s, "
                   + (f"fit IoU {fit:.2f}" if fit == fit else "fit not measured"))
        if self.notes:
            message += "; " + "; ".join(self.notes)
        if rejected:
            message += f"; rejected {len(rejected)} frame(s): " + "; ".join(rejected)
        return TeachOutcome(
            success=True, message=message, concept_id=self.target.concept_id,
            class_id=class_id, shots_used=len(self.shots), negatives_used=len(self.negatives),
            frames_rejected=len(rejected),
            training_seconds=float(report.seconds), fit_iou=float(fit),
            rejected_frames=rejected, review=self.gathered.review)


def check_target(request: TeachRequest, vocabulary: Sequence[str],
                 existing: set[str]) -> TeachTarget:
    """The concept `request` teaches; TeachRefused for a name with path parts, an empty or
    unknown base class, or a name already taken (`existing` ids, the concepts in use) without
    `overwrite` or `correct`.
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
    if cid in existing and not (request.overwrite or request.correct):
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
                             TEACH_MASK, f.encoding) for f in captured]
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
    before_forward: Callable[[], None] | None = None,
) -> Gathered:
    """Each frame's shot mask: an explicit mask, else its prompt's (a prompt wins over a
    `teach_mask` of the same frame: it is the request's own word), else the automatic mask
    (`auto_mask` with `min_score` and `dominance`), except on a frame that only marks a
    look-alike and in a correction, which take no automatic mask. Frames without a mask,
    frames SAN cannot segment (`Segmenter.frame_problem`) and frames whose explicit mask is
    unusable (`shot_masks.mask_problem`) are rejected with the reason, alone. Each frame's
    negative (`negative_mask`) is gathered beside it. ValueError for a malformed request;
    TeachRefused for a negative that cannot be one. `before_forward`: as `cache_shots`'."""
    frames = teach_frames(request, captured)
    shapes = [(f.label, f.rgb.shape[:2]) for f in frames]
    prompts = parse_prompts(request.boxes, request.points, shapes, bool(request.masks))
    negatives = negative_marks(request, shapes)
    notes = []
    for frame, prompt, negative in zip(frames, prompts, negatives):
        if negative is not None and frame.mask is not None and not np.asarray(frame.mask).any():
            frame = dataclasses.replace(frame, mask=None)  # the frame holds a look-alike only
        if request.correct and prompt is None and negative is None and (
                frame.mask is None or frame.source == TEACH_MASK):
            continue  # a correction reads only what it marks, not an earlier teach_mask
        problem = (segmenter.frame_problem(frame.rgb)
                   or mask_problem(frame.mask, frame.source, frame.rgb.shape[:2]))
        if problem:
            notes.append(FrameNote(frame.label, frame.rgb, None, problem,
                                   encoding=frame.encoding))
            continue
        if prompt is None and frame.mask is not None and negative is None:  # nothing to look at
            notes.append(FrameNote(frame.label, frame.rgb, frame.mask, frame.source,
                                   encoding=frame.encoding))
            continue
        auto = not request.correct and negative is None
        if before_forward is not None:  # a forward, or a decode and its proposals
            before_forward()
        notes.append(_frame_note(segmenter, frame, prompt, negative, base, auto, min_score,
                                 dominance))
    used = [n for n in notes if n.mask is not None]
    marked = [n for n in notes if n.negative is not None]
    return Gathered([n.rgb for n in used], [n.mask for n in used],
                    [f"{n.label}: {n.how}" for n in notes if n.mask is None and
                     n.negative is None],
                    review_picture(notes, base), [n.encoding for n in used],
                    [n.rgb for n in marked], [n.negative for n in marked],
                    [n.encoding for n in marked])


def negative_marks(request: TeachRequest, shapes: Sequence[tuple[str, tuple[int, int]]]
                   ) -> list[Prompt | np.ndarray | None]:
    """Each frame's look-alike mark (a prompt, or a bool mask), None where it has none.
    ValueError for marks of two kinds, masks without images or of another count or size."""
    if request.negative_masks:
        if request.negative_boxes or request.negative_points:
            raise ValueError("negative masks and negative prompts together: give one kind")
        if not request.images or len(request.negative_masks) != len(request.images):
            raise ValueError(f"{len(request.negative_masks)} negative masks for "
                             f"{len(request.images)} images: give one per explicit image (all "
                             "zero where an image has no look-alike)")
        out: list[Prompt | np.ndarray | None] = []
        for mask, (label, hw) in zip(request.negative_masks, shapes):
            a = np.asarray(mask)
            a = a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a
            problem = mask_problem(a, f"negative mask for {label}", hw) if a.any() else None
            if problem:
                raise ValueError(problem)
            out.append(a != 0 if a.any() else None)
        return out
    return list(parse_prompts(request.negative_boxes, request.negative_points, shapes, False))


def _frame_note(
    segmenter: Segmenter,
    frame: TeachFrame,
    prompt: Prompt | None,
    negative: Prompt | np.ndarray | None,
    base: str,
    auto: bool,
    min_score: float,
    dominance: float,
) -> FrameNote:
    """What becomes of one frame the model has to look at: its shot mask (explicit, the
    prompt's or, when `auto`, the automatic one) and its look-alike's mask."""
    prompted = prompt is not None or isinstance(negative, Prompt)
    view = look(segmenter, frame.rgb, proposals=prompted, features=frame.encoding)
    if frame.mask is not None and prompt is None:
        chosen, how = np.asarray(frame.mask), frame.source
    elif prompt is not None:
        chosen, how = _prompted(view, prompt)
    elif auto:
        chosen, how = auto_mask(view, base, min_score, dominance)
    else:
        chosen, how = None, "no positive marked"
    note = FrameNote(frame.label, frame.rgb, chosen, how, prompt,
                     None if chosen is not None else view, view.features)
    if negative is not None:
        note.negative = _look_alike(view, negative, chosen, base, frame.label)
        note.negative_prompt = negative if isinstance(negative, Prompt) else None
    return note


def _prompted(view: FrameView, prompt: Prompt) -> tuple[np.ndarray | None, str]:
    chosen, how = (box_mask if prompt.kind == "box" else point_mask)(view, prompt.xy)
    return chosen, f"{prompt.describe()}: {how}"


def _look_alike(view: FrameView, mark: Prompt | np.ndarray, positive: np.ndarray | None,
                base: str, label: str) -> np.ndarray:
    """The look-alike's mask on one frame; TeachRefused when the frame shows nothing of the
    base class, the mark finds no region, or the look-alike overlaps the positive."""
    if not any(r.word == base and r.area >= view.min_area for r in view.regions):
        raise TeachRefused(f"negative on {label}: no {base!r} in view; a negative marks a "
                           f"look-alike, another object of the base class")
    if isinstance(mark, Prompt):
        mask, how = _prompted(view, mark)
        if mask is None:
            raise TeachRefused(f"negative on {label}: {how}")
    else:
        mask = mark
    if positive is not None:
        pos = np.asarray(positive) != 0
        shared = int((mask & pos).sum())
        if shared > OVERLAP_SHARE * min(int(mask.sum()), int(pos.sum())):
            raise TeachRefused(f"negative on {label} overlaps the positive ({shared} shared "
                               "pixels): mark another object as 'not this one'")
    return mask


def learn(
    segmenter: Segmenter,
    request: TeachRequest,
    captured: Sequence[CapturedFrame],
    cfg: TeachConfig,
    progress: Progress | None = None,
    stored: StoredLookup | None = None,
    before_forward: Callable[[], None] | None = None,
) -> Learned:
    """Validate `request`, gather its shots (from `captured` when it has no images) and fit
    the concept against the segmenter's current vocabulary. What is stored under its id
    (`stored`) counts: a correction (`TeachRequest.correct`) fits the concept from its stored
    shots and look-alikes plus this request's additions, also one taught for other weights
    (with nothing added it is fitted again for these weights); an `overwrite` replaces the
    shots and keeps the stored look-alikes (`_kept_look_alikes`); a concept stored for other
    weights is not replaced without one of the two. TeachRefused (a ValueError) with the
    reason, the rejected frames and the review picture when it cannot; nothing is stored
    here either way. `before_forward` is called before each of the model's forwards (the
    frames' and the shots'): raising there stops the teach between two forwards."""
    existing = {concept_id(c.name): c for c in segmenter.concepts}
    target = check_target(request, segmenter.vocabulary, set(existing))
    found = stored(target.concept_id) if stored is not None else None
    if found is not None and found.unused and not (request.overwrite or request.correct):
        raise TeachRefused(
            f"a concept named {target.name!r} is stored (id {target.concept_id}) but not in use: "
            f"{found.unused}; set correct to fit it again for these weights from its stored "
            "shots and look-alikes (adding this request's), or overwrite to teach it anew from "
            "this request's shots (its look-alikes are kept)")
    old, notes = StoredExamples(), []
    if request.correct:
        old = _to_correct(target, found)
        if found is not None and found.unused:
            notes.append(f"fitted again for these weights ({found.unused})")
    elif request.overwrite and found is not None:
        old, note = _kept_look_alikes(request, target, found)
        notes += [note] if note else []
    if request.correct and not (request.images or request.boxes or request.points
                                or request.has_negatives):
        gathered = Gathered([], [], [], None, [])  # nothing marked: a correction reads none
    else:
        gathered = gather_shots(segmenter, request, captured, target.base_class,
                                cfg.auto_min_score, cfg.auto_dominance, before_forward)
    if (request.correct and not (gathered.images or gathered.negative_images)
            and not (found is not None and found.unused)):
        raise TeachRefused("nothing to add: mark a positive (box, point or mask) or a "
                           "look-alike (negative box, point or mask)", gathered.rejected,
                           gathered.review)
    images, masks = old.images + gathered.images, old.masks + gathered.masks
    if not images:
        raise TeachRefused("no usable shots: " + "; ".join(gathered.rejected),
                           gathered.rejected, gathered.review)
    unique = request.unique if request.unique is not None else (
        old.unique if request.correct else True)
    if request.unique and old.images and not old.unique:  # asked to become one object
        several = [i for i, m in enumerate(old.masks) if object_count(m) > 1]
        if several:
            raise TeachRefused(
                f"{target.name!r} was taught as a category and stored shot(s) {several} hold "
                "several objects: it cannot become one object; teach it again as one, or keep "
                "it a category")
    negative_images = old.negative_images + gathered.negative_images
    if len(negative_images) > MAX_LOOK_ALIKES:
        raise TeachRefused(f"{len(negative_images)} look-alikes: a concept keeps at most "
                           f"{MAX_LOOK_ALIKES}; teach it again from fewer")
    shots = cache_shots(segmenter, images, masks,
                        [None] * len(old.images) + gathered.encodings, before_forward)
    negatives = cache_shots(segmenter, negative_images,
                            old.negative_masks + gathered.negative_masks,
                            [None] * len(old.negative_images) + gathered.negative_encodings,
                            before_forward) if negative_images else []
    concept, report = teach(
        segmenter.model, segmenter.text_rows, segmenter.vocabulary.index(target.base_class),
        shots, cfg, name=request.name.strip(), base_class=target.base_class, progress=progress,
        unique=unique, negatives=negatives)
    return Learned(target, concept, report, shots, gathered, negatives, notes)


def _to_correct(target: TeachTarget, found: StoredExamples | None) -> StoredExamples:
    """What a correction starts from: the stored concept's examples, in use or taught for
    other weights; TeachRefused for an unknown concept, another base class, or stored
    examples that cannot all be read back (the correction would store it without them)."""
    if found is None:
        raise TeachRefused(f"cannot correct {target.name!r}: no concept of that name is "
                           "taught; teach it first")
    if found.base_class != target.base_class:
        raise TeachRefused(f"cannot correct {target.name!r} as a kind of "
                           f"{target.base_class!r}: it was taught as a kind of "
                           f"{found.base_class!r}")
    for what, read in (("shots", found.images), ("look-alikes", found.negative_images)):
        missing = found.unreadable.get(what, 0)
        if missing:
            raise TeachRefused(f"cannot correct {target.concept_id}: {missing} of its "
                               f"{len(read) + missing} stored {what} cannot be read; teach it "
                               "again instead")
    if not found.images:
        raise TeachRefused(f"cannot correct {target.name!r}: its shots are not in the store")
    return found


def _kept_look_alikes(request: TeachRequest, target: TeachTarget,
                      found: StoredExamples) -> tuple[StoredExamples, str]:
    """What an overwrite keeps of the stored concept, and a note saying so ("" if nothing
    to say). Its shots are replaced; its look-alikes are still "not this one" for the same
    object, so they are kept, unless the request gives its own (they replace the stored
    ones: the way to drop a wrong one) or names another base class (they were objects of
    the old one). TeachRefused when look-alikes to keep cannot all be read back."""
    count = len(found.negative_images) + found.unreadable.get("look-alikes", 0)
    if not count:
        return StoredExamples(), ""
    if request.has_negatives:
        return StoredExamples(), f"its {count} stored look-alike(s) replaced by this request's"
    if found.base_class != target.base_class:
        return StoredExamples(), (f"its {count} stored look-alike(s) dropped: they are of "
                                  f"{found.base_class!r}, not {target.base_class!r}")
    missing = found.unreadable.get("look-alikes", 0)
    if missing:
        raise TeachRefused(
            f"cannot keep the look-alikes of {target.name!r}: {missing} of its {count} stored "
            "look-alikes cannot be read; give new look-alikes (they replace the stored ones), "
            "or forget it and teach it again")
    kept = StoredExamples(negative_images=found.negative_images,
                          negative_masks=found.negative_masks)
    return kept, f"kept its {count} stored look-alike(s)"


def object_count(mask: np.ndarray) -> int:
    """Connected parts of a shot mask larger than a speckle (`shot_masks.MIN_AREA_FRACTION`)."""
    a = np.asarray(mask) != 0
    count, parts = cv2.connectedComponents(a.astype(np.uint8))
    sizes = np.bincount(parts.ravel(), minlength=count)[1:]
    return int((sizes >= max(1, MIN_AREA_FRACTION * a.size)).sum())
