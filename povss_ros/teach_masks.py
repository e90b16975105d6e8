"""Teach masks: which pixels of each teach frame are the object, and a picture of why.

A teach takes its shots from explicit images or from the newest captured frames. Each shot's
mask comes from, first to last: an explicit mask (the request's, or a `teach_mask` matched by
stamp); an operator's prompt, a box or a point (`box_mask`, `point_mask`); else the open
vocabulary alone (`auto_mask`: the base class's dominant region). A frame without a usable
mask is rejected with its reason, and `review_picture` shows every frame with the mask chosen
or the regions it was rejected over, so an operator can check a teach by eye. No ROS here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .capture import mask_problem
from .san.semantic import class_probs, masks_to_image
from .segmenter import Segmentation, Segmenter
from .vis import HIGHLIGHTS, legend_entries, legend_strip, outline, overlay, palette, titled
from .vocabulary import UNLABELED

if TYPE_CHECKING:
    from .capture import CapturedFrame
    from .perception import TeachRequest

# Regions smaller than this share of the frame are speckle, not objects an operator marks.
MIN_AREA_FRACTION = 1e-3
# A candidate belongs to a prompted object when at least this share of it lies inside the box
# (or, for a point, inside the proposal holding the point).
INSIDE_SHARE = 0.5
TILE_HEIGHT = 240  # review tiles are scaled to this height (never up)
TILES_PER_ROW = 5


@dataclass(frozen=True)
class Prompt:
    """An operator's hint in pixels: a box (x_min, y_min, x_max, y_max; pixel edges, so the
    box of pixel columns 10..19 has x_min 10, x_max 20) or a point (x, y)."""

    kind: str  # "box" | "point"
    xy: tuple[float, ...]

    def describe(self) -> str:
        return f"{self.kind} ({', '.join(f'{v:g}' for v in self.xy)})"


@dataclass
class Region:
    """A candidate object region of one frame."""

    mask: np.ndarray  # bool [H, W], one connected component
    word: str  # the open-vocabulary word it stands for
    score: float  # proposals: probability of `word`; label regions: mean SAN score
    source: str  # "proposal <q>" (SAN's own mask proposal) or "label region"

    @property
    def area(self) -> int:
        return int(self.mask.sum())


@dataclass
class FrameView:
    """What the frozen model sees in one frame, under the open vocabulary alone."""

    segmentation: Segmentation
    proposals: list[Region]
    regions: list[Region]
    features: object = None  # the SAN features it was decoded from (reused by the teach)

    @property
    def min_area(self) -> int:
        """Pixels a candidate needs to count as an object (`MIN_AREA_FRACTION`)."""
        h, w = self.segmentation.labels.shape
        return max(1, round(MIN_AREA_FRACTION * h * w))

    def candidates(self) -> list[Region]:
        """Every proposal part and label region of at least `min_area` pixels."""
        return [r for r in (*self.proposals, *self.regions) if r.area >= self.min_area]


def _components(mask: np.ndarray) -> list[np.ndarray]:
    count, comp = cv2.connectedComponents(mask.astype(np.uint8))
    return [comp == k for k in range(1, count)]


def look(segmenter: Segmenter, rgb: np.ndarray, proposals: bool = True,
         features: object = None) -> FrameView:
    """One frozen forward (none when the frame's `features` are known): the label map, every
    connected region of it and (`proposals`) each SAN mask proposal split into connected
    parts, with its most probable word."""
    features = features if features is not None else segmenter.encode(rgb)
    seg = segmenter.decode(features, concepts=())
    regions = []
    for cid in np.unique(seg.labels):
        for part in _components(seg.labels == cid):
            regions.append(Region(part, seg.class_names[cid], float(seg.score[part].mean()),
                                  "label region"))
    if not proposals:
        return FrameView(seg, [], regions, features)
    model, words = segmenter.model, segmenter.vocabulary
    logits = model.class_logits(features.mask_embeddings[:1], model.class_rows(segmenter.text_rows))
    best = class_probs(logits[0]).max(dim=1)
    found = []
    for q in range(features.mask_logits.shape[1]):
        logit = masks_to_image(features.mask_logits[0, q : q + 1], features.geometry)[0]
        word, p = words[int(best.indices[q])], float(best.values[q])
        found += [Region(part, word, p, f"proposal {q}")
                      for part in _components((logit > 0).cpu().numpy())]
    return FrameView(seg, found, regions, features)


# ---------------------------------------------------------------- prompts
def _checked(kind: str, values: Sequence[float], hw: tuple[int, int], shot: str) -> Prompt:
    h, w = hw
    need = 4 if kind == "box" else 2
    values = tuple(float(v) for v in values)
    where = f"{kind} for {shot} {values}"
    if len(values) != need:
        raise ValueError(f"{where}: a {kind} is {need} numbers")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{where}: coordinates must be finite numbers")
    if kind == "box":
        x0, y0, x1, y1 = values
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise ValueError(f"{where}: degenerate box; x_max must exceed x_min and y_max exceed "
                             "y_min by at least one pixel")
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise ValueError(f"{where}: outside the {w}x{h} image (x in 0..{w}, y in 0..{h})")
    elif not (0 <= values[0] < w and 0 <= values[1] < h):
        raise ValueError(f"{where}: outside the {w}x{h} image (x in [0, {w}), y in [0, {h}))")
    return Prompt(kind, values)


def parse_prompts(
    boxes: Sequence[Sequence[float]], points: Sequence[Sequence[float]],
    shots: Sequence[tuple[str, tuple[int, int]]],
    masks_given: bool,
) -> list[Prompt | None]:
    """Each shot's prompt (shots oldest first, as (label, (height, width))), None where it has
    none: one prompt per shot, or exactly one, which marks the newest shot. ValueError for
    boxes with points, prompts with explicit masks, another count, or a bad box or point."""
    if boxes and points:
        raise ValueError("give boxes or points, not both")
    kind, kinds, raw = ("box", "boxes", boxes) if boxes else ("point", "points", points)
    if not raw:
        return [None] * len(shots)
    if masks_given:
        raise ValueError(f"{kinds} and explicit masks together: give one or the other")
    if len(raw) not in (1, len(shots)):
        raise ValueError(f"{len(raw)} {kinds} for {len(shots)} shots: give one per shot "
                         f"(oldest first), or exactly one for the newest shot")
    marked = shots[-len(raw):]
    prompts = [_checked(kind, v, hw, label) for v, (label, hw) in zip(raw, marked)]
    return [None] * (len(shots) - len(raw)) + prompts


def box_pixels(box: Sequence[float], hw: tuple[int, int]) -> np.ndarray:
    """bool [H, W]: the pixels whose centres lie inside `box`."""
    x0, y0, x1, y1 = box
    out = np.zeros(hw, bool)
    out[max(0, round(y0)) : round(y1), max(0, round(x0)) : round(x1)] = True
    return out


def box_mask(view: FrameView, box: Sequence[float]) -> tuple[np.ndarray | None, str]:
    """The object an operator's box frames: every candidate (SAN's mask proposals and the
    label map's connected regions) lying at least half inside the box, united and cut to it.

    Why a union, not one best candidate: on objects the model knows poorly the label map
    splits one object into several words' regions, and no single candidate covers it; the
    background and neighbours spill out of a box drawn around the object, so the share
    inside keeps them out. None, with the reason, when no candidate lies inside."""
    inside = box_pixels(box, view.segmentation.labels.shape)
    out, used = np.zeros_like(inside), 0
    for region in view.candidates():
        cut = region.mask & inside
        if cut.sum() >= INSIDE_SHARE * region.area:
            out |= cut
            used += 1
    if not used:
        return None, "no region lies inside the box"
    return out, f"{used} region(s) inside the box"


def point_mask(view: FrameView, point: Sequence[float]) -> tuple[np.ndarray | None, str]:
    """The object an operator's point marks: the label map's connected region under the point,
    grown by every label region lying at least half inside the most probable SAN proposal
    under the point.

    Why: the region under the point is the open vocabulary's own reading of the object; where
    it splits the object into several words' regions, the proposal that holds the point gives
    the object's extent, which a point alone cannot."""
    x, y = int(point[0]), int(point[1])
    under = [r for r in view.regions if r.mask[y, x]]
    if not under:
        return None, "no region under the point"
    out = under[0].mask.copy()
    holding = [r for r in view.candidates()
               if r.source != "label region" and r.mask[y, x]]
    if holding:
        extent = max(holding, key=lambda r: r.score).mask
        for region in view.regions:
            if region.area >= view.min_area and (
                    region.mask & extent).sum() >= INSIDE_SHARE * region.area:
                out |= region.mask
    return out, f"{under[0].word} region under the point"


# ---------------------------------------------------------------- automatic masks
def base_regions(view: FrameView, base: str) -> list[Region]:
    """The label map's regions of `base`, the highest summed score first."""
    found = [r for r in view.regions if r.word == base]
    return sorted(found, key=lambda r: r.score * r.area, reverse=True)


def auto_mask(
    view: FrameView, base: str, min_score: float, dominance: float
) -> tuple[np.ndarray | None, str]:
    """The base class's highest-scoring connected region under the open vocabulary alone, or
    None with the reason: none found, its mean score below `min_score`, or a runner-up region
    whose summed score comes within a factor `dominance` (which one is meant is then unclear)."""
    found = base_regions(view, base)
    if not found:
        return None, f"no {base!r} found"
    best = found[0]
    if best.score < min_score:
        return None, f"{base!r} found only with a low score ({best.score:.2f})"
    total = max(best.score * best.area, 1e-12)
    ratio = found[1].score * found[1].area / total if len(found) > 1 else 0.0
    if ratio * dominance > 1:
        return None, (f"ambiguous: {len(found)} {base!r} regions, region 2 scores "
                      f"{ratio:.0%} of region 1 (at most {1 / dominance:.0%} allowed)")
    return best.mask, "automatic"


# ---------------------------------------------------------------- gathering
@dataclass
class FrameNote:
    """One teach frame and what became of it, for the outcome and the review picture."""

    label: str  # "image 2", "frame stamped 12.345s"
    rgb: np.ndarray
    mask: np.ndarray | None  # the shot mask; None: rejected
    how: str  # where the mask came from, or why the frame was rejected
    prompt: Prompt | None = None
    view: FrameView | None = None  # what the model saw, when it looked
    encoding: object = None  # the frame's SAN features, when known (spares the teach a forward)


@dataclass
class Gathered:
    """The shots a teach trains on, the frames it rejected and the picture that explains it."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    rejected: list[str]  # one "<frame label>: <reason>" per rejected frame
    review: np.ndarray | None
    encodings: list[object | None]  # each shot's SAN features when the node kept them


def _frames(request: TeachRequest, captured: Sequence[CapturedFrame]) -> list[tuple]:
    """(label, rgb, mask or None, where a mask came from, encoding or None) per teach frame,
    oldest first."""
    if request.masks and not request.images:
        raise ValueError("masks were given without images")
    if request.images:
        if request.masks and len(request.masks) != len(request.images):
            raise ValueError(f"{len(request.images)} images but {len(request.masks)} masks: give "
                             "one mask per image, or none for automatic masks")
        masks = list(request.masks) or [None] * len(request.images)
        frames = [(f"image {i}", np.asarray(img), m, "given mask", None)
                  for i, (img, m) in enumerate(zip(request.images, masks))]
    else:
        if not captured:
            raise ValueError("no camera frames captured yet: is anything published on image?")
        frames = [(f"frame stamped {f.stamp_ns / 1e9:.3f}s", f.rgb, f.mask, "teach mask",
                   f.encoding) for f in captured]
    for label, img, *_ in frames:
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 or 0 in img.shape:
            raise ValueError(f"{label}: expected an RGB uint8 HxWx3 image, got {img.dtype} "
                             f"{img.shape}")
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
    `teach_mask` of the same frame: it is the request's own word), else the automatic mask;
    frames without one, frames SAN cannot segment (`Segmenter.frame_problem`) and frames whose
    explicit mask is unusable (`capture.mask_problem`) are rejected with the reason, alone.
    ValueError for a malformed request."""
    frames = _frames(request, captured)
    shapes = [(label, img.shape[:2]) for label, img, *_ in frames]
    prompts = parse_prompts(request.boxes, request.points, shapes, bool(request.masks))
    notes = []
    for (label, rgb, mask, source, encoding), prompt in zip(frames, prompts):
        problem = segmenter.frame_problem(rgb) or mask_problem(mask, source, rgb.shape[:2])
        if problem or (prompt is None and mask is not None):  # rejected alone, or its mask
            notes.append(FrameNote(label, rgb, None if problem else mask, problem or source,
                                   encoding=encoding))
            continue
        view = look(segmenter, rgb, proposals=prompt is not None, features=encoding)
        if prompt is None:
            chosen, how = auto_mask(view, base, min_score, dominance)
        else:
            chosen, how = (box_mask if prompt.kind == "box" else point_mask)(view, prompt.xy)
            how = f"{prompt.describe()}: {how}"
        notes.append(FrameNote(label, rgb, chosen, how, prompt, None if chosen is not None
                               else view, view.features))  # view: where the review shows it
    used = [n for n in notes if n.mask is not None]
    return Gathered([n.rgb for n in used], [n.mask for n in used],
                    [f"{n.label}: {n.how}" for n in notes if n.mask is None],
                    review_picture(notes, base), [n.encoding for n in used])


# ---------------------------------------------------------------- the review picture
def review_picture(notes: Sequence[FrameNote], base: str) -> np.ndarray | None:
    """Every teach frame side by side (rows of `TILES_PER_ROW`), titled with what became of
    it: a used shot with its mask outlined; a rejected frame with the base class's regions
    numbered under a legend (score, size), the two strongest outlined, or, where the base
    class was not found, every region the open vocabulary sees. Prompts are drawn."""
    if not notes:
        return None
    tiles = [_tile(n, base) for n in notes]
    rows = [tiles[i : i + TILES_PER_ROW] for i in range(0, len(tiles), TILES_PER_ROW)]
    rows = [np.concatenate(_padded(row, axis=0), axis=1) for row in rows]
    return np.concatenate(_padded(rows, axis=1), axis=0)


def _padded(images: list[np.ndarray], axis: int) -> list[np.ndarray]:
    """Pad with the title bars' grey to a common size along `axis` (0: height, 1: width)."""
    size = max(i.shape[axis] for i in images)
    pad = [[(0, size - i.shape[0]), (0, 0), (0, 0)] if axis == 0 else
           [(0, 0), (0, size - i.shape[1]), (0, 0)] for i in images]
    return [np.pad(i, p, constant_values=32) for i, p in zip(images, pad)]


def _tile(note: FrameNote, base: str) -> np.ndarray:
    h, w = note.rgb.shape[:2]
    scale = min(1.0, TILE_HEIGHT / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def small(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0

    img = cv2.resize(note.rgb, size, interpolation=cv2.INTER_AREA)
    strip = None
    if note.mask is not None:
        mask = np.asarray(note.mask)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if mask.shape == (h, w):
            outline(img, small(mask != 0), HIGHLIGHTS[0])
        title = f"{note.label}: used, {note.how}"
    else:
        if note.view is not None:
            img, strip = _candidates(img, note.view, base, small)
        title = f"{note.label}: {note.how}"
    if note.prompt is not None:
        xy = [round(v * scale) for v in note.prompt.xy]
        if note.prompt.kind == "box":
            cv2.rectangle(img, (xy[0], xy[1]), (xy[2] - 1, xy[3] - 1), HIGHLIGHTS[1], 1)
        else:
            cv2.drawMarker(img, (xy[0], xy[1]), HIGHLIGHTS[1], cv2.MARKER_CROSS, 12, 2)
    tile = titled(img, title)
    return tile if strip is None else np.concatenate([tile, strip])


def _candidates(img: np.ndarray, view: FrameView, base: str, small) -> tuple:  # noqa: ANN001
    """The frame overlaid with the base class's regions, numbered, the strongest two outlined
    (with none: the whole label map), and their legend as a strip to go below."""
    regions = base_regions(view, base)
    seg = view.segmentation
    if regions:
        labels = np.full(img.shape[:2], UNLABELED, np.uint16)
        for i, region in reversed(list(enumerate(regions))):
            labels[small(region.mask)] = i
        names = [f"{i + 1}: {base} {r.score:.2f} x {r.area} px" for i, r in enumerate(regions)]
        highlight = list(range(min(2, len(regions))))
    else:
        labels = cv2.resize(seg.labels, img.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        names, highlight = seg.class_names, []
    out = overlay(img, labels, names, highlight, legend=False)
    for i in range(len(regions)):
        ys, xs = np.nonzero(labels == i)
        if len(xs):
            cv2.putText(out, str(i + 1), (int(xs.mean()) - 4, int(ys.mean()) + 5),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    entries = legend_entries(labels, names, palette(names, highlight))
    return out, legend_strip(entries, out.shape[1])
