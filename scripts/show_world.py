"""Render a contact sheet of the synthetic world so a person can judge it by eye.

Usage: python scripts/show_world.py OUT.png [--seed N] [--scenes 12] [--size 320x240]

Top block: sample scenes, each followed by its colourised semantic map (class names written
on it). Bottom block: for a few classes, identities 0..7 rendered alone at one pose, so one
can check that "my mug" and the other mugs really look different.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from povss_lab.interrupt import run_main  # noqa: E402
from povss_lab.synthetic.world import (  # noqa: E402
    PlacedObject,
    SceneSpec,
    World,
    render_scene,
    sample_scene,
)
from povss_ros.io import write_png  # noqa: E402


def palette(n: int) -> np.ndarray:
    """A fixed, well spread colour per class id."""
    hsv = np.stack([np.arange(n) * 180 // n, np.full(n, 200), np.full(n, 230)], 1)
    rgb = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0]
    rgb[:3] = [[90, 90, 110], [140, 110, 80], [170, 150, 100]]  # stuff: muted
    return rgb


def colourise(semantic: np.ndarray, instance: np.ndarray, names: tuple[str, ...]) -> np.ndarray:
    """Semantic colours, instance borders, and the class name at each object's centre."""
    out = palette(len(names))[semantic].copy()
    edges = cv2.morphologyEx(instance.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3))) > 0
    out[edges] = 0
    for k in np.unique(instance)[1:]:
        ys, xs = np.nonzero(instance == k)
        name = names[int(semantic[ys[0], xs[0]])]
        org = (int(xs.mean()) - 4 * len(name), int(ys.mean()))
        cv2.putText(out, name, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(out, name, org, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def identity_strip(world: World, cls: str, n: int, cell: int) -> np.ndarray:
    """Identities 0..n-1 of one class, each alone at the same pose."""
    tiles = []
    for i in range(n):
        obj = PlacedObject(world.identity(cls, i), (cell / 2, cell / 2), cell * 0.75)
        s = render_scene(SceneSpec(seed=5, size=(cell, cell), objects=[obj], photometric=False))
        tile = s.image.copy()
        cv2.putText(tile, f"{cls} {i}", (3, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1)
        tiles.append(tile)
    return np.concatenate(tiles, 1)


def main() -> None:
    """Parse arguments, render, write the PNG."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--classes", default="mug,bottle,ball,box,vase,apple")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    world = World(args.seed)
    rng = np.random.default_rng(args.seed)
    pairs = []
    for _ in range(args.scenes):
        s = sample_scene(rng, world, size=(w, h))
        sem = colourise(s.semantic, s.instance, world.class_names)
        pairs.append(np.concatenate([s.image, sem], 1))
    cols = 2
    rows = [np.concatenate(pairs[i : i + cols], 1) for i in range(0, len(pairs) - cols + 1, cols)]
    sheet = np.concatenate(rows, 0)
    cell = sheet.shape[1] // 8
    strips = [identity_strip(world, c, 8, cell) for c in args.classes.split(",") if c]
    if strips:
        sheet = np.concatenate([sheet] + [s[:, : sheet.shape[1]] for s in strips], 0)
    write_png(args.out, sheet)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    run_main(main)
