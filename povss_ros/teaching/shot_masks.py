"""Which pixels of a teach frame are the object: from an explicit mask, an operator's prompt
(a box or a point) or the open vocabulary alone.

Every candidate comes from what the frozen model already sees in the frame (`look`): the
label map's connected regions and SAN's own mask proposals. `box_mask` and `point_mask` turn a
prompt into a mask; `auto_mask` takes the base class's dominant region and refuses a frame
where that is ambiguous; `mask_problem` is the one check of an explicit mask against its frame.
No ROS here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..segmenter import Segmentation, Segmenter

# Regions smaller than this share of the frame are speckle, not objects an operator marks.
MIN_AREA_FRACTION = 1e-3
# A candidate belongs to a prompted object when at least this share of it lies inside the box
# (or, for a point, inside the proposal holding the point).
INSIDE_SHARE = 0.5


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
    found = [Region(part, p.word, p.probability, f"proposal {q}")
             for q, p in enumerate(segmenter.proposals(features))
             for part in _components(p.mask)]
    return FrameView(seg, found, regions, features)


# ---------------------------------------------------------------- prompts
def check_prompt(kind: str, values: Sequence[float], hw: tuple[int, int], shot: str) -> Prompt:
    """A box or point for the shot labelled `shot` of size `hw` (H, W), checked: ValueError
    naming the shot for the wrong count, a non-finite number, a degenerate box or one outside
    the image."""
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
    prompts = [check_prompt(kind, v, hw, label) for v, (label, hw) in zip(raw, marked)]
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


def mask_problem(mask: np.ndarray | None, source: str, hw: tuple[int, int]) -> str | None:
    """Why an explicit teach mask (a `teach_mask` or a request's) cannot teach its frame of
    size `hw` (H, W): another size, values other than binary ones, no pixel set; else None
    (also for no mask). `source` names the mask in the reason."""
    if mask is None:
        return None
    a = np.asarray(mask)
    a = a[..., 0] if a.ndim == 3 and a.shape[2] == 1 else a
    if a.shape != tuple(hw):
        size = f"{a.shape[1]}x{a.shape[0]}" if a.ndim == 2 else f"of shape {a.shape}"
        return f"{source} is {size} but the frame is {hw[1]}x{hw[0]}"
    if a.dtype != bool:
        values = set(np.unique(a).tolist())
        if not (values <= {0, 1} or values <= {0, 255}):
            return f"{source} must be binary (bool, 0/1 or 0/255), got {a.dtype} values"
    return None if a.any() else f"{source} is empty (no pixel set): mark the object's pixels"


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
    negative: np.ndarray | None = None  # a look-alike's mask on this frame ("not this one")
    negative_prompt: Prompt | None = None
