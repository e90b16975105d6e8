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


def palette(class_names: Sequence[str], highlight: Sequence[int] = ()) -> np.ndarray:
    """Colours of every class id: stable class colours, bright ones for `highlight` ids
    (personal concepts, in the order given, cycling after five)."""
    colors = class_colors(len(class_names))
    for i, cid in enumerate(highlight):
        colors[cid] = HIGHLIGHTS[i % len(HIGHLIGHTS)]
    return colors


def outline(image: np.ndarray, mask: np.ndarray, color: Sequence[int]) -> np.ndarray:
    """Draw the outline of `mask` on `image` in place: a bright line over a dark rim, visible
    on light and dark scenes alike."""
    thickness = max(1, min(image.shape[:2]) // 150)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, (0, 0, 0), thickness + 2)
    cv2.drawContours(image, contours, -1, tuple(int(c) for c in color), thickness)
    return image


def legend_entries(
    labels: np.ndarray, class_names: Sequence[str], colors: np.ndarray, most: int = 12
) -> list[tuple[str, np.ndarray]]:
    """(name, colour) of the classes present, the most pixels first, at most `most`."""
    ids, counts = np.unique(labels[labels < len(class_names)], return_counts=True)
    return [(class_names[i], colors[i]) for i in ids[np.argsort(-counts)][:most]]


def overlay(
    image_rgb: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    highlight: Sequence[int] = (),
    alpha: float = 0.5,
    max_legend: int = 12,
    legend: bool = True,
) -> np.ndarray:
    """RGB image with the label colours blended in, outlines of highlighted classes, and (if
    `legend`) a legend in the top-left corner, the classes with the most pixels first.

    `highlight` ids (personal concepts) are filled and outlined in bright colours of their
    own (`palette`) so they stand out among their base class and from each other.
    """
    if image_rgb.shape[:2] != labels.shape:
        raise ValueError(f"image {image_rgb.shape[:2]} and labels {labels.shape} differ in size")
    colors = palette(class_names, highlight)
    blended = image_rgb.astype(np.float32) * (1 - alpha) + colorize(labels, colors) * alpha
    out = blended.clip(0, 255).astype(np.uint8)
    for cid in highlight:
        outline(out, labels == cid, colors[cid])
    if not legend:
        return out
    return _draw_legend(out, legend_entries(labels, class_names, colors, max_legend))


def legend_strip(entries: Sequence[tuple[str, np.ndarray]], width: int) -> np.ndarray:
    """A legend as its own RGB image `width` pixels wide (entries in rows, left to right), to
    sit beside a picture instead of covering part of it."""
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.45
    line, gap = 20, 14
    sizes = [cv2.getTextSize(n, font, scale, 1)[0][0] + line + gap for n, _ in entries]
    rows, x = [[]], 4
    for entry, size in zip(entries, sizes):
        if x + size > width and rows[-1]:
            rows.append([])
            x = 4
        rows[-1].append((entry, x))
        x += size
    strip = np.full((len(rows) * line + 8, width, 3), 32, np.uint8)
    for r, row in enumerate(rows):
        y = 4 + r * line
        for (name, color), x0 in row:
            cv2.rectangle(strip, (x0, y + 3), (x0 + line - 6, y + line - 3), color.tolist(), -1)
            cv2.putText(strip, name, (x0 + line, y + line - 6), font, scale, (255, 255, 255), 1,
                        cv2.LINE_AA)
    return strip


def titled(image: np.ndarray, title: str) -> np.ndarray:
    """`image` under a dark bar holding `title` (the text shrinks to fit the width)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    width = cv2.getTextSize(title, font, 0.5, 1)[0][0]
    scale = min(0.5, 0.5 * (image.shape[1] - 12) / max(width, 1))
    bar = np.full((22, image.shape[1], 3), 32, np.uint8)
    cv2.putText(bar, title, (6, 16), font, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([bar, image], axis=0)


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
