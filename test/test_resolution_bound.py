"""The resolution bound: what SAN's mask grid can draw, fitted to ground truth directly."""

import numpy as np
import torch

from povss_lab.training.recipe import SYN_SMALL
from povss_lab.training.resolution_bound import best_grid_labels, grid_upsamplers


def _iou(pred: np.ndarray, truth: np.ndarray, cls: int) -> float:
    a, b = pred == cls, truth == cls
    return float((a & b).sum() / (a | b).sum())


def test_upsamplers_follow_sans_resize_pad_and_grid():
    rows, cols, grid = grid_upsamplers((240, 320), SYN_SMALL)
    # 240x320 -> 160x213, padded to 160x224, 8 px patches -> a 20x28 grid.
    assert grid == (20, 28)
    assert rows.shape == (240, 20) and cols.shape == (320, 28)
    torch.testing.assert_close(rows.sum(1), torch.ones(240))  # every pixel a convex mix
    torch.testing.assert_close(cols.sum(1), torch.ones(320))
    # The last grid column covers padding, and only the image's last pixels see it (as in SAN).
    assert cols[:316, 27].abs().max() < 1e-6 and cols[-1, 27] > 0


def test_blocks_the_grid_can_draw_are_recovered_and_a_thin_line_is_not():
    labels = np.zeros((120, 160), dtype=np.uint16)
    labels[:, 80:] = 1  # a half-plane: any grid can draw it
    labels[30:90, 20:60] = 2  # a large block
    labels[:, 131] = 3  # a line 1 px wide, between grid centres (1 cell = 6 px here)
    pred = best_grid_labels(labels, 4, SYN_SMALL, steps=150)
    assert pred.shape == labels.shape and pred.dtype == np.uint16
    assert _iou(pred, labels, 0) > 0.95 and _iou(pred, labels, 2) > 0.9
    assert _iou(pred, labels, 3) < 0.6
