"""Depth and camera intrinsics for the synthetic world, consistent with its 2D rendering.

The renderer draws the ground in perspective with rows compressing towards a vanishing row
``yv = horizon - 0.35 h`` (`world._background`); here that is a pinhole camera pitched down
over a horizontal support plane (the table top, or the floor in a "floor" scene) so that the
plane's vanishing line is exactly that row. A scene without a wall (horizon 0) is drawn with no
perspective at all: its camera looks straight down.

Surfaces, in the camera's optical frame (x right, y down, z forward, metres):

- support plane: ray-plane intersection; in a "room" the floor is a parallel plane
  `TABLE_HEIGHT` lower and the table's front (apron, legs) a vertical plane at its front edge;
- wall: a vertical plane facing the camera, standing where the wall meets the ground (the
  layout's horizon row);
- upright objects: a vertical cylinder whose front line touches the support plane at the
  object's foot (the lowest row of its drawing, its middle column), of the drawing's half-width
  in metres, so depth varies across the object as on a real mug or bottle;
- lying objects: a thin dome just above the plane (at most `LYING_THICKNESS`).

Object sizes in metres follow from the pixels: width x depth / f. The 2D renderer grows objects
towards the image bottom less than a true perspective would, so the same class is somewhat
larger in metres near the wall than near the camera; the depth is still a consistent 3D scene
(every object stands on the plane, nearer than what it covers), which is what the 3D estimate is
measured on. Ground truth per object is exact: the mean, min and max of its visible pixels'
back-projected points.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from povss_lab.synthetic.shapes import THING_BY_NAME
from povss_lab.synthetic.world import (
    FLOOR,
    TABLE,
    WALL,
    PlacedObject,
    Scene,
    _draw,
    _layout,
    _stuff_map,
)
from povss_ros.objects import Intrinsics

# Horizontal field of view: a common RGB-D camera's (RealSense D435 colour ~69 deg, Kinect ~62).
HFOV_DEG = 60.0
# Camera height above the support plane. With the renderer's vanishing rows (pitch about 20-35
# degrees at 60 deg HFOV) the support plane then spans ~0.6 m (image bottom) to ~2 m (the wall's
# base), the reach of an arm camera looking at a table.
CAMERA_HEIGHT = 0.5
# A scene without a wall is a straight-down view: the camera this far above the table.
TOP_DOWN_HEIGHT = 0.9
# Room scenes: the floor lies this far below the table top (a dining table's height).
TABLE_HEIGHT = 0.72
# Lying objects (books, phones, spoons...) are a dome at most this high above the plane, and at
# most `LYING_FLATNESS` of their width (a flat thing is flat whatever its size).
LYING_THICKNESS = 0.03
LYING_FLATNESS = 0.2
# Sensor faults: noise of a structured-light / stereo camera grows with the square of range.
NOISE_AT_1M = 0.0015
MISSING_FRACTION = 0.02


@dataclass(frozen=True)
class Camera:
    """The pinhole camera of a scene: intrinsics, pitch below the horizontal, height above the
    support plane (what objects stand on)."""

    intrinsics: Intrinsics
    pitch: float  # radians; pi/2 = looking straight down
    height: float  # metres

    @property
    def up(self) -> np.ndarray:
        """World up, in the optical frame."""
        return np.array([0.0, -math.cos(self.pitch), -math.sin(self.pitch)])

    @property
    def forward(self) -> np.ndarray:
        """The horizontal direction the camera faces, in the optical frame."""
        return np.array([0.0, -math.sin(self.pitch), math.cos(self.pitch)])

    def rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """[..., 3] rays through pixels (u, v) with z = 1, so a ray's parameter is the depth."""
        k = self.intrinsics
        u, v = np.broadcast_arrays(np.asarray(u, np.float64), np.asarray(v, np.float64))
        return np.stack([(u - k.cx) / k.fx, (v - k.cy) / k.fy, np.ones_like(u)], axis=-1)

    def plane_depth(self, v: np.ndarray, drop: float | np.ndarray) -> np.ndarray:
        """Depth at rows v of a horizontal plane `drop` metres below the camera (inf where the
        row is at or above the plane's vanishing line)."""
        k = self.intrinsics
        dv = (np.asarray(v, np.float64) - k.cy) / k.fy
        denom = math.sin(self.pitch) + math.cos(self.pitch) * dv
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 1e-9, np.asarray(drop) / np.maximum(denom, 1e-9), np.inf)

    def wall_depth(self, v: np.ndarray, distance: float) -> np.ndarray:
        """Depth at rows v of a vertical plane facing the camera `distance` metres ahead."""
        k = self.intrinsics
        dv = (np.asarray(v, np.float64) - k.cy) / k.fy
        denom = math.cos(self.pitch) - math.sin(self.pitch) * dv
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(denom > 1e-9, distance / np.maximum(denom, 1e-9), np.inf)

    def ahead(self, v: float, drop: float) -> float:
        """Horizontal distance ahead of the camera of a horizontal plane's point at row v."""
        z = float(self.plane_depth(np.float64(v), drop))
        return z * float(self.rays(self.intrinsics.cx, v) @ self.forward)


