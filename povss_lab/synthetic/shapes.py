"""Per-class drawing for the synthetic world: every thing class is a family of cv2 shapes.

An object is drawn in its own frame (u right, v down, about 1 unit tall, origin at its middle)
into a small square patch. Rotation, scale and mirroring are one affine map applied to the
polygon vertices, so masks stay exact (no resampling of labels), drawing costs only the
patch, and surface patterns follow the object rather than the image.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

Color = tuple[float, float, float]  # RGB in [0, 1]
Shade = Callable[[np.ndarray, np.ndarray], np.ndarray]
PATTERNS = ("solid", "stripes", "dots", "checker", "band", "glyph")
GLYPHS = ("star", "heart", "triangle", "diamond", "ring", "cross", "moon")
_SHIFT = 4  # sub-pixel bits for cv2 polygon vertices
METAL: Color = (0.72, 0.74, 0.78)


@dataclass(frozen=True)
class IdentityParams:
    """Everything that makes one object instance look like itself (not pose, not lighting)."""

    base_color: Color
    secondary_color: Color
    pattern: str  # one of PATTERNS
    pattern_color: Color
    pattern_scale: float  # pattern cycles per unit (object height)
    pattern_angle: float  # degrees, in the object's own frame
    glyph: str  # logo drawn by the "glyph" pattern, one of GLYPHS
    aspect: float  # width multiplier of the class's nominal shape
    variant: int  # discrete member of the class's shape family
    shape: tuple[float, ...]  # class-specific continuous shape knobs in [0, 1]


def frac(x: np.ndarray) -> np.ndarray:
    """x mod 1 (np.mod is ~40x slower on float32 arrays)."""
    return x - np.floor(x)


def mul(c: Color, k: float) -> Color:
    """Darken (k < 1) or brighten (k > 1) a colour."""
    return (c[0] * k, c[1] * k, c[2] * k)


def ell(cu: float, cv: float, au: float, av: float, a0: float = 0.0, a1: float = 360.0,
        angle: float = 0.0, n: int = 40) -> np.ndarray:
    """Points of an ellipse (arc) in local units; angles in degrees, v down."""
    t = np.radians(np.linspace(a0, a1, n))
    x, y = au * np.cos(t), av * np.sin(t)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return np.stack([cu + c * x - s * y, cv + s * x + c * y], 1)


def rrect(cu: float, cv: float, w: float, h: float, r: float,
          rt: float | None = None) -> np.ndarray:
    """Rounded rectangle polygon; r rounds the bottom corners, rt (default r) the top ones."""
    rt = r if rt is None else rt
    pts = []
    for sx, sy, a0, rad in ((1, 1, 0, r), (-1, 1, 90, r), (-1, -1, 180, rt), (1, -1, 270, rt)):
        rad = max(min(rad, w / 2, h / 2), 1e-4)
        t = np.radians(np.linspace(a0, a0 + 90, 7))
        pts.append(np.stack([cu + sx * (w / 2 - rad) + rad * np.cos(t),
                             cv + sy * (h / 2 - rad) + rad * np.sin(t)], 1))
    return np.concatenate(pts)


def revolve(vs: np.ndarray, rs: np.ndarray) -> np.ndarray:
    """Silhouette of a body of revolution from its profile (v, radius), top to bottom."""
    return np.concatenate([np.stack([rs, vs], 1), np.stack([-rs[::-1], vs[::-1]], 1)])


def cyl_shade(vs: np.ndarray, rs: np.ndarray, cu: float = 0.0) -> Shade:
    """Shading of a lit cylinder/revolved body: dark rims, bright middle, a highlight."""
    def f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        t = np.clip((u - cu) / np.interp(v, vs, rs) * 0.5 + 0.5, 0.0, 1.0)
        bright = np.abs(np.sin(np.pi * t)) ** 0.7
        return 0.66 + 0.4 * bright + 0.22 * np.exp(-(((t - 0.3) / 0.08) ** 2))
    return f


def sphere_shade(cu: float, cv: float, r: float) -> Shade:
    """Shading of a lit sphere with the light up-left."""
    def f(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        d2 = ((u - cu) ** 2 + (v - cv) ** 2) / r**2
        h2 = ((u - cu + 0.35 * r) ** 2 + (v - cv + 0.35 * r) ** 2) / r**2
        return 1.1 - 0.42 * d2 + 0.3 * np.exp(-h2 / 0.04)
    return f


class Painter:
    """One object's patch: colour, exact mask, and the local (u, v) of every pixel."""

    def __init__(self, scale: float, rotation: float, flip: bool, offset: tuple[float, float],
                 radius: float) -> None:
        self.scale = scale
        self.half = half = int(math.ceil(radius * scale)) + 2
        n = 2 * half + 1
        t = math.radians(rotation)
        c, s, f = math.cos(t) * scale, math.sin(t) * scale, -1.0 if flip else 1.0
        self.matrix = np.array([[c * f, -s, half + offset[0]], [s * f, c, half + offset[1]]])
        inv = cv2.invertAffineTransform(self.matrix).astype(np.float32)
        xs, ys = np.arange(n, dtype=np.float32)[None, :], np.arange(n, dtype=np.float32)[:, None]
        self.u = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        self.v = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        self.rgb = np.zeros((n, n, 3), np.float32)
        self.mask = np.zeros((n, n), bool)
        self._scratch = np.zeros((n, n), np.uint8)

    def _px(self, pts: np.ndarray) -> np.ndarray:
        p = pts @ self.matrix[:, :2].T + self.matrix[:, 2]
        return np.round(p * (1 << _SHIFT)).astype(np.int32)

    def poly(self, *polys: np.ndarray) -> np.ndarray:
        """Pixels covered by the union of local-frame polygons."""
        self._scratch[:] = 0
        for pts in polys:
            cv2.fillPoly(self._scratch, [self._px(pts)], 1, cv2.LINE_8, _SHIFT)
        return self._scratch.astype(bool)

    def stroke(self, pts: np.ndarray, width: float, closed: bool = False) -> np.ndarray:
        """Pixels of a thick polyline (width in local units)."""
        self._scratch[:] = 0
        thick = max(1, round(width * self.scale))
        cv2.polylines(self._scratch, [self._px(pts)], closed, 1, thick, cv2.LINE_8, _SHIFT)
        return self._scratch.astype(bool)

    def paint(self, region: np.ndarray, color: Color, shade: Shade | None = None,
              pattern: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None,
              pattern_color: Color | None = None) -> None:
        """Colour a region (later paint covers earlier), optionally patterned and shaded."""
        if not region.any():
            return
        u, v = self.u[region], self.v[region]
        col = np.empty((u.size, 3), np.float32)
        col[:] = color
        if pattern is not None and pattern_color is not None:
            col[pattern(u, v)] = pattern_color
        if shade is not None:
            col *= shade(u, v)[:, None]
        self.rgb[region] = col
        self.mask |= region

    def body(self, region: np.ndarray, k: IdentityParams, shade: Shade | None,
             center: tuple[float, float], size: float, color: Color | None = None) -> None:
        """Paint a main surface with the identity's colour, pattern and logo."""
        self.paint(region, k.base_color if color is None else color, shade,
                   pattern_fn(k, center), k.pattern_color)
        if k.pattern == "glyph":
            self.paint(region & glyph_region(self, k.glyph, center, 0.3 * size),
                       k.pattern_color, shade)

    def finish(self) -> None:
        """Darken the silhouette's rim so objects separate from similar backgrounds."""
        m = self.mask.view(np.uint8)
        edge = self.mask & ~cv2.erode(m, np.ones((3, 3), np.uint8)).astype(bool)
        self.rgb[edge] *= 0.78


