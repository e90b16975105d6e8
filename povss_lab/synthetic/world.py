"""A seeded procedural world: textured rooms, a dozen object families, and instance identities.

No pretrained weights are reachable offline, so the project trains and measures its small SAN
on this world instead. Everything is a pure function of seeds: an identity ("my mug") is fixed
by (class, identity_id, world seed) and can be rendered again in new scenes with a new pose,
scale, lighting and occluders; a scene is fixed by its SceneSpec. Ground truth is exact: labels
are written by the same boolean masks that paint the pixels, in painter's order.
"""

from __future__ import annotations

import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from povss_lab.synthetic.shapes import (
    GLYPHS,
    THING_BY_NAME,
    THINGS,
    IdentityParams,
    Painter,
    frac,
)

STUFF_CLASSES: tuple[str, ...] = ("wall", "floor", "table")
THING_CLASSES: tuple[str, ...] = tuple(t.name for t in THINGS)
CLASS_NAMES: tuple[str, ...] = STUFF_CLASSES + THING_CLASSES
# Objects per scene, (min, max): held-out, benchmark and demo scenes; training draws denser ones
# (training.recipe: TrainOptions.train_objects).
SCENE_OBJECTS: tuple[int, int] = (3, 7)
WALL, FLOOR, TABLE = 0, 1, 2
_GOLDEN = 0.6180339887


@dataclass(frozen=True)
class Identity:
    """One specific object ("my mug"): its class and everything about its look."""

    class_name: str
    identity_id: int
    params: IdentityParams


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    i, f = int(h * 6) % 6, h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    return ((v, q, p, p, t, v)[i], (t, v, v, q, p, p)[i], (p, p, t, v, v, q)[i])


