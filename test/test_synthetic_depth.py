"""The synthetic world's depth: a consistent pinhole scene behind the 2D rendering."""

from __future__ import annotations

import math

import numpy as np
import pytest

from povss_lab.synthetic.depth import (
    CAMERA_HEIGHT,
    NOISE_AT_1M,
    TABLE_HEIGHT,
    TOP_DOWN_HEIGHT,
    add_sensor_faults,
    intrinsics_for,
    render_depth,
    scene_camera,
    surface_depth,
)
from povss_lab.synthetic.world import (
    FLOOR,
    TABLE,
    PlacedObject,
    SceneSpec,
    _layout,
    _stuff_map,
    default_world,
    render_scene,
)

SIZE = (640, 480)
# Layouts at 640x480 (world._layout): seed 1 a table below a wall, 0 a floor, 5 and 7 rooms
# (floor + table with a visible front), 15 a table seen straight down (no wall).
TABLE_SEED, FLOOR_SEED, ROOM_SEEDS, TOP_DOWN_SEED = 1, 0, (5, 7), 15


def _points(depth: np.ndarray, intr, mask: np.ndarray) -> np.ndarray:
    v, u = np.nonzero(mask)
    z = depth[v, u].astype(np.float64)
    return np.stack([(u - intr.cx) * z / intr.fx, (v - intr.cy) * z / intr.fy, z], axis=1)


