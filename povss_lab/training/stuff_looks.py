"""Which floor and table looks does a model take for each other?

    python -m povss_lab.training.stuff_looks --weights models/syn_small.safetensors

Floor and table are large classes, so a whole surface labelled as the other one costs held-out
mIoU a lot. The world draws each surface from a few texture styles (`world._surface_look`),
and a scene shows a table alone, a floor alone, or a room with both. This splits the held-out
scenes' floor and table pixels by (class, layout, style) and reports the share labelled right
and the share labelled as the other ground class. A style that is taken for the other class
only when that class is not in view to compare with is an ambiguity of the world's looks at
the model's input size, not something more training fixes.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from povss_lab.interrupt import run_main
from povss_lab.synthetic.world import CLASS_NAMES, FLOOR, TABLE, Scene, World
from povss_lab.training.recipe import TrainOptions
from povss_lab.training.train_eval import held_out_scenes, predict
from povss_ros.san.checkpoint import load_weights
from povss_ros.san.model import build_san
from povss_ros.weights import config_for_weights

GROUND = {FLOOR: TABLE, TABLE: FLOOR}  # each ground class and the one it is mistaken for


@dataclass(frozen=True)
class LookRow:
    """Ground-truth pixels of one ground class in one layout and style, and where they went."""

    class_name: str
    layout: str
    style: str
    scenes: int
    pixels: int
    recall: float  # share labelled as their class
    as_other: float  # share labelled as the other ground class


def ground_confusion(scenes: Sequence[Scene], preds: Sequence[np.ndarray]) -> list[LookRow]:
    """Rows sorted by class, layout and style; scenes whose class has no pixel are skipped."""
    if len(scenes) != len(preds):
        raise ValueError(f"{len(scenes)} scenes but {len(preds)} predictions")
    totals: dict[tuple[str, str, str], list[int]] = {}
    for scene, pred in zip(scenes, preds):
        if pred.shape != scene.semantic.shape:
            raise ValueError(f"prediction {pred.shape} does not match its scene "
                             f"{scene.semantic.shape}")
        for cid, other in GROUND.items():
            name = CLASS_NAMES[cid]
            truth = scene.semantic == cid
            if name not in scene.surfaces or not truth.any():
                continue
            row = totals.setdefault((name, scene.layout, scene.surfaces[name]), [0, 0, 0, 0])
            labels = pred[truth]
            row[0] += 1
            row[1] += int(truth.sum())
            row[2] += int((labels == cid).sum())
            row[3] += int((labels == other).sum())
    return [LookRow(c, lay, style, n, px, right / px, other / px)
            for (c, lay, style), (n, px, right, other) in sorted(totals.items())]


def markdown(rows: Sequence[LookRow]) -> str:
    """The rows as a markdown table."""
    lines = ["| class | layout | style | scenes | pixels | labelled right | "
             "labelled as the other |", "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {r.class_name} | {r.layout} | {r.style} | {r.scenes} | {r.pixels} | "
              f"{r.recall:.3f} | {r.as_other:.3f} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", default="models/syn_small.safetensors")
    ap.add_argument("--scenes", type=int, default=TrainOptions.eval_scenes,
                    help="held-out scenes (train's set)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # SAN's -100 attention masks make slow subnormal floats
    model = load_weights(build_san(config_for_weights(args.weights, None), seed=None),
                         args.weights).eval()
    world = World(TrainOptions.world_seed)
    scenes = held_out_scenes(world, args.scenes, TrainOptions.eval_seed)
    preds = predict(model, model.text_rows(list(world.class_names)), [s.image for s in scenes])
    print(markdown(ground_confusion(scenes, preds)))
    return 0


if __name__ == "__main__":
    run_main(main)