def make_identity(class_name: str, identity_id: int, seed: int) -> Identity:
    """The identity_id-th look of a class in the world `seed` (independent of how many exist).

    Hues follow a golden-ratio sequence and patterns cycle, so identities of one class are
    spread apart (distinct hard negatives) while each is still a deterministic function of its
    three keys.
    """
    spec = THING_BY_NAME[class_name]
    key = zlib.crc32(class_name.encode())
    cls_rng = np.random.default_rng([seed, key])
    h0, p0, g0 = cls_rng.random(), int(cls_rng.integers(64)), int(cls_rng.integers(64))
    rng = np.random.default_rng([seed, key, identity_id + 1])
    lo, hi = spec.hues
    hue = (lo + (hi - lo) * ((h0 + identity_id * _GOLDEN) % 1.0)) % 1.0
    if spec.neutral and identity_id % 4 == 3:
        base = _hsv(hue, 0.04, (0.93, 0.16, 0.6)[(identity_id // 4) % 3])
    else:
        base = _hsv(hue, rng.uniform(*spec.sat), rng.uniform(*spec.val))
    lum = 0.3 * base[0] + 0.59 * base[1] + 0.11 * base[2]
    second = _hsv((hue + rng.uniform(0.3, 0.7)) % 1.0, rng.uniform(0.2, 0.9),
                  rng.uniform(0.5, 0.95))
    if rng.random() < 0.3:
        second = (0.92, 0.92, 0.9) if lum < 0.5 else (0.12, 0.12, 0.13)
    contrast = _hsv((hue + rng.uniform(0.25, 0.75)) % 1.0, rng.uniform(0.5, 1.0), 0.9)
    pattern_color = contrast if rng.random() < 0.5 else ((0.95,) * 3 if lum < 0.5 else (0.08,) * 3)
    scale, angle = float(rng.uniform(3.5, 7.0)), float(rng.choice([0.0, 0.0, 90.0, 45.0, -45.0]))
    if class_name == "banana":  # ripeness spots
        pattern_color, scale = (0.35, 0.22, 0.08), scale + 4.0
    elif class_name == "apple":  # fine vertical streaks / speckles, yellow on red or green
        pattern_color = _hsv(0.0 if 0.08 < hue < 0.2 else 0.14, 0.8, 0.85)
        scale, angle = scale + 6.0, 90.0
    params = IdentityParams(
        base_color=base, secondary_color=second,
        pattern=spec.patterns[(p0 + identity_id) % len(spec.patterns)],
        pattern_color=pattern_color,
        pattern_scale=scale,
        pattern_angle=angle,
        glyph=GLYPHS[(g0 + identity_id) % len(GLYPHS)],
        aspect=float(rng.uniform(*spec.aspect)),
        variant=int(rng.integers(spec.variants)),
        shape=tuple(float(x) for x in rng.random(3)),
    )
    return Identity(class_name, identity_id, params)


def make_identities(class_name: str, n: int, seed: int) -> list[Identity]:
    """n distinct identities of one class: the personal one and its hard negatives."""
    return [make_identity(class_name, i, seed) for i in range(n)]


# Looks per thing class in a default world: SYN^per's identities and the held-out scenes'.
IDENTITIES_PER_CLASS = 8


class World:
    """The class table and a fixed pool of identities per thing class, all from one seed."""

    def __init__(self, seed: int = 0, identities_per_class: int = IDENTITIES_PER_CLASS) -> None:
        self.seed = seed
        self.identities_per_class = identities_per_class
        self._pool = {c: make_identities(c, identities_per_class, seed) for c in THING_CLASSES}

    @property
    def class_names(self) -> tuple[str, ...]:
        """Stuff then things, fixed order; a semantic id is an index into this."""
        return CLASS_NAMES

    @property
    def stuff_classes(self) -> tuple[str, ...]:
        """Background classes (no instances)."""
        return STUFF_CLASSES

    @property
    def thing_classes(self) -> tuple[str, ...]:
        """Object classes (each a family of shapes with identities)."""
        return THING_CLASSES

    def class_id(self, name: str) -> int:
        """Semantic id of a class name."""
        return CLASS_NAMES.index(name)

    def identities(self, class_name: str) -> list[Identity]:
        """The pool of identities of a class used for random scenes."""
        return list(self._pool[class_name])

    def identity(self, class_name: str, identity_id: int) -> Identity:
        """Any identity of this world, in the pool or beyond it."""
        if identity_id < self.identities_per_class:
            return self._pool[class_name][identity_id]
        return make_identity(class_name, identity_id, self.seed)

    def all_identities(self) -> list[Identity]:
        """Every pooled identity, class by class."""
        return [i for c in THING_CLASSES for i in self._pool[c]]


@functools.lru_cache(maxsize=8)
def default_world(seed: int = 0) -> World:
    """A cached World, for callers that only need the class table and a pool."""
    return World(seed)


@dataclass(frozen=True)
class PlacedObject:
    """An identity with a pose. scale: the object's local unit (about its height) in pixels;
    rotation: degrees, clockwise on screen; flip: mirror left-right (e.g. handle side)."""

    identity: Identity
    center: tuple[float, float]  # (x, y) in pixels
    scale: float
    rotation: float = 0.0
    flip: bool = False


@dataclass(frozen=True)
class SceneSpec:
    """Everything a scene depends on. size is (width, height); objects are in painter's order
    (later covers earlier); None samples them from `seed` and the world given to render_scene.
    photometric=False turns off global lighting changes, blur and noise (for exact tests)."""

    seed: int
    size: tuple[int, int] = (320, 240)
    objects: Sequence[PlacedObject] | None = None
    photometric: bool = True
    shadows: bool = True


class SceneObject(NamedTuple):
    """An object in a rendered scene: who it is, its value in `instance`, visible pixels."""

    identity: Identity
    index: int
    visible: int


@dataclass
class Scene:
    """A rendered scene with exact ground truth."""

    image: np.ndarray  # uint8 HxWx3 RGB
    semantic: np.ndarray  # uint16 HxW, index into CLASS_NAMES
    instance: np.ndarray  # int32 HxW, 0 = no object, k = objects[k - 1]
    objects: list[SceneObject]
    placements: list[PlacedObject]
    areas: list[int] = field(default_factory=list)  # in-image pixels of each object unoccluded
    spec: SceneSpec | None = None  # what rendered it (objects resolved): re-render at will
    layout: str = ""  # "table" (table below the wall), "room" (floor and a table) or "floor"
    surfaces: dict[str, str] = field(default_factory=dict)  # stuff class -> texture style

    def mask(self, identity: Identity) -> np.ndarray:
        """Visible pixels of every instance of one identity (the personal ground truth)."""
        idx = [o.index for o in self.objects if o.identity == identity]
        return np.isin(self.instance, idx)


# --- backgrounds -----------------------------------------------------------------------------

@dataclass(frozen=True)
class _Layout:
    kind: str  # "table": table below the wall; "room": wall, floor and a table; "floor"
    horizon: int  # first row below the wall (0: no wall, a top-down view)
    table: np.ndarray | None = None  # room: the table top's polygon in pixels


def _layout(seed: int, w: int, h: int) -> _Layout:
    """Scene geometry, a function of the seed alone so sampling and rendering agree."""
    rng = np.random.default_rng([seed, 1])
    kind = str(rng.choice(["table", "room", "floor"], p=[0.45, 0.35, 0.2]))
    if kind == "table":
        return _Layout(kind, int((0.0 if rng.random() < 0.3 else rng.uniform(0.12, 0.4)) * h))
    if kind == "floor":
        return _Layout(kind, int(rng.uniform(0.08, 0.35) * h))
    hz = rng.uniform(0.2, 0.42) * h
    yb, yf = hz + rng.uniform(0.05, 0.15) * h, rng.uniform(0.78, 1.05) * h
    fw, xc = rng.uniform(1.0, 1.5) * w, w / 2 + rng.uniform(-0.15, 0.15) * w
    bw = fw * rng.uniform(0.6, 0.8)
    top = np.array([[xc - bw / 2, yb], [xc + bw / 2, yb], [xc + fw / 2, yf], [xc - fw / 2, yf]])
    return _Layout(kind, int(hz), top)


def _rect(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.round(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) * 16).astype(np.int32)


def _stuff_map(lay: _Layout, w: int, h: int) -> np.ndarray:
    """Stuff class per pixel: wall above the horizon; table (top, apron, legs) or floor below."""
    stuff = np.full((h, w), TABLE if lay.kind == "table" else FLOOR, np.uint16)
    stuff[: lay.horizon] = WALL
    if lay.table is not None:
        x0, x1, yf, a = lay.table[3, 0], lay.table[2, 0], lay.table[2, 1], 0.06 * h
        legs = [_rect(x, yf, x + 0.04 * w, h + 1) for x in (x0 + 0.06 * w, x1 - 0.1 * w)]
        polys = [np.round(lay.table * 16).astype(np.int32), _rect(x0, yf, x1, yf + a)] + legs
        cv2.fillPoly(stuff, polys, TABLE, cv2.LINE_8, 4)
    return stuff


def _lowfreq(rng: np.random.Generator, h: int, w: int, cell: int = 24) -> np.ndarray:
    small = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)


def _texture(style: str, x: np.ndarray, z: np.ndarray, rng: np.random.Generator,
             color: tuple[float, float, float]) -> np.ndarray:
    """A surface texture at plane coordinates (x across, z along, in image heights)."""
    h, w = x.shape
    n = _lowfreq(rng, h, w)
    lut = rng.uniform(0.82, 1.12, 64).astype(np.float32)
    seam = None
    if style == "wood":
        t = x * rng.uniform(5, 12) + 0.12 * n + 0.02 * np.sin(z * 9.0)
        g = 0.88 + 0.08 * np.sin(2 * np.pi * t) + 0.05 * np.sin(2 * np.pi * 5.3 * t + 2 * n)
    elif style == "planks":
        pw = rng.uniform(0.12, 0.25)
        i = np.floor(x / pw).astype(np.int64) % 64
        zz = z / rng.uniform(0.6, 1.2) + lut[(i * 7) % 64] * 3.7
        g = lut[i] * (0.9 + 0.07 * np.sin(2 * np.pi * (x * 40 + 0.6 * n)))
        seam = (frac(x / pw) < 0.04) | (frac(zz) < 0.012)
    elif style in ("tiles", "bricks"):
        s, brick = rng.uniform(0.1, 0.25), style == "bricks"
        zs = z / (s * (0.5 if brick else 1.0))
        row = np.floor(zs)
        xs = x / s + (0.5 * (row % 2) if brick else 0.0)
        g = lut[(np.floor(xs).astype(np.int64) * 7 + row.astype(np.int64) * 13) % 64] * 0.35 + 0.68
        seam = (frac(xs) < 0.05) | (frac(zs) < (0.1 if brick else 0.05))
    elif style == "stripes":
        g = np.where(frac(x * rng.uniform(4, 10)) < 0.5, 1.0, 0.88)
    elif style == "marble":
        v = np.abs(np.sin(3 * (x + 0.7 * z) + 1.2 * n))
        g = 1.0 - 0.25 * np.exp(-v / 0.05) * np.clip(0.6 + 0.5 * _lowfreq(rng, h, w, 40), 0, 1)
    elif style == "cloth":
        s = rng.uniform(0.05, 0.12)
        g = 1.0 - 0.22 * ((frac(x / s) < 0.5).astype(np.float32) + (frac(z / s) < 0.5))
    elif style == "carpet":
        g = 1.0 + 0.05 * n + 0.07 * rng.standard_normal((h, w), dtype=np.float32)
    else:  # paint / laminate
        g = 1.0 + 0.02 * n
    if seam is not None:
        g = np.where(seam, g * 0.55, g)
    return g.astype(np.float32)[..., None] * np.array(color, np.float32)


def _surface_look(cid: int, rng: np.random.Generator) -> tuple[str, tuple[float, float, float]]:
    """A random style and colour for a floor or a table."""
    wood = _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.75))
    if cid == FLOOR:
        style = str(rng.choice(["planks", "tiles", "carpet"]))
        return style, wood if style == "planks" else _hsv(rng.random(), rng.uniform(0, 0.3),
                                                           rng.uniform(0.3, 0.85))
    style = str(rng.choice(["wood", "wood", "paint", "marble", "cloth"]))
    other = {"paint": _hsv(rng.random(), rng.uniform(0, 0.15), rng.uniform(0.2, 0.95)),
             "marble": (0.9, 0.89, 0.86),
             "cloth": _hsv(rng.random(), rng.uniform(0.3, 0.8), rng.uniform(0.6, 0.9))}
    return style, other.get(style, wood)


