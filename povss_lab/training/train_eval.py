"""How well the small SAN segments its world: mIoU, a sample grid and the loss curve.

Predictions go through SAN's own inference (`class_logits` + `semantic_argmax` at the image's
original size), the same arithmetic `Segmenter.segment` runs, so the number measured here is
the number a user of the shipped weights gets.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from povss_lab.eval.metrics import ConfusionMatrix
from povss_lab.synthetic.world import Scene, World, sample_scene
from povss_ros.san.model import SAN
from povss_ros.san.semantic import semantic_argmax
from povss_ros.vis import class_colors, colorize


def held_out_scenes(world: World, n: int, seed: int) -> list[Scene]:
    """n fixed evaluation scenes: a scene stream of their own seed, never the training one."""
    rng = np.random.default_rng([seed, 202])
    return [sample_scene(rng, world) for _ in range(n)]


@torch.no_grad()
def predict(
    model: SAN, text_rows: torch.Tensor, images: Sequence[np.ndarray], batch: int = 8
) -> list[np.ndarray]:
    """uint16 label maps at each image's size, by SAN's semantic inference."""
    rows = model.class_rows(text_rows)
    out: list[np.ndarray] = []
    for start in range(0, len(images), batch):
        chunk = list(images[start : start + batch])
        pixels, geometry = model.preprocess(chunk)
        feats = model.encode(pixels, geometry)
        logits = model.class_logits(feats.mask_embeddings, rows)
        for i in range(len(chunk)):
            _, label = semantic_argmax(logits[i], feats.mask_logits[i], geometry, i)
            out.append(label.to(torch.int32).cpu().numpy().astype(np.uint16))
    return out


def evaluate(
    model: SAN, text_rows: torch.Tensor, class_names: Sequence[str], scenes: Sequence[Scene]
) -> dict:
    """Dataset-level mIoU, per-class IoU and pixel accuracy over `scenes`."""
    was_training = model.training
    model.eval()
    cm = ConfusionMatrix(len(class_names))
    preds = predict(model, text_rows, [s.image for s in scenes])
    for scene, pred in zip(scenes, preds):
        cm.update(pred, scene.semantic)
    model.train(was_training)
    return {
        "miou": cm.miou(),
        "pixel_accuracy": float(np.trace(cm.matrix) / max(cm.total, 1)),
        "iou": class_iou(cm, class_names),
        "scenes": len(scenes),
    }


def class_iou(cm: ConfusionMatrix, class_names: Sequence[str]) -> dict[str, float | None]:
    """Per-class IoU by name, JSON-ready: None for a class absent from truth and prediction."""
    return {c: (None if math.isnan(v) else float(v)) for c, v in zip(class_names, cm.iou())}


def save_sample_grid(
    model: SAN,
    text_rows: torch.Tensor,
    class_names: Sequence[str],
    scenes: Sequence[Scene],
    path: str | os.PathLike,
) -> None:
    """Rows of image | ground truth | prediction, with a colour legend, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = class_colors(len(class_names))
    preds = predict(model, text_rows, [s.image for s in scenes])
    height = 2.5 * len(scenes) + 0.5  # the last half inch holds the legend
    fig, axes = plt.subplots(len(scenes), 3, figsize=(9.6, height), squeeze=False)
    for row, (scene, pred) in enumerate(zip(scenes, preds)):
        iou = _image_miou(pred, scene.semantic, len(class_names))
        panels = (scene.image, colorize(scene.semantic, colors), colorize(pred, colors))
        titles = ("image", "ground truth", f"prediction (image mIoU {100 * iou:.0f})")
        for ax, img, title in zip(axes[row], panels, titles):
            ax.imshow(img)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    handles = [Patch(color=colors[i] / 255.0, label=n) for i, n in enumerate(class_names)]
    fig.legend(handles=handles, loc="lower center", ncol=9, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.5 / height, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _image_miou(pred: np.ndarray, gt: np.ndarray, num_classes: int) -> float:
    cm = ConfusionMatrix(num_classes)
    cm.update(pred, gt)
    return cm.miou()


def save_loss_curve(
    history: dict[str, list[float]], path: str | os.PathLike, identities: int = 112
) -> None:
    """Per-step losses (faint) and their running mean over 50 steps, log-scaled; every term
    in `history`, with the chance level of the identity terms (`identities` classes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    colors = {"total": "k", "ce": "C0", "mask": "C1", "dice": "C2", "sem": "C3", "patch": "C4",
              "identity": "C5", "qidentity": "C6"}
    for i, key in enumerate(history):
        color = colors.get(key, f"C{7 + i % 3}")
        values = np.asarray(history[key], dtype=np.float64)
        if values.size == 0:
            continue
        steps = np.arange(1, values.size + 1)
        ax.plot(steps, values, color=color, alpha=0.2, lw=0.6)
        k = min(50, values.size)
        smooth = np.convolve(values, np.ones(k) / k, mode="valid")
        ax.plot(steps[k - 1 :], smooth, color=color, lw=1.5, label=f"loss_{key}")
    if "identity" in history or "qidentity" in history:
        ax.axhline(math.log(identities), color="0.5", ls=":", lw=1,
                   label=f"identity at chance (ln {identities})")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("weighted loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
