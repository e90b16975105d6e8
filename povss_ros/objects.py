"""Label map (+ depth, intrinsics) -> objects: thing instances, personal concepts, 3D.

What a grasp planner consumes, computed in the engine so it is testable without ROS:

- instances: each connected region of a thing class (stuff words give none) at least
  `min_area` of the frame, scored by SAN's own confidence (the mean per-pixel score of
  `Segmentation.score` over the region);
- concepts: a personal concept is one physical object, so it is at most one object: its
  largest region, reported present only when that region passes `presence_min_area` and,
  unless identity chose it (`ClassInfo.by_identity`: the region is already the one at least
  `identity_min_similarity` like the shots), `presence_min_score` (personal segmenters' usual
  failure is a false positive when the object is absent: the gate keeps "my mug" quiet then);
- 3D, where a registered depth image (metres, NaN or 0 = no reading) and pinhole intrinsics
  are given, in the camera's optical frame (x right, y down, z forward, metres): the region's
  points with a reading, minus depth outliers (further from the median depth than
  `outlier_mads` scaled MADs and than the region's own width, so a rounded object keeps its
  rim; this drops what a mask's edge picks up far behind the object, such as a wall, not a
  table a few cm below it). The centroid is their per-axis median. The axis-aligned box is
  their extent, leaving out thin strips beyond a depth jump (`_box_points`): an object's
  edge pixels that read the surface behind it.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field

import cv2
import numpy as np

from .options import option, validate
from .personal.identity import MIN_SIMILARITY, STAY_SIMILARITY
from .personal.names import concept_id
from .presence import PresenceFilter

# Scaled median absolute deviation: 1.4826 * MAD estimates a normal distribution's sigma.
MAD_SIGMA = 1.4826
# Depth spread a region may always have (metres), whatever its MAD and width: a small flat
# object seen face-on has a MAD near 0.
MIN_DEPTH_SPREAD = 0.02
# Fewest valid points for a 3D estimate to be reported (has_3d).
MIN_POINTS_3D = 10
# Medians are taken over at most this many evenly strided points of a region: a large
# object has tens of thousands, and a sample this size estimates their median closely.
MEDIAN_SAMPLES = 4096
# A region's 3D is read from about this many pixels of its box at most (a strided grid).
LIFT_PIXELS = 4096
# The box (not the centroid) leaves out thin strips beyond a depth jump of more than this
# (metres at 1 m, growing with the square of the distance, as depth noise does) ...
DEPTH_STEP_AT_1M = 0.03
# Neighbours `step` pixels apart on `lift`'s grid may differ `step` times as much; and a jump
# must exceed the 2 mm a 16UC1 millimetre reading can step by at close range.
DEPTH_QUANTUM = 0.002
# A strip beyond a jump stays in the box when it holds at least this share of the region.
BOX_PART_SHARE = 0.1


@dataclass
class ObjectConfig:
    """How regions become objects. User-facing fields are the node's ``objects_<name>``
    parameters; the presence defaults come from SYN^per's negative frames (docs)."""

    min_area: float = option(
        0.001, "smallest thing instance reported, as a fraction of the frame's pixels",
        low=0.0, high=1.0)
    presence_min_area: float = option(
        0.003, "a personal concept is reported present only when its largest region covers "
        "at least this fraction of the frame (default chosen on SYN^per: docs/results/"
        "presence.md)", low=0.0, high=1.0)
    presence_min_score: float = option(
        0.7, "a personal concept not taught as one object is reported present only when its "
        "largest region's mean SAN score is at least this (the score's scale is the model's: "
        "the default is chosen for the synthetic-world model, docs/results/presence.md)",
        low=0.0, high=100.0)
    identity_min_similarity: float = option(
        MIN_SIMILARITY, "a personal concept taught as one object comes into view (found, and "
        "present) only where a region's dense CLIP features are at least this similar (cosine) "
        "to its shots' (`personal.identity`; the default is chosen for the synthetic-world model, "
        "docs/results/identity.md; a region must be 0.6 like them to be considered at all, so "
        "lower values act as 0.6)", low=-1.0, high=1.0)
    identity_stay_similarity: float = option(
        STAY_SIMILARITY, "while such a concept is present in a camera's view, a region at "
        "least this similar keeps it (hysteresis: identity_min_similarity to come into view, "
        "this to stay; a harder view of an object being watched does not drop it; changing "
        "either starts presence afresh; above identity_min_similarity, staying needs more "
        "than coming into view: a region between the two comes and goes frame by frame)",
        low=-1.0, high=1.0)
    presence_enter: int = option(
        1, "a personal concept becomes present once seen in this many of the last "
        "objects_presence_enter_window frames (`presence.PresenceFilter`; the defaults, 1 of "
        "1 in and out, filter nothing: docs/results/identity.md compares filters)",
        low=1, high=1000)
    presence_enter_window: int = option(
        1, "frames the presence_enter count looks back over", low=1, high=1000)
    presence_leave: int = option(
        1, "a present concept becomes absent once missed in this many of the last "
        "objects_presence_leave_window frames", low=1, high=1000)
    presence_leave_window: int = option(
        1, "frames the presence_leave count looks back over", low=1, high=1000)
    stuff_words: list[str] = option(
        ["auto"], "words that are surfaces, not objects (no instances); [auto] = COCO-Stuff's "
        "stuff classes and their stems (wall, floor, table, sky...)")
    # 3D: depth readings further than this many scaled MADs from the region's median depth
    # are outliers (never closer than the region's width, nor MIN_DEPTH_SPREAD).
    outlier_mads: float = 3.0

    def __post_init__(self) -> None:
        """A user field outside its limits is a ValueError naming it; a count larger than
        its window too."""
        validate(self)
        self.presence_filter()

    def presence_filter(self) -> PresenceFilter:
        """A fresh `PresenceFilter` with these counts (ValueError for a count over its
        window)."""
        return PresenceFilter(self.presence_enter, self.presence_enter_window,
                              self.presence_leave, self.presence_leave_window)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics of the colour image (pixels; pixel centres at integer coordinates,
    as in sensor_msgs/CameraInfo's K)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        values = (self.fx, self.fy, self.cx, self.cy)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"camera intrinsics must be finite numbers, got {values}")
        if self.fx <= 0 or self.fy <= 0:
            raise ValueError(f"camera intrinsics need positive focal lengths, got fx={self.fx} "
                             f"fy={self.fy} (an uncalibrated camera_info has K all zero)")
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"camera intrinsics for an empty image: {self.width}x{self.height}")
        if not (1.0 <= self.fx <= 1e6 and 1.0 <= self.fy <= 1e6):
            raise ValueError(f"focal lengths fx={self.fx:g} fy={self.fy:g} are not a camera's "
                             "(1 to 1e6 pixels)")
        if not (-self.width <= self.cx <= 2 * self.width
                and -self.height <= self.cy <= 2 * self.height):
            raise ValueError(f"principal point ({self.cx:g}, {self.cy:g}) is far outside the "
                             f"{self.width}x{self.height} image")

    @classmethod
    def from_k(cls, k: list[float] | np.ndarray, width: int, height: int) -> Intrinsics:
        """From a row-major 3x3 K (CameraInfo.k) and the image size it was calibrated at."""
        k = np.asarray(k, np.float64).reshape(-1)
        if k.size != 9:
            raise ValueError(f"K must have 9 values, got {k.size}")
        return cls(float(k[0]), float(k[4]), float(k[2]), float(k[5]), int(width), int(height))

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The same camera at another resolution of the same aspect (ValueError otherwise)."""
        if (width, height) == (self.width, self.height):
            return self
        sx, sy = width / self.width, height / self.height
        if abs(sx / sy - 1.0) > 0.01:
            raise ValueError(f"camera_info is for {self.width}x{self.height}, the image is "
                             f"{width}x{height}: not the same aspect, cannot scale")
        # Pixel centres at integers: the image's edge is at -0.5 in both resolutions.
        return Intrinsics(self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                          (self.cy + 0.5) * sy - 0.5, width, height)


def align_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Depth of another size than the colour image, resampled to it (nearest: a missing
    reading never blends with its neighbours); ValueError when the aspect differs."""
    if depth.ndim != 2:
        raise ValueError(f"a depth image has one channel, got shape {depth.shape}")
    h, w = depth.shape
    if (w, h) == (width, height):
        return depth
    if abs((w / h) / (width / height) - 1.0) > 0.01:
        raise ValueError(f"depth is {w}x{h}, the colour image {width}x{height}: not the same "
                         "aspect (is the depth registered to the colour camera?)")
    return cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)