def pattern_fn(k: IdentityParams, center: tuple[float, float]) -> Callable | None:
    """The identity's surface pattern as a test on local coordinates (None: plain)."""
    f, t = k.pattern_scale, math.radians(k.pattern_angle)
    c, s = math.cos(t), math.sin(t)

    def rot(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        du, dv = u - center[0], v - center[1]
        return c * du + s * dv, -s * du + c * dv

    if k.pattern == "stripes":
        return lambda u, v: frac(rot(u, v)[1] * f) < 0.42
    if k.pattern == "dots":
        def dots(u: np.ndarray, v: np.ndarray) -> np.ndarray:
            a, b = rot(u, v)
            b = frac(b * f + 0.5 * np.floor(a * f)) - 0.5  # staggered rows
            return (frac(a * f) - 0.5) ** 2 + b**2 < 0.07
        return dots
    if k.pattern == "checker":
        return lambda u, v: (np.floor(rot(u, v)[0] * f) + np.floor(rot(u, v)[1] * f)) % 2 == 0
    if k.pattern == "band":
        return lambda u, v: np.abs(rot(u, v)[1] + 0.05) < 0.5 / f
    return None


def glyph_region(p: Painter, name: str, c: tuple[float, float], r: float) -> np.ndarray:
    """A logo-like mark of radius r at c, as a patch mask."""
    cu, cv = c
    t = np.linspace(0, 2 * np.pi, 40)

    def pts(*xy: float) -> np.ndarray:  # (x, y) pairs in units of r around c
        return np.array(xy).reshape(-1, 2) * r + [cu, cv]

    if name == "star":
        a = np.radians(np.arange(10) * 36 - 90)
        rr = np.where(np.arange(10) % 2 == 0, r, 0.42 * r)
        return p.poly(np.stack([cu + rr * np.cos(a), cv + rr * np.sin(a)], 1))
    if name == "heart":
        x, y = 16 * np.sin(t) ** 3, -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t)
                                     - np.cos(4 * t))
        return p.poly(np.stack([cu + x * r / 17, cv + y * r / 17], 1))
    if name == "triangle":
        return p.poly(pts(0, -1, 0.9, 0.6, -0.9, 0.6))
    if name == "diamond":
        return p.poly(pts(0, -1, 0.7, 0, 0, 1, -0.7, 0))
    if name == "ring":
        return p.stroke(ell(cu, cv, 0.75 * r, 0.75 * r), 0.35 * r, closed=True)
    if name == "cross":
        return p.poly(pts(-0.32, -1, 0.32, -1, 0.32, 1, -0.32, 1),
                      pts(-1, -0.32, 1, -0.32, 1, 0.32, -1, 0.32))
    outer = p.poly(ell(cu, cv, r, r))  # moon
    return outer & ~p.poly(ell(cu + 0.45 * r, cv - 0.2 * r, 0.8 * r, 0.8 * r))