def _background(
    lay: _Layout, stuff: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, str]]:
    """Textured wall / floor / table, RGB float32 in [0, 1] (the ground in perspective), and
    the texture style of each stuff class drawn."""
    h, w = stuff.shape
    hz = lay.horizon
    img = np.empty((h, w, 3), np.float32)
    looks: dict[str, str] = {}
    xs = (np.arange(w, dtype=np.float32) + 0.5 - w / 2)[None, :] / h
    ys = (np.arange(h, dtype=np.float32) + 0.5)[:, None]
    if hz > 0:
        style = str(rng.choice(["paint", "paint", "bricks", "stripes"]))
        color = _hsv(rng.random(), rng.uniform(0.03, 0.3), rng.uniform(0.6, 0.95))
        img[:hz] = _texture(style, np.repeat(xs, hz, 0), np.repeat(ys[:hz] / h, w, 1), rng, color)
        looks[CLASS_NAMES[WALL]] = style
    if hz >= h:
        return img, looks
    if hz > 0:  # ground plane seen from above the table: rows compress towards the horizon
        yv = hz - 0.35 * h
        zd = (h - yv) / (ys[hz:] - yv)
        x, z = xs * zd, np.repeat(zd * (h - yv) / h, w, 1)
    else:
        x, z = np.repeat(xs, h, 0), np.repeat(ys / h, w, 1)
    below = stuff[hz:]
    for cid in (FLOOR, TABLE) if lay.kind == "room" else (below[0, 0],):
        style, color = _surface_look(int(cid), rng)
        looks[CLASS_NAMES[int(cid)]] = style
        tex = _texture(style, x, z, rng, color)
        if lay.kind == "room":
            np.copyto(img[hz:], tex, where=(below == cid)[..., None])
        else:
            img[hz:] = tex
    if lay.table is not None:  # the table's front edge is in shade
        yf = max(int(lay.table[2, 1]), 0)
        img[yf:] *= np.where(stuff[yf:] == TABLE, np.float32(0.6), np.float32(1.0))[..., None]
    return img, looks