@dataclass
class Points3D:
    """An object's 3D estimate in the camera optical frame (metres)."""

    centroid: tuple[float, float, float]
    box_min: tuple[float, float, float]
    box_max: tuple[float, float, float]
    points: np.ndarray  # [N, 3] float32: the inliers the estimate used
    valid_points: int  # pixels read with a depth reading (before outlier removal; see `lift`)


@dataclass
class DetectedObject:
    """One object of one frame: a thing instance or a personal concept."""

    class_id: int  # as in the labels image (a vocabulary index or a concept's class id)
    name: str
    concept_id: str  # "" for a vocabulary word
    score: float  # mean SAN score over the region
    area: int  # pixels
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels, x1/y1 exclusive
    mask: np.ndarray = field(repr=False)  # bool, the box's crop
    present: bool = True  # a concept below the presence gate is listed with present=False
    geometry: Points3D | None = None

    def full_mask(self, height: int, width: int) -> np.ndarray:
        """The region as a full-frame bool mask."""
        out = np.zeros((height, width), bool)
        x0, y0, x1, y1 = self.box
        out[y0:y1, x0:x1] = self.mask
        return out


def regions(class_mask: np.ndarray, min_pixels: int, offset: tuple[int, int] = (0, 0)
            ) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """Connected regions (8-connectivity) of a bool mask with at least `min_pixels`, largest
    first: (box in the full frame, bool crop of the box). Statistics come from the mask's own
    pixels (OpenCV's per-component statistics cost more than the labelling itself)."""
    n, comp = cv2.connectedComponentsWithAlgorithm(class_mask.view(np.uint8), 8, cv2.CV_32S,
                                                   cv2.CCL_SAUF)
    if n <= 1:
        return []
    ys, xs = np.nonzero(class_mask)
    ids = comp[ys, xs]
    area = np.bincount(ids, minlength=n)
    out = []
    for i in np.argsort(-area[1:], kind="stable") + 1:
        if area[i] < max(min_pixels, 1):
            break
        sel = ids == i
        y0, y1, x0, x1 = ys[sel].min(), ys[sel].max() + 1, xs[sel].min(), xs[sel].max() + 1
        box = (int(x0) + offset[0], int(y0) + offset[1], int(x1) + offset[0], int(y1) + offset[1])
        out.append((box, comp[y0:y1, x0:x1] == i))
    return out


