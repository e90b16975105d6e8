"""Pictures of label maps: stable class colours, blended overlays and a legend."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

# Personal concepts, in order: saturated colours that class colours (saturation 200 of 255)
# and scenes rarely reach. Yellow first; magenta was dropped: it vanished on pink tables.
HIGHLIGHTS = ((255, 230, 0), (0, 225, 255), (140, 255, 40), (255, 120, 0), (255, 255, 255))
HIGHLIGHT = HIGHLIGHTS[0]


def class_colors(num_classes: int, seed: int = 7) -> np.ndarray:
    """[num_classes, 3] uint8 RGB colours, the same for a class id on every run."""
    rng = np.random.default_rng(seed)
    hues = (np.arange(num_classes) * 0.618033988749895 + rng.random()) % 1.0
    hsv = np.stack(
        [hues * 179, np.full(num_classes, 200), 140 + (np.arange(num_classes) % 3) * 45], axis=1
    ).astype(np.uint8)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """uint16 label map -> RGB image; unlabeled pixels are black."""
    out = np.zeros((*labels.shape, 3), np.uint8)
    valid = labels < len(colors)
    out[valid] = colors[labels[valid]]
    return out


def overlay(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    highlight: Sequence[int] = (),
    alpha: float = 0.5,
    max_legend: int = 12,
) -> np.ndarray:
    """RGB image with the label colours blended in, outlines of highlighted classes, a legend.

    `highlight` ids (personal concepts) are filled and outlined in bright colours of their
    own (`HIGHLIGHTS`, in the order given, cycling after five) so they stand out among their
    base class and from each other. The legend lists the classes with the most pixels first.
    """
    if image_rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {image_rgb.shape[:2]} and labels {labels.shape} differ in size")
    colors = class_colors(len(class_names))
    for i, cid in enumerate(highlight):
        colors[cid] = HIGHLIGHTS[i % len(HIGHLIGHTS)]
    blended = image_rgb.astype(np.float32) * (1 - alpha) + colorize(labels, colors) * alpha
    out = blended.clip(0, 255).astype(np.uint8)
    thickness = max(1, min(out.shape[:2]) // 150)
    for cid in highlight:
        mask = (labels == cid).astype(np.uint8)
        contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        # a dark rim under the bright line keeps it visible on light and dark scenes alike
        cv2.drawContours(out, contours, -1, (0, 0, 0), thickness + 2)
        cv2.drawContours(out, contours, -1, colors[cid].tolist(), thickness)
    ids, counts = np.unique(labels[labels < len(class_names)], return_counts=True)
    order = ids[np.argsort(-counts)][:max_legend]
    return _draw_legend(out, [(class_names[i], colors[i]) for i in order])


def _draw_legend(image: np.ndarray, entries: list[tuple[str, np.ndarray]]) -> np.ndarray:
    if not entries:
        return image
    scale = max(0.35, min(image.shape[:2]) / 900)
    line = int(22 * scale / 0.5)
    width = max(cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for n, _ in entries)
    box_w, box_h = width + line + 12, line * len(entries) + 8
    x0, y0 = 4, 4
    box_w, box_h = min(box_w, image.shape[1] - x0), min(box_h, image.shape[0] - y0)
    region = image[y0 : y0 + box_h, x0 : x0 + box_w]
    region[:] = (region * 0.35).astype(np.uint8)
    for i, (name, color) in enumerate(entries):
        y = y0 + 4 + i * line
        cv2.rectangle(image, (x0 + 4, y + 2), (x0 + line - 2, y + line - 4), color.tolist(), -1)
        cv2.putText(
            image,
            name,
            (x0 + line + 4, y + line - 6),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            1,
            cv2.LINE_AA,
        )
    return image
