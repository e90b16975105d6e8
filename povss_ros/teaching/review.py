"""The review picture of a teach: every frame it looked at, what it used and why it rejected
the others, so an operator can check a teach by eye (the node latches it on
`~/teach_review`; `povss teach` can write it).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..vis import HIGHLIGHTS, legend_entries, legend_strip, outline, overlay, palette, titled
from ..vocabulary import UNLABELED
from .shot_masks import FrameNote, FrameView, Prompt, base_regions

TILE_HEIGHT = 240  # review tiles are scaled to this height (never up)
TILES_PER_ROW = 5
NOT_THIS_ONE = (255, 40, 40)  # a look-alike's outline and prompt

def review_picture(notes: Sequence[FrameNote], base: str) -> np.ndarray | None:
    """Every teach frame side by side (rows of `TILES_PER_ROW`), titled with what became of
    it: a used shot with its mask outlined; a look-alike marked "not this one" outlined in red;
    a rejected frame with the base class's regions
    numbered under a legend (score, size), the two strongest outlined, or, where the base
    class was not found, every region the open vocabulary sees. Prompts are drawn."""
    if not notes:
        return None
    tiles = [_tile(n, base) for n in notes]
    rows = [tiles[i : i + TILES_PER_ROW] for i in range(0, len(tiles), TILES_PER_ROW)]
    rows = [np.concatenate(_padded(row, axis=0), axis=1) for row in rows]
    return np.concatenate(_padded(rows, axis=1), axis=0)


def _padded(images: list[np.ndarray], axis: int) -> list[np.ndarray]:
    """Pad with the title bars' grey to a common size along `axis` (0: height, 1: width)."""
    size = max(i.shape[axis] for i in images)
    pad = [[(0, size - i.shape[0]), (0, 0), (0, 0)] if axis == 0 else
           [(0, 0), (0, size - i.shape[1]), (0, 0)] for i in images]
    return [np.pad(i, p, constant_values=32) for i, p in zip(images, pad)]


def _tile(note: FrameNote, base: str) -> np.ndarray:
    h, w = note.rgb.shape[:2]
    scale = min(1.0, TILE_HEIGHT / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))

    def small(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0

    img = cv2.resize(note.rgb, size, interpolation=cv2.INTER_AREA)
    strip = None
    if note.mask is not None:
        mask = np.asarray(note.mask)
        mask = mask[..., 0] if mask.ndim == 3 else mask
        if mask.shape == (h, w):
            outline(img, small(mask != 0), HIGHLIGHTS[0])
        title = f"{note.label}: used, {note.how}"
    else:
        if note.view is not None:
            img, strip = _candidates(img, note.view, base, small)
        title = f"{note.label}: {note.how}"
    if note.negative is not None:
        outline(img, small(note.negative), NOT_THIS_ONE)
        title += "; not this one marked"
    for prompt, colour in ((note.prompt, HIGHLIGHTS[1]), (note.negative_prompt, NOT_THIS_ONE)):
        if prompt is not None:
            _draw_prompt(img, prompt, scale, colour)
    tile = titled(img, title)
    return tile if strip is None else np.concatenate([tile, strip])


def _draw_prompt(img: np.ndarray, prompt: Prompt, scale: float,
                 colour: tuple[int, int, int]) -> None:
    xy = [round(v * scale) for v in prompt.xy]
    if prompt.kind == "box":
        cv2.rectangle(img, (xy[0], xy[1]), (xy[2] - 1, xy[3] - 1), colour, 1)
    else:
        cv2.drawMarker(img, (xy[0], xy[1]), colour, cv2.MARKER_CROSS, 12, 2)


def _candidates(img: np.ndarray, view: FrameView, base: str, small) -> tuple:  # noqa: ANN001
    """The frame overlaid with the base class's regions, numbered, the strongest two outlined
    (with none: the whole label map), and their legend as a strip to go below."""
    regions = base_regions(view, base)
    seg = view.segmentation
    if regions:
        labels = np.full(img.shape[:2], UNLABELED, np.uint16)
        for i, region in reversed(list(enumerate(regions))):
            labels[small(region.mask)] = i
        names = [f"{i + 1}: {base} {r.score:.2f} x {r.area} px" for i, r in enumerate(regions)]
        highlight = list(range(min(2, len(regions))))
    else:
        labels = cv2.resize(seg.labels, img.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        names, highlight = seg.class_names, []
    out = overlay(img, labels, names, highlight, legend=False)
    for i in range(len(regions)):
        ys, xs = np.nonzero(labels == i)
        if len(xs):
            cv2.putText(out, str(i + 1), (int(xs.mean()) - 4, int(ys.mean()) + 5),
                        cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    entries = legend_entries(labels, names, palette(names, highlight))
    return out, legend_strip(entries, out.shape[1])