def intrinsics_for(width: int, height: int) -> Intrinsics:
    """The synthetic camera at a resolution: `HFOV_DEG`, square pixels, centred principal
    point (pixel centres at integers, as in CameraInfo)."""
    f = width / (2.0 * math.tan(math.radians(HFOV_DEG) / 2.0))
    return Intrinsics(f, f, (width - 1) / 2.0, (height - 1) / 2.0, width, height)


def scene_camera(seed: int, size: tuple[int, int]) -> Camera:
    """The camera of the scene `seed` at `size` (w, h): its pitch puts the support plane's
    vanishing line on the renderer's row ``horizon - 0.35 h``."""
    w, h = size
    intr = intrinsics_for(w, h)
    lay = _layout(seed, w, h)
    if lay.horizon <= 0:
        return Camera(intr, math.pi / 2, TOP_DOWN_HEIGHT)
    # The renderer's rows have their centres at +0.5; the intrinsics' at integers.
    v_vanish = lay.horizon - 0.35 * h - 0.5
    return Camera(intr, math.atan2(intr.cy - v_vanish, intr.fy), CAMERA_HEIGHT)


def surface_depth(seed: int, size: tuple[int, int]) -> np.ndarray:
    """float64 HxW depth of the scene's wall, floor and table alone (no objects)."""
    w, h = size
    cam = scene_camera(seed, size)
    lay = _layout(seed, w, h)
    stuff = _stuff_map(lay, w, h)
    rows = np.arange(h, dtype=np.float64)[:, None]
    support = np.broadcast_to(cam.plane_depth(rows, cam.height), (h, w))
    if lay.horizon <= 0:
        return np.array(support)
    out = np.array(support)
    floor_drop = cam.height + (TABLE_HEIGHT if lay.kind == "room" else 0.0)
    if lay.kind == "room":
        out = np.where(stuff == FLOOR, cam.plane_depth(rows, floor_drop), out)
        y_front = float(lay.table[2, 1])  # the table top's front edge (pixel-centre rows)
        front = cam.wall_depth(rows, cam.ahead(y_front, cam.height))
        out = np.where((stuff == TABLE) & (rows >= y_front), front, out)
    # The wall stands where the ground meets it: the boundary between rows horizon-1 and horizon.
    wall = cam.wall_depth(rows, cam.ahead(lay.horizon - 0.5, floor_drop))
    return np.where(stuff == WALL, wall, out)


@dataclass(frozen=True)
class ObjectTruth:
    """Exact 3D ground truth of one scene object from its visible pixels (optical frame, m)."""

    index: int  # its value in Scene.instance
    class_name: str
    upright: bool
    visible: int  # visible pixels
    centroid: tuple[float, float, float] | None  # mean of the visible surface points
    box_min: tuple[float, float, float] | None
    box_max: tuple[float, float, float] | None


@dataclass
class SceneDepth:
    """A scene's depth image (float32 metres, every pixel valid), camera and object truth."""

    depth: np.ndarray
    intrinsics: Intrinsics
    camera: Camera
    surface: np.ndarray  # float32 depth of the wall / floor / table alone (what objects cover)
    objects: list[ObjectTruth]


def back_project(depth: np.ndarray, intr: Intrinsics, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """[N, 3] optical-frame points of pixels (u, v) (integer columns, rows) of `depth`."""
    z = depth[v, u].astype(np.float64)
    return np.stack([(u - intr.cx) * z / intr.fx, (v - intr.cy) * z / intr.fy, z], axis=1)


def render_depth(scene: Scene) -> SceneDepth:
    """Depth, intrinsics and per-object 3D truth of a rendered scene (`world.render_scene`)."""
    if scene.spec is None:
        raise ValueError("the scene has no spec: render it with render_scene")
    h, w = scene.instance.shape
    cam = scene_camera(scene.spec.seed, (w, h))
    horizon = _layout(scene.spec.seed, w, h).horizon
    surface = surface_depth(scene.spec.seed, (w, h))
    depth = surface.copy()
    flat = scene.instance.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(len(scene.placements) + 2))
    pixels = []
    for k, placed in enumerate(scene.placements, 1):
        idx = order[starts[k] : starts[k + 1]]
        v, u = np.divmod(idx, w)
        pixels.append((u, v))
        if idx.size == 0:
            continue
        z = _object_depth(cam, placed, horizon, u.astype(np.float64), v.astype(np.float64))
        depth.ravel()[idx] = np.minimum(z, surface.ravel()[idx])
    depth = depth.astype(np.float32)
    truths = []
    for k, ((u, v), placed) in enumerate(zip(pixels, scene.placements), 1):
        name = placed.identity.class_name
        upright = THING_BY_NAME[name].upright
        if u.size == 0:
            truths.append(ObjectTruth(k, name, upright, 0, None, None, None))
            continue
        pts = back_project(depth, cam.intrinsics, u, v)
        truths.append(ObjectTruth(k, name, upright, int(u.size), _tup(pts.mean(axis=0)),
                                  _tup(pts.min(axis=0)), _tup(pts.max(axis=0))))
    return SceneDepth(depth, cam.intrinsics, cam, surface.astype(np.float32), truths)


