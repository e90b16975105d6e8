"""Tests of the dense training terms of the synthetic world's SAN (povss_lab.training.losses)."""

import math

import pytest
import torch

from povss_lab.training.losses import (
    class_balance_weights,
    patch_text_loss,
    semantic_inference_loss,
)

# ---------------------------------------------------------------- dense training terms


def test_semantic_inference_loss_matches_a_hand_computation():
    """Two queries, two classes + void, a 1x3 grid whose last pixel is padding."""
    # Query 0 is sure of class 0, query 1 splits 1/4 class 0, 1/2 class 1, 1/4 void.
    probs = torch.tensor([[[1.0, 0.0, 0.0], [0.25, 0.5, 0.25]]])
    logits = torch.log(probs.clamp_min(1e-30))
    masks = torch.tensor([[[[0.8, 0.2, 0.5]], [[0.2, 0.6, 0.5]]]])  # sigmoid outputs
    mask_logits = torch.log(masks / (1 - masks))
    labels = torch.tensor([[[0, 1, 255]]])
    loss = semantic_inference_loss(logits, mask_logits, labels, ignore_index=255)
    # pixel 0: scores (0.8 + 0.05, 0.1) -> p(0) = 0.85 / 0.95
    # pixel 1: scores (0.2 + 0.15, 0.3) -> p(1) = 0.30 / 0.65
    expected = -(math.log(0.85 / 0.95) + math.log(0.30 / 0.65)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_semantic_inference_loss_trains_both_classes_and_masks():
    logits = torch.zeros(1, 3, 4, requires_grad=True)
    mask_logits = torch.zeros(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 1], [2, 255]]])
    semantic_inference_loss(logits, mask_logits, labels, ignore_index=255).backward()
    assert logits.grad.abs().sum() > 0 and mask_logits.grad.abs().sum() > 0
    assert mask_logits.grad[..., 1, 1].abs().sum() == 0  # the padding pixel gives nothing


def test_patch_text_loss_is_cross_entropy_over_cosines():
    rows = torch.eye(3, 4)  # three orthonormal class rows in 4-d
    dense = torch.zeros(1, 4, 1, 2)
    dense[0, :, 0, 0] = rows[2]  # on class 2's row
    dense[0, :, 0, 1] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # orthogonal to every row
    labels = torch.tensor([[[2, 0]]])
    scale = torch.tensor(10.0)
    loss = patch_text_loss(dense, rows, scale, labels, ignore_index=255)
    on_row = -math.log(math.exp(10) / (math.exp(10) + 2))
    orthogonal = math.log(3)
    assert loss.item() == pytest.approx((on_row + orthogonal) / 2, rel=1e-5)
    labels[0, 0, 1] = 255  # padding is skipped
    only_row = patch_text_loss(dense, rows, scale, labels, ignore_index=255)
    assert only_row.item() == pytest.approx(on_row, abs=1e-6)


def test_class_balance_weights_count_only_present_unpadded_labels():
    labels = torch.tensor([[[0, 0, 0, 2], [2, 255, 255, 255]]])
    assert class_balance_weights(labels, 4, 255, 0.0) is None
    w = class_balance_weights(labels, 4, 255, 1.0)
    assert w.tolist() == pytest.approx([1 / 3, 0.0, 1 / 2, 0.0])
    assert class_balance_weights(labels, 4, 255, 0.5).tolist() == pytest.approx(
        [3 ** -0.5, 0.0, 2 ** -0.5, 0.0])


def test_full_class_balance_averages_the_per_class_means():
    """Power 1: a class of one pixel counts as much as a class of three."""
    rows = torch.eye(3, 4)
    dense = torch.zeros(1, 4, 1, 4)
    for j in range(3):
        dense[0, :, 0, j] = rows[0]  # three patches on class 0's row...
    dense[0, :, 0, 3] = torch.tensor([0.0, 0.0, 0.0, 1.0])  # ...one orthogonal to all rows
    labels = torch.tensor([[[0, 0, 0, 1]]])
    scale = torch.tensor(10.0)
    on_row = -math.log(math.exp(10) / (math.exp(10) + 2))
    orthogonal = math.log(3)
    plain = patch_text_loss(dense, rows, scale, labels, ignore_index=255)
    assert plain.item() == pytest.approx((3 * on_row + orthogonal) / 4, rel=1e-5)
    balanced = patch_text_loss(dense, rows, scale, labels, ignore_index=255, class_balance=1.0)
    assert balanced.item() == pytest.approx((on_row + orthogonal) / 2, rel=1e-5)
    # The semantic-inference term takes the same weights: one query per class, sure masks.
    logits = torch.log(torch.tensor([[[0.9, 0.05, 0.05], [0.2, 0.7, 0.1]]]))
    mask_logits = torch.full((1, 2, 1, 4), -20.0)
    mask_logits[0, 0, 0, :3] = 20.0
    mask_logits[0, 1, 0, 3] = 20.0
    per_pixel = -torch.log(torch.tensor([0.9 / 0.95, 0.9 / 0.95, 0.9 / 0.95, 0.7 / 0.9]))
    loss = semantic_inference_loss(logits, mask_logits, labels, 255, class_balance=1.0)
    assert loss.item() == pytest.approx(float(per_pixel[:3].mean() + per_pixel[3]) / 2, rel=1e-4)