# --- the thing classes: one drawing function per family -------------------------------------

def draw_mug(p: Painter, k: IdentityParams) -> None:
    """Body with a rim showing the inside, and a handle (D, square or small loop)."""
    w, h, cu, cv = 0.6 * k.aspect, 0.78, -0.1, 0.06
    taper = 0.18 * k.shape[1] - 0.05
    top, x1 = cv - h / 2, cu + w / 2 * (1 + taper / 2)
    hs, hw = 0.15 + 0.08 * k.shape[0], 0.06 + 0.03 * k.shape[2]
    if k.variant == 0:
        handle = ell(x1 - 0.03, cv - 0.05, hs, 0.24, -80, 80)
    elif k.variant == 1:
        handle = np.array([[x1 - 0.05, top + 0.14], [x1 + hs, top + 0.16],
                           [x1 + hs, cv + 0.12], [x1 - 0.05, cv + 0.16]])
    else:
        handle = ell(x1 + 0.04, top + 0.25, 0.6 * hs + 0.03, 0.13, 0, 360)
    p.paint(p.stroke(handle, hw, closed=k.variant == 2), mul(k.base_color, 0.9))
    vs = np.array([top, cv + h / 2])
    rs = np.array([w / 2 * (1 + taper / 2), w / 2 * (1 - taper / 2)])
    body = rrect(cu, cv, w, h, 0.09, 0.01)
    body[:, 0] = cu + (body[:, 0] - cu) * np.interp(body[:, 1], vs, rs) / (w / 2)
    p.body(p.poly(body), k, cyl_shade(vs, rs, cu), (cu, cv + 0.05), h)
    p.paint(p.poly(ell(cu, top, rs[0], 0.07)), mul(k.base_color, 1.12))
    inner = p.poly(ell(cu, top + 0.006, rs[0] - 0.035, 0.05))
    p.paint(inner, mul(k.secondary_color, 0.6), lambda u, v: 0.6 + 4.0 * (v - top + 0.05))