def lift(mask: np.ndarray, box: tuple[int, int, int, int], depth: np.ndarray,
         intr: Intrinsics, outlier_mads: float) -> Points3D | None:
    """The region's 3D estimate, or None with fewer than `MIN_POINTS_3D` inliers. A region
    whose box holds more than `LIFT_PIXELS` pixels is read on an evenly strided grid (every
    2nd pixel of every 2nd row, or sparser) that keeps about that many: a 3D estimate needs
    thousands of points, not tens of thousands. Medians (depth, MAD, centroid) are taken over
    at most `MEDIAN_SAMPLES` evenly strided points."""
    x0, y0, x1, y1 = box
    step = lift_stride(mask.size)
    oy, ox = ((y1 - y0 - 1) % step) // 2, ((x1 - x0 - 1) % step) // 2  # the grid centred
    mask = mask[oy::step, ox::step]
    x0, y0 = x0 + ox, y0 + oy
    crop = depth[y0:y1:step, x0:x1:step]
    readable = mask & (crop > 0) & (crop < np.inf)  # NaN compares false: no reading
    z = crop[readable]
    if z.size < MIN_POINTS_3D:
        return None
    sample = z[:: max(1, z.size // MEDIAN_SAMPLES)]
    med = np.float32(np.median(sample))
    # A solid's visible depth range is at most about its width: never trim less than that.
    width = max(x1 - x0, y1 - y0) * float(med) / min(intr.fx, intr.fy)
    spread = max(outlier_mads * MAD_SIGMA * float(np.median(np.abs(sample - med))),
                 MIN_DEPTH_SPREAD, width)
    inliers = readable & (np.abs(crop - med) <= np.float32(spread))
    vs, us = np.nonzero(inliers)
    if vs.size < MIN_POINTS_3D:
        return None
    pts = np.empty((vs.size, 3), np.float32)
    pts[:, 2] = crop[vs, us]
    pts[:, 0] = (us * np.float32(step) + np.float32(x0 - intr.cx)) * pts[:, 2] / np.float32(
        intr.fx)
    pts[:, 1] = (vs * np.float32(step) + np.float32(y0 - intr.cy)) * pts[:, 2] / np.float32(
        intr.fy)
    centre = np.median(pts[:: max(1, vs.size // MEDIAN_SAMPLES)], axis=0)
    solid = pts[_box_points(crop, inliers, step)[vs, us]]
    return Points3D(tuple(float(v) for v in centre), tuple(float(v) for v in solid.min(axis=0)),
                    tuple(float(v) for v in solid.max(axis=0)), pts, int(z.size))


def lift_stride(box_pixels: int) -> int:
    """The grid step `lift` reads a region with, from its box's pixel count."""
    return max(1, math.ceil(math.sqrt(box_pixels / LIFT_PIXELS)))


def _box_points(crop: np.ndarray, inliers: np.ndarray, step: int = 1) -> np.ndarray:
    """The inliers that bound the box: the region cut into parts wherever the depth jumps
    between grid neighbours (by more than `DEPTH_STEP_AT_1M` x z^2 per grid step, plus
    `DEPTH_QUANTUM`: a slanted surface is no jump), the pixel on the far side of
    each jump dropped; the largest part and every part of at least `BOX_PART_SHARE` of the
    pixels kept. What a mask's edge throws onto the wall or table behind is a thin strip
    beyond such a jump; an object's own parts (a handle, the cells of a tray) are not thin."""
    z = np.where(inliers, crop, np.float32(np.nan))
    far = np.zeros(inliers.shape, bool)
    for a, b, fa, fb in ((z[:, :-1], z[:, 1:], far[:, :-1], far[:, 1:]),
                         (z[:-1], z[1:], far[:-1], far[1:])):
        jump = np.abs(a - b) > (DEPTH_STEP_AT_1M * step * np.square(np.fmin(a, b))
                                + DEPTH_QUANTUM)
        fa |= jump & (a > b)
        fb |= jump & (b > a)
    core = inliers & ~far
    n, parts = cv2.connectedComponentsWithAlgorithm(core.view(np.uint8), 4, cv2.CV_32S,
                                                    cv2.CCL_SAUF)
    sizes = np.bincount(parts[core], minlength=n)
    sizes[0] = 0
    keep = (sizes >= BOX_PART_SHARE * sizes.sum()) | (sizes == sizes.max())
    keep[0] = False
    return keep[parts] & core if keep.any() else inliers


@dataclass(frozen=True)
class ClassInfo:
    """What `find_objects` needs to know of one class of the segmentation."""

    class_id: int
    name: str
    concept_id: str = ""  # non-empty: a personal concept
    stuff: bool = False
    by_identity: bool = False  # a concept whose region identity chose (`personal.identity`)


def class_infos(names: list[str], num_words: int, class_ids: np.ndarray,
                stuff: frozenset[str] | set[str], by_identity: Collection[int] = ()
                ) -> list[ClassInfo]:
    """`find_objects`' view of a segmentation's classes: `names` are the vocabulary's
    `num_words` words then the concepts' names, `class_ids` their ids in the labels image;
    `by_identity`: the indices of concepts whose region identity chose
    (`Segmentation.identity`)."""
    return [ClassInfo(int(class_ids[k]), name, concept_id(name) if k >= num_words else "",
                      k < num_words and name in stuff, k in by_identity)
            for k, name in enumerate(names)]


def find_objects(
    labels: np.ndarray,
    score: np.ndarray,
    classes: list[ClassInfo],
    cfg: ObjectConfig,
    depth: np.ndarray | None = None,
    intrinsics: Intrinsics | None = None,
) -> list[DetectedObject]:
    """Objects of one frame. `labels` index `classes`; `score` is SAN's per-pixel score.

    Every personal concept gets exactly one entry (present or not, so a consumer sees "absent"
    explicitly); thing classes get one entry per region. With `depth` (metres, the labels'
    size) and `intrinsics`, each entry that has enough depth readings gets its 3D estimate.
    """
    h, w = labels.shape
    counts = np.bincount(labels.ravel(), minlength=len(classes))
    min_thing = math.ceil(cfg.min_area * h * w)
    out: list[DetectedObject] = []
    for k, info in enumerate(classes):
        if info.stuff or (not info.concept_id and counts[k] < max(min_thing, 1)):
            continue
        found = _class_regions(labels, k, counts[k], min_thing if not info.concept_id else 1)
        if info.concept_id:
            found = found[:1]
            if not found:
                out.append(DetectedObject(info.class_id, info.name, info.concept_id, 0.0, 0,
                                          (0, 0, 0, 0), np.zeros((0, 0), bool), present=False))
                continue
        for box, crop in found:
            x0, y0, x1, y1 = box
            area = int(crop.sum())
            mean = float(score[y0:y1, x0:x1][crop].mean())
            present = not info.concept_id or (area >= cfg.presence_min_area * h * w and (
                info.by_identity or mean >= cfg.presence_min_score))
            obj = DetectedObject(info.class_id, info.name, info.concept_id, mean, area, box, crop,
                                 present)
            if present and depth is not None and intrinsics is not None:
                obj.geometry = lift(crop, box, depth, intrinsics, cfg.outlier_mads)
            out.append(obj)
    return out


def _class_regions(labels: np.ndarray, k: int, count: int, min_pixels: int
                   ) -> list[tuple[tuple[int, int, int, int], np.ndarray]]:
    """`regions` of class k, computed on the class's bounding crop (cheap for small classes)."""
    if count == 0:
        return []
    hit = labels == k
    rows, cols = np.flatnonzero(hit.any(axis=1)), np.flatnonzero(hit.any(axis=0))
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    return regions(np.ascontiguousarray(hit[y0:y1, x0:x1]), min_pixels, (int(x0), int(y0)))


def frame_objects(
    labels: np.ndarray,
    score: np.ndarray,
    classes: list[ClassInfo],
    cfg: ObjectConfig,
    depth: np.ndarray | None = None,
    intrinsics: Intrinsics | None = None,
) -> tuple[list[DetectedObject], str]:
    """`find_objects` after making the depth fit the frame: resampled when only its size
    differs, intrinsics scaled likewise. A depth that cannot be used (another aspect, no
    intrinsics) skips 3D alone: the objects come back without it, with the reason."""
    problem = ""
    if depth is not None:
        h, w = labels.shape
        try:
            if intrinsics is None:
                raise ValueError("depth without camera intrinsics (no camera_info)")
            depth, intrinsics = align_depth(depth, w, h), intrinsics.scaled_to(w, h)
        except ValueError as exc:
            depth, problem = None, str(exc)
    objects = find_objects(labels, score, classes, cfg, depth, intrinsics)
    shown = [o for o in objects if o.present]
    if depth is not None and shown and all(o.geometry is None for o in shown):
        problem = ("no object has enough depth readings (is the depth image all 0 or NaN, or "
                   "not registered to the colour camera?)")
    return objects, problem


def concept_masks(objects: list[DetectedObject], height: int, width: int
                  ) -> dict[str, np.ndarray]:
    """Concept id -> uint8 0/255 mask of its object, all 0 while the concept is absent."""
    out = {}
    for o in objects:
        if o.concept_id:
            out[o.concept_id] = (o.full_mask(height, width) if o.present
                                 else np.zeros((height, width), bool)).astype(np.uint8) * 255
    return out
