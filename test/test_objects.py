"""Objects from a label map: instances, the presence gate, 3D from depth (no ROS, no model).

Scenes here are drawn by hand so every expected number is known exactly: a camera with
fx = fy = 500 at the image centre looking at a wall 2 m away, with boxes standing in front.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from povss_ros.objects import (
    ClassInfo,
    Intrinsics,
    ObjectConfig,
    align_depth,
    class_infos,
    concept_masks,
    find_objects,
    frame_objects,
    lift,
    regions,
)
from povss_ros.vocabulary import COCO_STUFF_171, stuff_words

H, W = 120, 160
CAM = Intrinsics(500.0, 500.0, (W - 1) / 2, (H - 1) / 2, W, H)
CLASSES = [ClassInfo(0, "wall", stuff=True), ClassInfo(1, "mug"), ClassInfo(2, "book"),
           ClassInfo(32768, "My Mug", "my_mug")]
CFG = ObjectConfig(min_area=0.001, presence_min_area=0.01, presence_min_score=0.5)


def scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """labels (index CLASSES), score, depth: two mugs, one book, my mug, on a wall at 2 m."""
    labels = np.zeros((H, W), np.uint16)
    score = np.full((H, W), 0.9, np.float32)
    depth = np.full((H, W), 2.0, np.float32)
    labels[10:30, 10:30] = 1  # mug A, 400 px at 1.0 m
    depth[10:30, 10:30] = 1.0
    labels[10:20, 50:60] = 1  # mug B, 100 px at 1.5 m
    depth[10:20, 50:60] = 1.5
    labels[60:100, 20:60] = 2  # a book, 1600 px at 0.8 m
    depth[60:100, 20:60] = 0.8
    labels[60:90, 100:130] = 3  # my mug, 900 px at 1.2 m, score 0.7
    depth[60:90, 100:130] = 1.2
    score[60:90, 100:130] = 0.7
    labels[0, 0] = 1  # a one-pixel speck: below min_area (0.001 * 19200 = 19.2 px)
    return labels, score, depth


def test_regions_are_connected_components_largest_first():
    mask = np.zeros((20, 20), bool)
    mask[0:3, 0:3] = True
    mask[10:15, 10:15] = True
    mask[19, 19] = True
    found = regions(mask, 2)
    assert [b for b, _ in found] == [(10, 10, 15, 15), (0, 0, 3, 3)]
    assert found[0][1].all() and found[0][1].shape == (5, 5)
    assert len(regions(mask, 1)) == 3
    diagonal = np.eye(4, dtype=bool)
    assert len(regions(diagonal, 1)) == 1  # 8-connectivity


def test_instances_per_thing_class_and_no_stuff():
    labels, score, _ = scene()
    objs = find_objects(labels, score, CLASSES, CFG)
    names = [(o.name, o.area) for o in objs]
    assert names == [("mug", 400), ("mug", 100), ("book", 1600), ("My Mug", 900)]
    mug = objs[0]
    assert mug.box == (10, 10, 30, 30) and mug.class_id == 1 and mug.concept_id == ""
    assert mug.present and mug.geometry is None  # no depth given
    assert mug.score == pytest.approx(0.9)
    assert objs[3].class_id == 32768 and objs[3].concept_id == "my_mug"
    assert objs[3].full_mask(H, W).sum() == 900


def test_presence_gate_area_and_score():
    labels, score, _ = scene()
    mine = find_objects(labels, score, CLASSES, CFG)[3]
    assert mine.present  # 900 px >= 0.01 * 19200 and score 0.7 >= 0.5
    strict = ObjectConfig(presence_min_area=0.01, presence_min_score=0.8)
    assert not find_objects(labels, score, CLASSES, strict)[3].present
    big = ObjectConfig(presence_min_area=0.05, presence_min_score=0.0)
    assert not find_objects(labels, score, CLASSES, big)[3].present
    labels[labels == 3] = 0  # not in view at all: still listed, absent, with an empty box
    gone = find_objects(labels, score, CLASSES, CFG)[-1]
    assert gone.concept_id == "my_mug" and not gone.present and gone.area == 0


def test_concept_is_one_object_its_largest_region():
    labels, score, _ = scene()
    labels[0:5, 150:155] = 3  # a 25 px false positive elsewhere
    mine = [o for o in find_objects(labels, score, CLASSES, CFG) if o.concept_id]
    assert len(mine) == 1 and mine[0].area == 900


def test_concept_masks_empty_while_absent():
    labels, score, _ = scene()
    masks = concept_masks(find_objects(labels, score, CLASSES, CFG), H, W)
    assert masks["my_mug"].dtype == np.uint8 and (masks["my_mug"] == 255).sum() == 900
    strict = ObjectConfig(presence_min_score=0.8)
    masks = concept_masks(find_objects(labels, score, CLASSES, strict), H, W)
    assert not masks["my_mug"].any()


def test_3d_centroid_and_box_of_a_fronto_parallel_patch():
    labels, score, depth = scene()
    objs = find_objects(labels, score, CLASSES, CFG, depth, CAM)
    mug = objs[0].geometry
    # Pixels 10..29 at z = 1: x = (u - cx) / fx for u in 10..29; the median is at u = 19.5.
    assert mug.centroid[2] == pytest.approx(1.0)
    assert mug.centroid[0] == pytest.approx((19.5 - CAM.cx) / 500, abs=1e-6)
    assert mug.centroid[1] == pytest.approx((19.5 - CAM.cy) / 500, abs=1e-6)
    assert mug.box_min[0] == pytest.approx((10 - CAM.cx) / 500, abs=1e-6)
    assert mug.box_max[0] == pytest.approx((29 - CAM.cx) / 500, abs=1e-6)
    assert mug.valid_points == 400 and len(mug.points) == 400
    assert objs[2].geometry.centroid[2] == pytest.approx(0.8)
    assert objs[3].geometry.centroid[2] == pytest.approx(1.2)


def test_3d_ignores_missing_readings_and_rejects_background_outliers():
    labels, score, depth = scene()
    depth[10:30, 10:15] = np.nan  # a hole: no reading
    depth[10:12, 10:30] = 0.0  # 0 = no reading too (16UC1 convention)
    depth[28:30, 15:30] = 2.0  # the mask bleeds onto the wall 1 m behind
    geo = find_objects(labels, score, CLASSES, CFG, depth, CAM)[0].geometry
    assert geo.valid_points == 400 - 100 - 30
    assert len(geo.points) == 270 - 30  # the 30 wall pixels are outliers
    assert geo.centroid[2] == pytest.approx(1.0) and geo.box_max[2] == pytest.approx(1.0)


def test_3d_keeps_a_rounded_object_whole():
    """A cylinder seen side-on (4 cm wide at 1 m, its front 2 cm nearer than its rim) keeps its
    rim: the outlier rule never trims closer than the region's width."""
    labels, score, depth = scene()
    u = np.arange(10, 30)
    depth[10:30, 10:30] = 1.02 - 0.02 * np.sqrt(1 - ((u - 19.5) / 10) ** 2)[None, :]
    geo = find_objects(labels, score, CLASSES, CFG, depth, CAM)[0].geometry
    assert len(geo.points) == 400