def draw_bottle(p: Painter, k: IdentityParams) -> None:
    """Body, shoulders, neck and cap; the identity's pattern is on a label."""
    bw = 0.17 * k.aspect + 0.03
    nw = (0.05, 0.035, 0.1)[k.variant] + 0.02 * k.shape[1]
    neck = 0.12 + 0.1 * k.shape[0] + (0.0, 0.08, -0.06)[k.variant]
    top = -0.5
    t = np.linspace(0, 1, 8)
    ns = top + 0.06 + neck  # where the shoulders start
    vs = np.concatenate([[top + 0.06, ns], ns + 0.14 * t, [0.46, 0.5]])
    rs = np.concatenate([[nw, nw], nw + (bw - nw) * np.sin(t * np.pi / 2), [bw, bw - 0.04]])
    shade = cyl_shade(vs, rs)
    p.paint(p.poly(revolve(vs, rs)), k.base_color, shade)
    lt = top + neck + 0.26 + 0.05 * k.shape[2]
    label = p.poly(np.array([[-bw, lt], [bw, lt], [bw, 0.36], [-bw, 0.36]])) & p.mask
    p.body(label, k, shade, (0.0, (lt + 0.36) / 2), 0.7, k.secondary_color)
    p.paint(p.poly(rrect(0, top + 0.04, 2 * nw + 0.03, 0.08, 0.01)), mul(k.pattern_color, 0.9),
            cyl_shade(vs[:1], np.array([nw + 0.015])))


def draw_ball(p: Painter, k: IdentityParams) -> None:
    """A sphere; the variant adds tennis seams, beach-ball wedges or basketball lines."""
    r = 0.4
    disk = p.poly(ell(0, 0, r, r))
    shade = sphere_shade(0, 0, r)
    p.body(disk, k, shade, (0.0, 0.0), 2 * r)
    if k.variant == 1:
        for a in (0.0, 180.0):
            cu = 1.25 * r * (1 if a else -1)
            seam = p.stroke(ell(cu, 0, 0.8 * r, 0.8 * r, a - 50, a + 50), 0.04)
            p.paint(seam & disk, k.secondary_color, shade)
    elif k.variant == 2:
        for i in range(0, 6, 2):
            arc = ell(0, 0, 1.1 * r, 1.1 * r, i * 60, i * 60 + 60, n=8)
            wedge = np.concatenate([[[0, 0]], arc])
            p.paint(p.poly(wedge) & disk, k.secondary_color, shade)
    elif k.variant == 3:
        lines = [np.array([[-r, 0], [r, 0]]), np.array([[0, -r], [0, r]]),
                 ell(-1.1 * r, 0, 0.75 * r, 0.95 * r, -60, 60),
                 ell(1.1 * r, 0, 0.75 * r, 0.95 * r, 120, 240)]
        for line in lines:
            p.paint(p.stroke(line, 0.025) & disk, (0.08, 0.07, 0.06))