# --- rendering -------------------------------------------------------------------------------

def _draw(o: PlacedObject) -> tuple[np.ndarray, np.ndarray, int, int]:
    cls = THING_BY_NAME[o.identity.class_name]
    fx, fy = math.floor(o.center[0]), math.floor(o.center[1])
    p = Painter(o.scale, o.rotation, o.flip, (o.center[0] - fx, o.center[1] - fy), cls.radius)
    cls.draw(p, o.identity.params)
    p.finish()
    return p.rgb, p.mask, fx - p.half, fy - p.half


def _clip(x0: int, y0: int, n: int, w: int, h: int) -> tuple[tuple, tuple] | None:
    ax0, ay0, ax1, ay1 = max(x0, 0), max(y0, 0), min(x0 + n, w), min(y0 + n, h)
    if ax0 >= ax1 or ay0 >= ay1:
        return None
    src = (slice(ay0 - y0, ay1 - y0), slice(ax0 - x0, ax1 - x0))
    return (slice(ay0, ay1), slice(ax0, ax1)), src


def render_scene(spec: SceneSpec, world: World | None = None) -> Scene:
    """Render a scene and its exact ground truth; objects are painted in list order.

    Shadows only darken the background (their pixels keep the stuff label); photometric
    changes come last and never touch the labels.
    """
    w, h = spec.size
    if spec.objects is None:
        spec = sample_spec(np.random.default_rng([spec.seed, 3]), world or default_world(),
                           size=spec.size, seed=spec.seed, photometric=spec.photometric,
                           shadows=spec.shadows)
    lay = _layout(spec.seed, w, h)
    semantic = _stuff_map(lay, w, h)
    rng = np.random.default_rng([spec.seed, 2])
    img, looks = _background(lay, semantic, rng)
    objs = list(spec.objects or ())
    drawn = [_draw(o) for o in objs]
    if spec.shadows and drawn:
        shadow = np.zeros((h, w), np.float32)
        sx = rng.uniform(-0.08, 0.08)
        for o, (_, m, x0, y0) in zip(objs, drawn):
            c = _clip(x0 + round(sx * o.scale), y0 + round(0.05 * o.scale), m.shape[0], w, h)
            if c is not None:
                np.maximum(shadow[c[0]], m[c[1]], out=shadow[c[0]])
        sigma = 0.025 * float(np.mean([o.scale for o in objs])) + 0.25  # blurred at half size
        small = cv2.resize(shadow, ((w + 1) // 2, (h + 1) // 2), interpolation=cv2.INTER_AREA)
        small = cv2.GaussianBlur(small, (0, 0), sigma) * np.float32(-rng.uniform(0.25, 0.45))
        img *= (cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) + 1.0)[..., None]
    instance = np.zeros((h, w), np.int32)
    areas = []
    for k, (o, (rgb, m, x0, y0)) in enumerate(zip(objs, drawn), 1):
        c = _clip(x0, y0, m.shape[0], w, h)
        if c is None:
            areas.append(0)
            continue
        mm = m[c[1]]
        areas.append(int(mm.sum()))
        np.copyto(img[c[0]], rgb[c[1]], where=mm[..., None])
        instance[c[0]][mm] = k
        semantic[c[0]][mm] = CLASS_NAMES.index(o.identity.class_name)
    if spec.photometric:
        img = _photometric(img, rng)
    img *= 255.0
    img += 0.5
    image = np.clip(img, 0, 255, out=img).astype(np.uint8)
    counts = np.bincount(instance.ravel(), minlength=len(objs) + 1)
    objects = [SceneObject(o.identity, k, int(counts[k])) for k, o in enumerate(objs, 1)]
    return Scene(image, semantic, instance, objects, objs, areas, spec, lay.kind, looks)


@functools.lru_cache(maxsize=4)
def _noise_bank(h: int, w: int) -> np.ndarray:
    """Fixed Gaussian noise larger than the image; a scene reads a random window of it
    (drawing fresh normals per pixel would be the slowest step of rendering)."""
    return np.random.default_rng(0).standard_normal((h + 96, w + 96, 3), dtype=np.float32)


def _photometric(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global exposure, contrast, white balance, a light ramp, sometimes blur, sensor noise."""
    h, w = img.shape[:2]
    gx, gy = rng.uniform(-0.2, 0.2, 2)
    ramp = (1.0 + gx * (np.arange(w, dtype=np.float32)[None, :] / w - 0.5)
            + gy * (np.arange(h, dtype=np.float32)[:, None] / h - 0.5)) * rng.uniform(0.75, 1.2)
    c = rng.uniform(0.8, 1.15)
    img *= np.float32(c)  # contrast about mid-grey, then exposure, ramp and white balance
    img += np.float32(0.5 - 0.5 * c)
    img *= ramp[..., None]
    img *= (1.0 + rng.uniform(-0.05, 0.05, 3)).astype(np.float32)
    if rng.random() < 0.3:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 1.0))
    dy, dx = rng.integers(0, 97, 2)
    img += _noise_bank(h, w)[dy : dy + h, dx : dx + w] * np.float32(rng.uniform(0.004, 0.02))
    return img


# --- sampling --------------------------------------------------------------------------------

def sample_spec(rng: np.random.Generator, world: World, required: Sequence[Identity] = (),
                n_objects: tuple[int, int] = SCENE_OBJECTS, size: tuple[int, int] = (320, 240),
                exclude: Sequence[Identity] = (), seed: int | None = None,
                photometric: bool = True, shadows: bool = True) -> SceneSpec:
    """A random SceneSpec holding `required` plus distractors from the world's pool.

    Distractors never repeat a required identity nor use one in `exclude` (pass the personal
    identity there to build negative images). Objects stand on the table (or floor), get
    larger towards the camera, avoid heavy overlap, and are painted far to near.
    """
    w, h = size
    seed = int(rng.integers(2**31)) if seed is None else seed
    lay = _layout(seed, w, h)
    stuff = _stuff_map(lay, w, h)
    surface = stuff == (TABLE if (stuff[lay.horizon:] == TABLE).any() else FLOOR)
    surface[: lay.horizon] = False
    ys, xs = np.nonzero(surface)
    if ys.size == 0:
        ys, xs = np.nonzero(np.ones((h - h // 2, w), bool))
        ys = ys + h // 2
    n = max(int(rng.integers(n_objects[0], n_objects[1] + 1)), len(required))
    banned = set(required) | set(exclude)
    pool = [i for i in world.all_identities() if i not in banned]
    picks = rng.choice(len(pool), size=min(n - len(required), len(pool)), replace=False)
    idents = list(required) + [pool[j] for j in picks]
    placed: list[tuple[float, PlacedObject, float]] = []  # (foot row, object, radius)
    span = max(h - lay.horizon, 1)
    for ident in idents:
        cls = THING_BY_NAME[ident.class_name]
        best = None
        for _ in range(12):
            j = int(rng.integers(ys.size))
            fx, fy = xs[j] + rng.random(), ys[j] + rng.random()
            scale = cls.size * h * (0.7 + 0.6 * (fy - lay.horizon) / span) * rng.uniform(0.8, 1.2)
            r = 0.42 * scale
            cx = float(np.clip(fx, 0.6 * r, w - 0.6 * r))
            cy = float(np.clip(fy - (0.4 * scale if cls.upright else 0.0), 0.6 * r, h - 0.6 * r))
            over = max([(r + rr - math.hypot(cx - q.center[0], cy - q.center[1])) / (2 * min(r, rr))
                        for _, q, rr in placed] + [0.0])
            if best is None or over < best[0]:
                best = (over, fy, cx, cy, scale, r)
            if over < 0.3:
                break
        _, fy, cx, cy, scale, r = best
        rot = rng.uniform(-12, 12) if cls.upright else rng.uniform(0, 360)
        po = PlacedObject(ident, (cx, cy), float(scale), float(rot), bool(rng.random() < 0.5))
        placed.append((fy, po, r))
    placed.sort(key=lambda t: t[0])
    return SceneSpec(seed, (w, h), [po for _, po, _ in placed], photometric, shadows)


def sample_scene(rng: np.random.Generator, world: World, required: Sequence[Identity] = (),
                 n_objects: tuple[int, int] = SCENE_OBJECTS, size: tuple[int, int] = (320, 240),
                 exclude: Sequence[Identity] = (), min_visible: float = 0.5) -> Scene:
    """A random rendered scene in which every required identity keeps at least `min_visible`
    of its (in-image) pixels: the way personalization shots and test images are drawn."""
    for attempt in range(4):
        spec = sample_spec(rng, world, required, n_objects, size, exclude)
        if attempt == 3:  # give up on chance: bring the required objects to the front
            objs = sorted(spec.objects, key=lambda o: o.identity in required)
            spec = SceneSpec(spec.seed, spec.size, objs, spec.photometric, spec.shadows)
        scene = render_scene(spec)
        if all(o.visible > 0 and o.visible >= min_visible * a
               for o, a in zip(scene.objects, scene.areas) if o.identity in required):
            return scene
    return scene