def test_3d_needs_enough_points():
    mask = np.ones((3, 3), bool)
    depth = np.full((H, W), np.nan, np.float32)
    depth[0, 0:5] = 1.0
    assert lift(mask, (0, 0, 3, 3), depth, CAM, 3.0) is None


def test_intrinsics_validation_and_scaling():
    with pytest.raises(ValueError, match="positive focal"):
        Intrinsics.from_k([0.0] * 9, 640, 480)
    with pytest.raises(ValueError, match="finite"):
        Intrinsics(math.nan, 1.0, 1.0, 1.0, 4, 4)
    with pytest.raises(ValueError, match="9 values"):
        Intrinsics.from_k([1.0, 2.0], 640, 480)
    k = Intrinsics.from_k([500, 0, 319.5, 0, 510, 239.5, 0, 0, 1], 640, 480)
    half = k.scaled_to(320, 240)
    assert (half.fx, half.fy, half.cx, half.cy) == (250, 255, 159.5, 119.5)
    # The same ray through the same spot of the picture at both resolutions.
    x, z = 0.1, 1.0
    u640 = k.fx * x / z + k.cx
    assert (u640 + 0.5) / 2 - 0.5 == pytest.approx(half.fx * x / z + half.cx)
    with pytest.raises(ValueError, match="aspect"):
        k.scaled_to(640, 640)


def test_align_depth_resamples_by_nearest_and_refuses_another_aspect():
    depth = np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)
    up = align_depth(depth, 4, 4)
    assert up.shape == (4, 4) and np.isnan(up[0:2, 2:4]).all() and (up[2:4, 0:2] == 2).all()
    with pytest.raises(ValueError, match="aspect"):
        align_depth(depth, 6, 4)
    with pytest.raises(ValueError, match="one channel"):
        align_depth(np.zeros((2, 2, 3), np.float32), 2, 2)


def test_frame_objects_skips_only_3d_when_depth_is_unusable():
    labels, score, depth = scene()
    objs, problem = frame_objects(labels, score, CLASSES, CFG, depth, None)
    assert "intrinsics" in problem and len(objs) == 4 and all(o.geometry is None for o in objs)
    objs, problem = frame_objects(labels, score, CLASSES, CFG, depth[:, :100], CAM)
    assert "aspect" in problem and all(o.geometry is None for o in objs)
    half = depth[::2, ::2]  # a depth camera at half the colour resolution
    objs, problem = frame_objects(labels, score, CLASSES, CFG, half, CAM)
    assert problem == "" and objs[2].geometry.centroid[2] == pytest.approx(0.8)