def draw_box(p: Painter, k: IdentityParams) -> None:
    """A cuboid seen from above-front: front face (patterned), lit top, shaded side."""
    w, h = 0.62 * k.aspect, 0.45 + 0.2 * k.shape[0]
    d = 0.16 + 0.1 * k.shape[1]
    sk = 0.55 * d
    x0, y1 = -(w + sk) / 2, (h + d) / 2
    x1, y0 = x0 + w, y1 - h
    p.body(p.poly(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])), k, None,
           ((x0 + x1) / 2, (y0 + y1) / 2), h)
    top = np.array([[x0, y0], [x1, y0], [x1 + sk, y0 - d], [x0 + sk, y0 - d]])
    p.paint(p.poly(top), mul(k.base_color, 1.2))
    p.paint(p.poly(np.array([[x1, y0], [x1, y1], [x1 + sk, y1 - d], [x1 + sk, y0 - d]])),
            mul(k.base_color, 0.7))
    if k.variant == 1:  # parcel tape over the lid and down the front
        tw = 0.05 + 0.03 * k.shape[2]
        xm = (x0 + x1) / 2
        tape = np.array([[xm - tw, y0 + 0.15], [xm + tw, y0 + 0.15], [xm + tw + sk, y0 - d],
                         [xm - tw + sk, y0 - d]])
        p.paint(p.poly(tape), k.secondary_color, lambda u, v: 0.95 + 0.25 * (y0 - v))
    elif k.variant == 2:  # a lid seam
        p.paint(p.stroke(np.array([[x0, y0 + 0.1], [x1, y0 + 0.1]]), 0.02), mul(k.base_color, 0.6))


def draw_book(p: Painter, k: IdentityParams) -> None:
    """A closed book lying flat: page block, cover with pattern, spine or title band."""
    w, h = 0.62 * k.aspect, 0.92
    th = 0.025 + 0.035 * k.shape[0]
    pages = rrect(th, th, w, h, 0.01)
    p.paint(p.poly(pages), (0.93, 0.9, 0.8), lambda u, v: 0.9 + 0.1 * np.cos(u * 300.0))
    cover = p.poly(rrect(0, 0, w, h, 0.015))
    p.body(cover, k, lambda u, v: 1.04 - 0.1 * (u + v), (0.06, -0.05), 0.8)
    if k.variant == 0:
        p.paint(p.poly(rrect(-w / 2 + 0.05, 0, 0.1, h, 0.015)), k.secondary_color,
                lambda u, v: 0.8 + 2.0 * (u + w / 2))
    else:
        y = -h / 2 + 0.12 + 0.15 * k.shape[1]
        p.paint(p.poly(rrect(0, y, w * 0.75, 0.1, 0.01)), k.secondary_color)


def draw_can(p: Painter, k: IdentityParams) -> None:
    """A cylinder: curved bottom edge, metal lid with rim and ring-pull."""
    w = (0.5, 0.62, 0.4)[k.variant] * k.aspect
    h = (0.8, 0.6, 0.92)[k.variant]
    ry, top, bot = 0.06 + 0.03 * w, -0.46 + (0.92 - h) / 2, 0.46 - (0.92 - h) / 2
    vs, rs = np.array([top, bot]), np.array([w / 2, w / 2])
    outline = np.concatenate([[[-w / 2, top], [w / 2, top]], ell(0, bot, w / 2, ry, 0, 180)])
    p.body(p.poly(outline), k, cyl_shade(vs, rs), (0.0, (top + bot) / 2), h)
    if k.variant == 1:  # food can ribs
        for y in np.linspace(top + 0.1, bot - 0.05, 4):
            p.paint(p.stroke(ell(0, y, w / 2, ry, 0, 180), 0.012), METAL, cyl_shade(vs, rs))
    p.paint(p.poly(ell(0, top, w / 2, ry)), METAL, lambda u, v: 1.1 - 0.5 * (v - top + ry))
    p.paint(p.poly(ell(0, top + 0.004, w / 2 - 0.035, ry - 0.02)), mul(METAL, 0.82))
    if k.variant != 1:
        p.paint(p.poly(rrect(0, top - ry * 0.2, 0.08, 0.06, 0.02)), mul(METAL, 1.15))


