"""How much mIoU can SAN's mask grid carry at all? An upper bound from resolution alone.

    python -m povss_lab.training.resolution_bound --scenes 200

SAN predicts masks on the side adapter's patch grid (1/8 of the padded input for syn_small)
and upsamples their logits bilinearly to the image. Before blaming the training for a low
mIoU, check that the grid itself can draw the world's objects: for each held-out scene, a
free per-class logit grid of that size is fitted to the ground truth (cross-entropy after
SAN's exact upsampling: resize, pad, grid, back to the original size), and its argmax is
scored like a prediction. No model is involved. A class that scores low here (a thin spoon)
cannot score high from any model at this resolution; a class that scores high here and low
from the model is a learning problem.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from povss_lab.eval.metrics import ConfusionMatrix
from povss_lab.interrupt import run_main
from povss_lab.synthetic.world import Scene, World
from povss_lab.training.train_eval import class_iou, held_out_scenes
from povss_ros.san.config import SANConfig
from povss_ros.san.model import BatchGeometry, padded_shape, resized_shape
from povss_ros.san.semantic import grid_to_image_matrices


def grid_upsamplers(
    image_hw: tuple[int, int], cfg: SANConfig
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """(rows [H, h], cols [W, w], grid (h, w)): SAN's path from the mask grid to the image."""
    resized = resized_shape(*image_hw, cfg.min_size, cfg.max_size)
    ph, pw = padded_shape([resized], cfg.size_divisibility)
    grid = (ph // cfg.side_patch, pw // cfg.side_patch)
    geometry = BatchGeometry((tuple(image_hw),), (resized,), (ph, pw))
    rows, cols = grid_to_image_matrices(grid, geometry)
    return rows, cols, grid


def best_grid_labels(
    labels: np.ndarray, num_classes: int, cfg: SANConfig, steps: int = 150, lr: float = 0.5
) -> np.ndarray:
    """The label map of the per-class logit grid that best fits `labels` [H, W] (Adam on CE)."""
    rows, cols, (h, w) = grid_upsamplers(labels.shape, cfg)
    target = torch.from_numpy(labels.astype(np.int64))[None]
    grid = torch.zeros(num_classes, h, w, requires_grad=True)
    opt = torch.optim.Adam([grid], lr=lr)
    for _ in range(steps):
        loss = F.cross_entropy((rows @ grid @ cols.t())[None], target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return (rows @ grid @ cols.t()).argmax(0).numpy().astype(np.uint16)


def resolution_bound(
    scenes: Sequence[Scene],
    class_names: Sequence[str],
    cfg: SANConfig,
    steps: int = 150,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Dataset-level mIoU and per-class IoU of `best_grid_labels` over `scenes`."""
    cm = ConfusionMatrix(len(class_names))
    t0 = time.perf_counter()
    for i, scene in enumerate(scenes):
        cm.update(best_grid_labels(scene.semantic, len(class_names), cfg, steps), scene.semantic)
        if progress is not None and ((i + 1) % 20 == 0 or i + 1 == len(scenes)):
            progress(f"[{i + 1}/{len(scenes)}] running mIoU {100 * cm.miou():.1f} | "
                     f"{time.perf_counter() - t0:.0f}s")
    return {"miou": cm.miou(), "iou": class_iou(cm, class_names), "scenes": len(scenes)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=200, help="held-out scenes (train.py's set)")
    ap.add_argument("--min-size", type=int, default=None, help="default: syn_small's")
    ap.add_argument("--steps", type=int, default=150, help="fitting steps per scene")
    args = ap.parse_args(argv)
    from dataclasses import replace

    from povss_lab.training.recipe import SYN_SMALL, TrainOptions

    torch.set_num_threads(1)
    cfg = SYN_SMALL if args.min_size is None else replace(SYN_SMALL, min_size=args.min_size)
    opts = TrainOptions()
    world = World(opts.world_seed)
    scenes = held_out_scenes(world, args.scenes, opts.eval_seed)
    res = resolution_bound(scenes, world.class_names, cfg, args.steps, progress=print)
    print(f"\nshortest side {cfg.min_size}, mask grid 1/{cfg.side_patch}, {args.scenes} "
          f"held-out scenes: resolution-bound mIoU {100 * res['miou']:.1f}\n")
    print("| class | IoU bound |\n|---|---:|")
    for name, v in res["iou"].items():
        print(f"| {name} | {'n/a' if v is None else f'{100 * v:.1f}'} |")
    return 0


if __name__ == "__main__":
    run_main(main)