def _tup(a: np.ndarray) -> tuple[float, float, float]:
    return (float(a[0]), float(a[1]), float(a[2]))


def _object_depth(cam: Camera, placed: PlacedObject, horizon: int, u: np.ndarray,
                  v: np.ndarray) -> np.ndarray:
    """Depth of one object's surface at its pixels (before the surface behind caps it)."""
    _, mask, x0, y0 = _draw(placed)
    my, mx = np.nonzero(mask)
    my, mx = my + y0, mx + x0
    f = cam.intrinsics.fx
    upright = THING_BY_NAME[placed.identity.class_name].upright
    if upright and cam.pitch < math.pi / 2 - 1e-6:
        return _standing(cam, u, v, (mx.min() + mx.max()) / 2.0, max(float(my.max()), horizon),
                         (mx.max() - mx.min() + 1) / 2.0)
    if upright:  # seen from straight above, a standing drawing is a cylinder on its side
        t = math.radians(placed.rotation)
        across = (mx - placed.center[0]) * math.cos(t) + (my - placed.center[1]) * math.sin(t)
        mid, r_px = (across.min() + across.max()) / 2.0, (across.max() - across.min() + 1) / 2.0
        r = r_px * cam.height / f
        x = ((u - placed.center[0]) * math.cos(t) + (v - placed.center[1]) * math.sin(t)
             - mid) * cam.height / f
        return cam.height - r - np.sqrt(np.maximum(r * r - x * x, 0.0))
    # Lying: a dome over the plane, highest at the drawing's centre.
    cx, cy = placed.center
    reach = float(np.sqrt((mx - cx) ** 2 + (my - cy) ** 2).max()) + 0.5
    z_mid = float(cam.plane_depth(np.float64(max(cy, horizon)), cam.height))
    top = min(LYING_THICKNESS, LYING_FLATNESS * 2.0 * reach * z_mid / f)
    rho2 = ((u - cx) ** 2 + (v - cy) ** 2) / reach**2
    lift = top * (0.3 + 0.7 * np.sqrt(np.clip(1.0 - rho2, 0.0, 1.0)))
    return cam.plane_depth(v, cam.height - lift)


def _standing(cam: Camera, u: np.ndarray, v: np.ndarray, u_axis: float, v_foot: float,
              r_px: float) -> np.ndarray:
    """Depth of a vertical cylinder whose nearest line stands on the support plane at pixel
    (u_axis, v_foot), of radius r_px pixels there, by exact ray-cylinder intersection."""
    up = cam.up
    z_foot = float(cam.plane_depth(np.float64(v_foot), cam.height))
    foot = z_foot * cam.rays(u_axis, v_foot)
    r = r_px * z_foot / cam.intrinsics.fx
    ahead = foot - (foot @ up) * up
    axis = foot + r * ahead / np.linalg.norm(ahead)
    axis_h = axis - (axis @ up) * up
    d = cam.rays(u, v)
    d_h = d - (d @ up)[:, None] * up
    a = np.einsum("ij,ij->i", d_h, d_h)
    b = d_h @ axis_h
    disc = b * b - a * (axis_h @ axis_h - r * r)
    # Rays passing beside the cylinder (a drawing's parts beyond its half-width): the depth
    # where they pass closest to the axis, continuous with the cylinder's silhouette.
    return (b - np.sqrt(np.maximum(disc, 0.0))) / a


def add_sensor_faults(depth: np.ndarray, seed: int, noise_at_1m: float = NOISE_AT_1M,
                      missing: float = MISSING_FRACTION) -> np.ndarray:
    """A copy of `depth` as an RGB-D sensor reads it: Gaussian noise of standard deviation
    ``noise_at_1m * z**2`` and a seeded `missing` fraction of pixels without reading (NaN)."""
    rng = np.random.default_rng([seed, 404])
    z = depth.astype(np.float32)
    noisy = z + rng.standard_normal(z.shape, dtype=np.float32) * np.float32(noise_at_1m) * z * z
    noisy[rng.random(z.shape) < missing] = np.nan
    return noisy