def draw_plate(p: Painter, k: IdentityParams) -> None:
    """A plate seen obliquely: rim (decorated) around a slightly darker well."""
    a, kv = 0.5 * k.aspect, 0.55 + 0.4 * k.shape[0]
    p.paint(p.poly(ell(0, 0.02, a, a * kv)), mul(k.base_color, 0.75))  # edge thickness
    outer = p.poly(ell(0, 0, a, a * kv))
    inner = p.poly(ell(0, 0.01, 0.68 * a, 0.68 * a * kv))
    rim_shade = lambda u, v: 1.05 - 0.15 * v / (a * kv)  # noqa: E731
    if k.pattern in ("band", "glyph"):
        p.paint(outer, k.base_color, rim_shade)
        ring = p.stroke(ell(0, 0, 0.85 * a, 0.85 * a * kv), 0.03 + 0.04 * k.shape[1], closed=True)
        p.paint(ring, k.pattern_color if k.pattern == "band" else k.secondary_color, rim_shade)
    else:
        p.body(outer & ~inner, k, rim_shade, (0.0, 0.0), 1.0)
    p.paint(inner, mul(k.base_color, 0.93), lambda u, v: 0.9 + 0.15 * (v / (a * kv) + 0.5))
    if k.pattern == "glyph":
        p.paint(glyph_region(p, k.glyph, (0.0, 0.01), 0.3 * a * kv) & inner, k.pattern_color)


def draw_bowl(p: Painter, k: IdentityParams) -> None:
    """A bowl: foot, patterned outside, the opening showing the inside glaze."""
    w, v0, ry = 0.46 * k.aspect, -0.16, 0.12
    depth = 0.34 + 0.1 * k.shape[0]
    p.paint(p.poly(rrect(0, v0 + depth, 0.7 * w, 0.1, 0.02)), mul(k.base_color, 0.7))
    outer = np.concatenate([ell(0, v0, w, ry, 180, 360), ell(0, v0, w, depth, 0, 180)])
    vs, rs = np.array([v0, v0 + depth]), np.array([w, w])
    p.body(p.poly(outer), k, cyl_shade(vs, rs), (0.0, v0 + 0.45 * depth), 0.6)
    inside = p.poly(ell(0, v0, w - 0.03, ry - 0.015))
    p.paint(inside, k.secondary_color, lambda u, v: 0.62 + 1.6 * (v - v0 + ry))
    lip = p.stroke(ell(0, v0, w - 0.012, ry - 0.006), 0.02, closed=True)
    p.paint(lip, mul(k.secondary_color, 1.2))


def draw_phone(p: Painter, k: IdentityParams) -> None:
    """A phone: patterned case; front shows the screen and notch, back shows the cameras."""
    w, h = 0.5 * k.aspect, 0.98
    case = p.poly(rrect(0, 0, w, h, 0.07))
    p.body(case, k, lambda u, v: 1.05 - 0.1 * (u + v), (0.0, 0.05), 0.8)
    if k.variant == 0:
        sc = p.poly(rrect(0, 0, w - 0.06, h - 0.1, 0.04))
        a, b = np.array(k.secondary_color), np.array(k.pattern_color)
        p.paint(sc, (1.0, 1.0, 1.0), None)
        t = np.clip((p.v[sc] + h / 2) / h, 0, 1)[:, None]
        p.rgb[sc] = 0.55 * ((1 - t) * a + t * b)
        p.paint(p.poly(ell(0, -h / 2 + 0.075, 0.02, 0.02)), (0.05, 0.05, 0.06))
    else:
        cu, cv = -w / 2 + 0.12, -h / 2 + 0.14
        p.paint(p.poly(rrect(cu, cv, 0.17, 0.2, 0.04)), (0.15, 0.15, 0.17))
        for dv in (-0.05, 0.05):
            p.paint(p.poly(ell(cu, cv + dv, 0.035, 0.035)), (0.02, 0.02, 0.05))