def test_stuff_words_cover_coco_stuff_and_plain_words():
    auto = stuff_words(["auto"])
    assert {"wall", "floor", "table", "sky", "wall-brick", "floor-wood"} <= auto
    assert not {"cup", "person", "bottle", "scissors"} & auto
    assert set(COCO_STUFF_171[80:]) <= auto
    assert stuff_words(["shelf", " rack "]) == {"shelf", "rack"}


def test_class_infos_mark_stuff_words_and_concepts():
    infos = class_infos(["wall", "mug", "My Mug"], 2, np.array([0, 1, 32768]), {"wall"})
    assert infos == [ClassInfo(0, "wall", "", True), ClassInfo(1, "mug"),
                     ClassInfo(32768, "My Mug", "my_mug")]


def test_the_box_leaves_out_a_thin_strip_beyond_a_depth_jump():
    """A bottle seen from above: its depth runs from 0.9 m (top) to 1.1 m (foot), so the MAD
    gate is wide; the mask's top edge takes in a 1-pixel strip of the wall 0.25 m behind. The
    strip stays among the points (the gate lets it in) but not in the box."""
    depth = np.full((H, W), 3.0, np.float32)
    mask = np.zeros((40, 20), bool)
    mask[:] = True
    depth[20:60, 50:70] = np.linspace(0.9, 1.1, 40, dtype=np.float32)[:, None]
    depth[20, 50:70] = 1.15  # the strip: the top row reads the wall behind the bottle top
    geo = lift(mask, (50, 20, 70, 60), depth, CAM, 3.0)
    assert geo.points[:, 2].max() == pytest.approx(1.15)
    assert geo.box_max[2] == pytest.approx(1.1) and geo.box_min[2] == pytest.approx(0.9 + 0.2 / 39)
    part = lift(mask[:, :10], (50, 20, 60, 60), depth, CAM, 3.0)  # half the bottle: no strip
    assert part.box_max[2] == pytest.approx(1.1)


def test_a_slanted_surface_keeps_its_whole_box_on_a_strided_grid_and_in_millimetres():
    """A large face tilted away from the camera (read every 6th pixel), and a small one at
    15 cm in 16UC1 millimetres: no jump anywhere, so the box is the points' whole extent."""
    cam = Intrinsics(600.0, 600.0, 319.5, 239.5, 640, 480)
    v = np.arange(480, dtype=np.float64)[:, None] * np.ones((1, 640))
    for z0, slope, box, millimetres in ((0.4, 1.2, (120, 90, 520, 390), False),
                                        (0.15, 1.0, (288, 208, 352, 272), True)):
        z = z0 / (1 - slope * (v - cam.cy) / cam.fy)
        if millimetres:
            z = np.round(z * 1000) / 1000
        x0, y0, x1, y1 = box
        depth = np.full((480, 640), np.nan, np.float32)
        depth[y0:y1, x0:x1] = z[y0:y1, x0:x1]
        geo = lift(np.ones((y1 - y0, x1 - x0), bool), box, depth, cam, 3.0)
        extent = geo.points.max(axis=0) - geo.points.min(axis=0)
        np.testing.assert_allclose(np.subtract(geo.box_max, geo.box_min), extent, atol=1e-6)
        assert extent[2] > 0.01


def test_the_strided_grid_is_centred_on_the_region():
    """A 440x380 px face at 0.5 m read every 7th pixel: centroid and box within 2.5 mm."""
    cam = Intrinsics(600.0, 600.0, 319.5, 239.5, 640, 480)
    box = (100, 50, 540, 430)
    depth = np.full((480, 640), 0.5, np.float32)
    geo = lift(np.ones((380, 440), bool), box, depth, cam, 3.0)
    want = [((100 + 539) / 2 - cam.cx) * 0.5 / 600, ((50 + 429) / 2 - cam.cy) * 0.5 / 600]
    assert np.abs(np.subtract(geo.centroid[:2], want)).max() < 0.0025
    assert abs(geo.box_min[0] - (100 - cam.cx) * 0.5 / 600) < 0.0025
    assert abs(geo.box_max[0] - (539 - cam.cx) * 0.5 / 600) < 0.0025


def test_intrinsics_no_camera_has_are_refused():
    for fx, cx in ((1e-40, 320.0), (1e9, 320.0), (500.0, 1e300), (500.0, -2000.0)):
        with pytest.raises(ValueError, match="camera|principal"):
            Intrinsics(fx, fx, cx, 240.0, 640, 480)


def test_a_depth_image_with_no_readings_is_reported():
    labels, score, depth = scene()
    objs, problem = frame_objects(labels, score, CLASSES, CFG, np.full_like(depth, np.nan), CAM)
    assert "no object has enough depth readings" in problem
    assert all(o.geometry is None for o in objs)