def _fit_plane(pts: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Unit normal (pointing to the camera's side), offset, and the largest residual."""
    mean = pts.mean(axis=0)
    normal = np.linalg.svd(pts - mean, full_matrices=False)[2][2]
    offset = float(normal @ mean)
    if offset > 0:  # the camera (origin) on the side the normal points to
        normal, offset = -normal, -offset
    return normal, -offset, float(np.abs(pts @ normal - offset).max())


def _one_object(cls: str, center: tuple[float, float], scale: float, seed: int = TABLE_SEED):
    obj = PlacedObject(default_world().identity(cls, 0), center, scale)
    scene = render_scene(SceneSpec(seed, SIZE, [obj], photometric=False, shadows=False))
    return scene, render_depth(scene)


@pytest.mark.parametrize("seed", [TABLE_SEED, FLOOR_SEED])
def test_ground_is_one_plane_at_camera_height_vanishing_on_the_renderers_row(seed):
    w, h = SIZE
    lay = _layout(seed, w, h)
    surface = surface_depth(seed, SIZE)
    below = np.zeros((h, w), bool)
    below[lay.horizon :] = True
    intr = intrinsics_for(w, h)
    normal, distance, worst = _fit_plane(_points(surface, intr, below))
    assert worst < 1e-4  # float32 depth of points up to 2 m away
    assert distance == pytest.approx(CAMERA_HEIGHT, abs=1e-4)
    # The plane's vanishing line (rays parallel to it) is the row the renderer draws it with.
    assert abs(normal[0]) < 1e-4
    v_vanish = intr.cy - intr.fy * normal[2] / normal[1]
    assert v_vanish == pytest.approx(lay.horizon - 0.35 * h - 0.5, abs=0.05)


def test_wall_is_vertical_and_meets_the_ground_at_the_horizon():
    w, h = SIZE
    lay = _layout(TABLE_SEED, w, h)
    surface, cam = surface_depth(TABLE_SEED, SIZE), scene_camera(TABLE_SEED, SIZE)
    wall = np.zeros((h, w), bool)
    wall[: lay.horizon] = True
    normal, _, worst = _fit_plane(_points(surface, cam.intrinsics, wall))
    assert worst < 1e-4
    assert abs(normal @ cam.up) < 1e-4  # vertical
    # Continuous at the wall's base: the last wall row and the first ground row nearly agree.
    step = surface[lay.horizon, w // 2] - surface[lay.horizon - 1, w // 2]
    assert abs(step) < 0.02


@pytest.mark.parametrize("seed", ROOM_SEEDS)
def test_room_floor_is_a_parallel_plane_a_table_height_lower(seed):
    w, h = SIZE
    stuff = _stuff_map(_layout(seed, w, h), w, h)
    surface, intr = surface_depth(seed, SIZE), intrinsics_for(w, h)
    top = (stuff == TABLE) & (np.arange(h)[:, None] < _layout(seed, w, h).table[2, 1])
    n_table, d_table, worst_t = _fit_plane(_points(surface, intr, top))
    n_floor, d_floor, worst_f = _fit_plane(_points(surface, intr, stuff == FLOOR))
    assert max(worst_t, worst_f) < 2e-4
    assert abs(n_table @ n_floor) == pytest.approx(1.0, abs=1e-6)
    assert d_table == pytest.approx(CAMERA_HEIGHT, abs=1e-4)
    assert d_floor == pytest.approx(CAMERA_HEIGHT + TABLE_HEIGHT, abs=1e-4)


def test_top_down_scene_looks_straight_down():
    cam = scene_camera(TOP_DOWN_SEED, SIZE)
    assert cam.pitch == pytest.approx(math.pi / 2)
    np.testing.assert_allclose(surface_depth(TOP_DOWN_SEED, SIZE), TOP_DOWN_HEIGHT, atol=1e-9)


@pytest.mark.parametrize("cls", ["can", "box", "vase", "mug"])
def test_upright_object_stands_on_the_plane_at_its_foot(cls):
    scene, sd = _one_object(cls, (330.0, 330.0), 120.0)
    mask = scene.instance == 1
    v, u = np.nonzero(mask)
    mid = int(round((u.min() + u.max()) / 2))
    column = np.nonzero(mask[:, mid])[0]
    foot = column.max()
    plane = float(sd.camera.plane_depth(np.float64(foot), CAMERA_HEIGHT))
    assert sd.depth[foot, mid] == pytest.approx(plane, abs=1e-4)
    # Its front line above the foot is a vertical line: the same distance ahead, not the ground
    # (the ground there is further away), up to the object's top.
    pts = _points(sd.depth, sd.intrinsics, np.isin(np.arange(SIZE[1])[:, None], column)
                  & (np.arange(SIZE[0])[None, :] == mid))
    ahead = pts @ sd.camera.forward
    assert np.ptp(ahead) < 0.005
    heights = pts @ sd.camera.up + CAMERA_HEIGHT
    assert heights.min() > -1e-3 and heights.max() > 0.1  # a standing object, tens of cm
    upper = column[: column.size // 2]  # well above the foot, the ground is far behind it
    assert (sd.depth[upper, mid] < sd.surface[upper, mid] - 0.05).all()


def test_upright_object_bulges_towards_the_camera():
    scene, sd = _one_object("can", (330.0, 330.0), 120.0)
    mask = scene.instance == 1
    row = int(np.median(np.nonzero(mask)[0]))
    cols = np.nonzero(mask[row])[0]
    mid_z = sd.depth[row, (cols.min() + cols.max()) // 2]
    rims = sd.depth[row, [cols.min(), cols.max()]]
    half_width = (cols.max() - cols.min() + 1) / 2 * mid_z / sd.intrinsics.fx
    # A cylinder: the rims are about a radius behind the middle (each rim a little more or less,
    # seen slightly off axis and from above).
    assert (rims - mid_z > 0.5 * half_width).all()
    assert 0.8 * half_width < (rims - mid_z).mean() < 1.2 * half_width


def test_lying_object_is_a_thin_layer_just_above_the_plane():
    scene, sd = _one_object("book", (300.0, 380.0), 130.0)
    pts = _points(sd.depth, sd.intrinsics, scene.instance == 1)
    heights = pts @ sd.camera.up + CAMERA_HEIGHT
    assert heights.min() > 0.0 and heights.max() <= 0.031


@pytest.mark.parametrize("seed", [TABLE_SEED, FLOOR_SEED, *ROOM_SEEDS, TOP_DOWN_SEED, 40, 41])
def test_every_pixel_valid_and_objects_nearer_than_what_they_cover(seed):
    scene = render_scene(SceneSpec(seed, SIZE))
    sd = render_depth(scene)
    assert sd.depth.dtype == np.float32 and sd.depth.shape == SIZE[::-1]
    assert np.isfinite(sd.depth).all() and (sd.depth > 0.1).all() and (sd.depth < 10).all()
    things = scene.instance > 0
    assert (sd.depth[~things] == sd.surface[~things]).all()
    assert (sd.depth[things] <= sd.surface[things]).all()
    for truth in sd.objects:
        if truth.visible >= 200:
            m = scene.instance == truth.index
            assert np.median(sd.surface[m] - sd.depth[m]) > 0.003, truth.class_name
    # The 3D layout's near-to-far order is the renderer's painting order: each object's truth
    # is nearer (horizontally) the later it is painted, on the whole.
    ahead = [np.array(t.centroid) @ sd.camera.forward for t in sd.objects if t.visible > 500]
    if len(ahead) >= 3 and sd.camera.pitch < 1.5:
        assert np.corrcoef(np.arange(len(ahead)), ahead)[0, 1] < 0


def test_intrinsics_scale_with_the_image():
    big, small = intrinsics_for(640, 480), intrinsics_for(320, 240)
    assert big.fx == big.fy and big.fx == pytest.approx(320 / math.tan(math.radians(30)))
    assert (big.cx, big.cy) == (319.5, 239.5)
    assert big.scaled_to(320, 240) == pytest.approx(small)
    # The same scene at half the size is the same 3D scene: its surfaces agree pixel for pixel
    # (the small pixel (u, v) covers the big pixels 2u..2u+1, 2v..2v+1).
    z_big, z_small = surface_depth(TABLE_SEED, (640, 480)), surface_depth(TABLE_SEED, (320, 240))
    pooled = z_big.reshape(240, 2, 320, 2).mean(axis=(1, 3))
    lay = _layout(TABLE_SEED, 320, 240)
    rows = slice(lay.horizon + 2, None)  # away from the wall's edge (rounded per size)
    np.testing.assert_allclose(z_small[rows], pooled[rows], rtol=0.01)


def test_truth_is_the_visible_pixels_points():
    scene = render_scene(SceneSpec(5, SIZE))
    sd = render_depth(scene)
    assert len(sd.objects) == len(scene.placements)
    intr = sd.intrinsics
    for truth, placed, obj in zip(sd.objects, scene.placements, scene.objects):
        assert truth.class_name == placed.identity.class_name
        assert truth.index == obj.index and truth.visible == obj.visible
        pts = []
        for v in range(SIZE[1]):
            for u in np.nonzero(scene.instance[v] == truth.index)[0]:
                z = float(sd.depth[v, u])
                pts.append(((u - intr.cx) * z / intr.fx, (v - intr.cy) * z / intr.fy, z))
        pts = np.array(pts)
        np.testing.assert_allclose(truth.centroid, pts.mean(axis=0), atol=1e-9)
        np.testing.assert_allclose(truth.box_min, pts.min(axis=0), atol=1e-9)
        np.testing.assert_allclose(truth.box_max, pts.max(axis=0), atol=1e-9)


def test_deterministic():
    a = render_depth(render_scene(SceneSpec(7, SIZE)))
    b = render_depth(render_scene(SceneSpec(7, SIZE)))
    assert np.array_equal(a.depth, b.depth) and a.objects == b.objects
    assert np.array_equal(add_sensor_faults(a.depth, 3), add_sensor_faults(a.depth, 3),
                          equal_nan=True)
    assert not np.array_equal(add_sensor_faults(a.depth, 3), add_sensor_faults(a.depth, 4),
                              equal_nan=True)


def test_sensor_faults_grow_with_range_and_drop_readings():
    flat = np.full((400, 500), 1.0, np.float32)
    flat[200:] = 2.0
    noisy = add_sensor_faults(flat, 0)
    missing = np.isnan(noisy)
    assert 0.015 < missing.mean() < 0.025
    near, far = (noisy - flat)[:200][~missing[:200]], (noisy - flat)[200:][~missing[200:]]
    assert near.std() == pytest.approx(NOISE_AT_1M, rel=0.05)
    assert far.std() == pytest.approx(4 * NOISE_AT_1M, rel=0.05)
    assert np.isnan(add_sensor_faults(flat, 0, missing=0.0)).sum() == 0