def draw_banana(p: Painter, k: IdentityParams) -> None:
    """A curved, tapering arc with a stem and a dark tip."""
    R, tw = 0.55 + 0.6 * k.shape[0], (0.08 + 0.04 * k.shape[1]) * k.aspect
    phi = 1.05 / R
    a = np.pi / 2 + np.linspace(-phi / 2, phi / 2, 24)
    cv = -R + 0.12 + R * (1 - math.cos(phi / 2)) / 2
    th = tw * np.maximum(np.sin(np.pi * np.linspace(0.03, 0.97, 24)) ** 0.6, 0.15)
    d = np.stack([np.cos(a), np.sin(a)], 1)
    c = np.array([0.0, cv])
    outline = np.concatenate([c + (R + th)[:, None] * d, (c + (R - th)[:, None] * d)[::-1]])
    def shade(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        t = np.clip((np.hypot(u, v - cv) - R + tw) / (2 * tw), 0, 1)
        return 0.72 + 0.38 * np.abs(np.sin(np.pi * t)) ** 0.7
    p.body(p.poly(outline), k, shade, (0.0, cv + R), 0.35)
    e0, e1 = c + R * d[0], c + R * d[-1]
    stem = np.array([e0, e0 + 0.09 * np.array([math.sin(a[0]), -math.cos(a[0])])])
    p.paint(p.stroke(stem, 0.045), (0.42, 0.38, 0.15))
    p.paint(p.poly(ell(e1[0], e1[1], 0.022, 0.022)), (0.22, 0.14, 0.06))


def draw_apple(p: Painter, k: IdentityParams) -> None:
    """Two upper lobes over a round bottom, a stem and (variant 0) a leaf."""
    lo = 0.1 * k.aspect
    body = p.poly(ell(-lo, -0.04, 0.31, 0.3), ell(lo, -0.04, 0.31, 0.3), ell(0, 0.06, 0.33, 0.33))
    p.body(body, k, sphere_shade(0, 0.02, 0.42), (0.0, 0.03), 0.7)
    stem = np.array([[0, -0.26], [0.015, -0.36], [0.05, -0.44]])
    p.paint(p.stroke(stem, 0.035), (0.35, 0.22, 0.1))
    if k.variant == 0:
        p.paint(p.poly(ell(0.14, -0.4, 0.1, 0.042, angle=-25)), (0.25, 0.55, 0.15),
                lambda u, v: 0.85 + 1.5 * (u - 0.1))


def draw_scissors(p: Painter, k: IdentityParams) -> None:
    """Two crossed metal blades on a pivot, each with a coloured finger ring."""
    half = math.radians(5 + 8 * k.shape[0])
    blade, piv = 0.5 + 0.08 * k.shape[1], np.array([0.0, 0.02])
    ro = np.array([0.12, 0.09]) if k.variant == 0 else np.array([0.15, 0.11])
    for sgn in (-1, 1):
        d = np.array([sgn * math.sin(half), -math.cos(half)])
        n = np.array([-d[1], d[0]])
        pts = np.array([piv - 0.04 * d + 0.045 * n, piv + blade * d + 0.008 * n,
                        piv + blade * d - 0.008 * n, piv - 0.04 * d - 0.035 * n])
        p.paint(p.poly(pts), METAL, lambda u, v: 1.0 + 0.25 * np.cos(60 * u))
        rc = piv - (0.28 + ro[1]) * d
        p.paint(p.stroke(np.array([piv, rc]), 0.07), k.base_color)
        ring = p.poly(ell(rc[0], rc[1], ro[0], ro[1])) & ~p.poly(
            ell(rc[0], rc[1], ro[0] - 0.045, ro[1] - 0.04))
        p.paint(ring, k.base_color, lambda u, v: 1.05 - 0.3 * (v - 0.3))
    p.paint(p.poly(ell(piv[0], piv[1], 0.025, 0.025)), (0.25, 0.25, 0.28))


def draw_spoon(p: Painter, k: IdentityParams) -> None:
    """An oval bowl on a tapering handle."""
    a = 0.13 * k.aspect
    hw0, hw1 = 0.025, 0.04 + 0.015 * k.shape[0]
    handle = np.array([[-hw0, -0.15], [hw0, -0.15], [hw1, 0.42], [-hw1, 0.42]])
    vs, rs = np.array([-0.15, 0.42]), np.array([hw0, hw1])
    p.body(p.poly(handle, ell(0, 0.42, hw1, hw1)), k, cyl_shade(vs, rs), (0.0, 0.2), 0.5)
    p.paint(p.poly(ell(0, -0.3, a, 0.19)), k.base_color, sphere_shade(0, -0.3, 0.2))
    p.paint(p.poly(ell(0, -0.3, a - 0.025, 0.16)), mul(k.base_color, 0.85),
            lambda u, v: 0.85 + 0.9 * (v + 0.3)
            + 0.2 * np.exp(-((u + 0.04) ** 2 + (v + 0.38) ** 2) / 0.003))


def draw_vase(p: Painter, k: IdentityParams) -> None:
    """A body of revolution with a neck and a dark opening; three profile families."""
    b = k.aspect * (0.28 + 0.06 * k.shape[0])
    ctrl = ((0.1, 0.07, b, 0.14), (0.13, 0.1, 0.7 * b, 0.6 * b), (0.08, 0.06, b, 0.1))[k.variant]
    cv = (0.0, 0.15, 0.05)[k.variant] + 0.1 * k.shape[1]
    vs = np.linspace(-0.5, 0.5, 25)
    lip, neck, belly, foot = ctrl
    rs = np.interp(vs, [-0.5, -0.42, -0.3, cv, 0.5], [lip, neck, neck + 0.02, belly, foot])
    rs = np.convolve(np.pad(rs, 2, mode="edge"), np.ones(5) / 5, "valid")
    p.body(p.poly(revolve(vs, rs)), k, cyl_shade(vs, rs), (0.0, cv), 0.6)
    p.paint(p.poly(ell(0, -0.5, rs[0], 0.035)), mul(k.base_color, 0.35))


@dataclass(frozen=True)
class ThingClass:
    """How a class is drawn, how big it is, how it is posed and which looks it comes in."""

    name: str
    draw: Callable[[Painter, IdentityParams], None]
    size: float  # nominal height (local unit) as a fraction of the image height
    upright: bool  # stands on the surface (small tilts) or lies flat (any rotation)
    hues: tuple[float, float] = (0.0, 1.0)  # hue range of base colours (may wrap past 1)
    sat: tuple[float, float] = (0.45, 0.95)
    val: tuple[float, float] = (0.45, 0.95)
    neutral: bool = True  # some identities are white / grey / black
    patterns: tuple[str, ...] = PATTERNS
    variants: int = 3
    aspect: tuple[float, float] = (0.85, 1.15)
    radius: float = 0.72  # patch half-size in local units (drawings reach at most ~0.67)


THINGS: tuple[ThingClass, ...] = (
    ThingClass("mug", draw_mug, 0.24, True),
    ThingClass("bottle", draw_bottle, 0.42, True),
    ThingClass("ball", draw_ball, 0.22, False, variants=4, aspect=(1.0, 1.0)),
    ThingClass("box", draw_box, 0.3, True),
    ThingClass("book", draw_book, 0.34, False, variants=2),
    ThingClass("can", draw_can, 0.24, True),
    ThingClass("plate", draw_plate, 0.38, True, sat=(0.1, 0.6), val=(0.7, 0.98), variants=1),
    ThingClass("bowl", draw_bowl, 0.3, True, variants=1),
    ThingClass("phone", draw_phone, 0.26, False, variants=2),
    ThingClass("banana", draw_banana, 0.32, False, (0.11, 0.22), (0.6, 0.9), (0.7, 0.95), False,
               ("solid", "dots", "solid", "glyph"), 1),
    ThingClass("apple", draw_apple, 0.17, True, (-0.04, 0.26), (0.6, 0.95), (0.5, 0.9), False,
               ("solid", "stripes", "dots", "glyph"), 2, (0.9, 1.1)),
    ThingClass("scissors", draw_scissors, 0.34, False, patterns=("solid",), variants=2),
    ThingClass("spoon", draw_spoon, 0.3, False, patterns=("solid", "band", "stripes"), variants=1),
    ThingClass("vase", draw_vase, 0.4, True),
)
THING_BY_NAME = {t.name: t for t in THINGS}
