"""Tests for the Mask2Former-style set loss (povss_ros.san.losses)."""

import math

import pytest
import torch

from povss_ros.san.losses import (
    HungarianMatcher,
    SetCriterion,
    batch_dice_cost,
    batch_sigmoid_bce_cost,
    dice_loss,
    point_sample,
    sigmoid_bce_loss,
    uncertainty_point_coords,
)

NUM_POINTS = 256


def _sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _criterion(num_classes: int, **kw) -> SetCriterion:
    matcher = HungarianMatcher(num_points=NUM_POINTS)
    return SetCriterion(num_classes, matcher, num_points=NUM_POINTS, **kw)


def _stripe_targets(labels: list[int], size: int) -> dict:
    """Targets whose masks are disjoint horizontal stripes, one per label."""
    masks = torch.zeros(len(labels), size, size)
    band = size // len(labels)
    for t in range(len(labels)):
        masks[t, t * band : (t + 1) * band] = 1.0
    return {"labels": torch.tensor(labels, dtype=torch.int64), "masks": masks}


def _preds_for(perm: list[int], target: dict, num_queries: int, num_classes: int, res: int):
    """Query perm[t] predicts target t (mask and class); the others predict no-object."""
    logits = torch.full((num_queries, num_classes + 1), -5.0)
    logits[:, num_classes] = 5.0
    masks = torch.full((num_queries, res, res), -10.0)
    down = torch.nn.functional.interpolate(target["masks"][None], size=(res, res), mode="nearest")
    for t, q in enumerate(perm):
        logits[q] = -5.0
        logits[q, target["labels"][t]] = 5.0
        masks[q] = torch.where(down[0, t] > 0.5, 10.0, -10.0)
    return logits, masks


# ---------------------------------------------------------------- elementary losses


def test_dice_and_bce_match_hand_computation():
    x = torch.tensor([[0.0, math.log(3.0), -math.log(3.0), 2.0]])  # sigmoid: .5, .75, .25, s(2)
    y = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    p = [0.5, 0.75, 0.25, _sig(2.0)]
    inter = 0.5 + 0.75
    expected_dice = 1.0 - (2.0 * inter + 1.0) / (sum(p) + 2.0 + 1.0)
    assert dice_loss(x, y, 1.0).item() == pytest.approx(expected_dice, rel=1e-6)
    assert dice_loss(x, y, 2.0).item() == pytest.approx(expected_dice / 2.0, rel=1e-6)

    bce_terms = [-math.log(0.5), -math.log(0.75), -math.log(0.75), -math.log(1.0 - _sig(2.0))]
    expected_bce = sum(bce_terms) / 4.0
    assert sigmoid_bce_loss(x, y, 1.0).item() == pytest.approx(expected_bce, rel=1e-6)
    # summed over masks, divided by the normaliser
    x2, y2 = torch.cat([x, x]), torch.cat([y, y])
    assert sigmoid_bce_loss(x2, y2, 4.0).item() == pytest.approx(expected_bce / 2.0, rel=1e-6)


def test_pairwise_costs_agree_with_losses():
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 20, generator=g) * 3
    targets = (torch.rand(3, 20, generator=g) > 0.5).float()
    dice = batch_dice_cost(inputs, targets)
    bce = batch_sigmoid_bce_cost(inputs, targets)
    assert dice.shape == bce.shape == (5, 3)
    for q in range(5):
        for t in range(3):
            xi, yi = inputs[q : q + 1], targets[t : t + 1]
            assert dice[q, t].item() == pytest.approx(dice_loss(xi, yi, 1.0).item(), abs=1e-6)
            assert bce[q, t].item() == pytest.approx(sigmoid_bce_loss(xi, yi, 1.0).item(), abs=1e-5)


def test_point_sample_is_exact_at_pixel_centres():
    h, w = 3, 5
    inputs = torch.arange(2 * 2 * h * w, dtype=torch.float32).reshape(2, 2, h, w)
    ii, jj = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    coords = torch.stack([(jj.flatten() + 0.5) / w, (ii.flatten() + 0.5) / h], dim=-1)
    out = point_sample(inputs, coords[None].expand(2, -1, -1))
    assert out.shape == (2, 2, h * w)
    torch.testing.assert_close(out, inputs.flatten(2))
    # between two horizontal neighbours: the average
    mid = torch.tensor([[[1.0 / w, 0.5 / h]]])
    assert point_sample(inputs[:1, :1], mid).item() == pytest.approx(0.5 * (0.0 + 1.0))


def test_uncertainty_sampling_prefers_uncertain_region():
    size = 16
    logits = torch.full((2, 1, size, size), 10.0)
    logits[:, :, :, : size // 2] = 0.0  # left half is maximally uncertain
    logits[1, :, :, size // 2 :] = -10.0
    g = torch.Generator().manual_seed(0)
    pts = uncertainty_point_coords(logits, 40, oversample_ratio=5.0, importance_ratio=0.75,
                                   generator=g)
    assert pts.shape == (2, 40, 2)
    assert ((pts >= 0) & (pts <= 1)).all()
    k = int(0.75 * 40)
    # points with x < 7.5/16 read only zero columns; beyond that bilinear mixing makes |logit|>0
    assert (pts[:, :k, 0] <= 7.5 / size + 1e-6).all()
    # the random remainder is not restricted to the uncertain region
    assert (pts[:, k:, 0] > 0.5).any()

    only = uncertainty_point_coords(logits, 40, 5.0, 1.0, generator=g)
    assert (only[..., 0] <= 7.5 / size + 1e-6).all()


# ---------------------------------------------------------------- matcher


def test_matcher_recovers_known_permutation():
    num_classes, q = 4, 6
    t0, t1 = _stripe_targets([2, 0, 3], 24), _stripe_targets([1, 1], 24)
    perms = [[4, 0, 2], [3, 5]]
    l0, m0 = _preds_for(perms[0], t0, q, num_classes, res=12)
    l1, m1 = _preds_for(perms[1], t1, q, num_classes, res=12)
    matcher = HungarianMatcher(num_points=NUM_POINTS)
    out = matcher(torch.stack([l0, l1]), torch.stack([m0, m1]), [t0, t1],
                  generator=torch.Generator().manual_seed(0))
    assert len(out) == 2
    for (pred_idx, tgt_idx), perm in zip(out, perms):
        assert pred_idx.dtype == tgt_idx.dtype == torch.int64
        assert {int(t): int(p) for p, t in zip(pred_idx, tgt_idx)} == dict(enumerate(perm))


def test_matcher_uses_masks_when_classes_tie():
    # Same label for both targets: only the mask cost can tell them apart.
    num_classes, q = 3, 4
    tgt = _stripe_targets([1, 1], 16)
    perm = [2, 0]
    logits, masks = _preds_for(perm, tgt, q, num_classes, res=8)
    (pred_idx, tgt_idx), = HungarianMatcher(num_points=NUM_POINTS)(
        logits[None], masks[None], [tgt], generator=torch.Generator().manual_seed(1)
    )
    assert {int(t): int(p) for p, t in zip(pred_idx, tgt_idx)} == {0: 2, 1: 0}


def test_matcher_uses_class_when_masks_tie():
    # Identical masks on every query: only the class probability can decide.
    num_classes, q = 3, 4
    tgt = _stripe_targets([2, 0], 16)
    logits = torch.zeros(q, num_classes + 1)
    logits[1, 2] = 6.0
    logits[3, 0] = 6.0
    masks = torch.zeros(q, 8, 8)
    (pred_idx, tgt_idx), = HungarianMatcher(num_points=NUM_POINTS)(
        logits[None], masks[None], [tgt], generator=torch.Generator().manual_seed(2)
    )
    assert {int(t): int(p) for p, t in zip(pred_idx, tgt_idx)} == {0: 1, 1: 3}


def test_matcher_empty_targets():
    tgt = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 8, 8)}
    (p, t), = HungarianMatcher(num_points=NUM_POINTS)(torch.randn(1, 3, 4),
                                                      torch.randn(1, 3, 4, 4), [tgt])
    assert p.numel() == 0 and t.numel() == 0 and p.dtype == torch.int64


# ---------------------------------------------------------------- criterion


def test_ce_term_matches_hand_weighted_ce():
    num_classes, q = 2, 3
    tgt = _stripe_targets([1], 8)
    logits, masks = _preds_for([2], tgt, q, num_classes, res=8)
    # modest logits so CE is far from 0; the masks (+-10) make the matching unambiguous
    logits = torch.tensor([[0.3, -0.2, 0.1], [1.0, 0.5, -0.4], [0.2, 0.0, 0.7]])
    crit = _criterion(num_classes, eos_coef=0.1)
    out = crit(logits[None], masks[None], [tgt], generator=torch.Generator().manual_seed(0))

    labels = [2, 2, 1]  # queries 0, 1 unmatched (no-object = 2), query 2 matched to class 1
    weights = [0.1, 0.1, 1.0]
    num = den = 0.0
    for i, y in enumerate(labels):
        row = logits[i].tolist()
        log_z = math.log(sum(math.exp(v) for v in row))
        num += weights[i] * (log_z - row[y])
        den += weights[i]
    assert out["loss_ce"].item() == pytest.approx(2.0 * num / den, rel=1e-5)
    torch.testing.assert_close(crit.empty_weight, torch.tensor([1.0, 1.0, 0.1]))


def test_gradients_flow_and_total_is_sum():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, generator=g, requires_grad=True)
    masks = torch.randn(2, 5, 10, 10, generator=g, requires_grad=True)
    targets = [_stripe_targets([0, 2], 40), _stripe_targets([1], 40)]  # finer than the preds
    out = _criterion(3)(logits, masks, targets, generator=torch.Generator().manual_seed(3))
    assert set(out) == {"loss_ce", "loss_mask", "loss_dice", "loss_total"}
    for v in out.values():
        assert v.ndim == 0 and torch.isfinite(v)
        assert v.item() > 0
    parts = out["loss_ce"] + out["loss_mask"] + out["loss_dice"]
    assert out["loss_total"].item() == pytest.approx(parts.item(), rel=1e-6)
    out["loss_total"].backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert masks.grad is not None and masks.grad.abs().sum() > 0
    # only matched queries receive mask gradient
    matched_q = (masks.grad.abs().flatten(2).sum(-1) > 0).sum().item()
    assert matched_q == 3


def test_perfect_low_res_prediction_scores_low():
    tgt = _stripe_targets([0, 1], 64)
    logits, masks = _preds_for([1, 0], tgt, 3, 2, res=16)
    out = _criterion(2)(logits[None], masks[None], [tgt],
                        generator=torch.Generator().manual_seed(0))
    shifted = _criterion(2)(logits[None], masks[None].roll(4, dims=-2), [tgt],
                            generator=torch.Generator().manual_seed(0))
    # uncertainty points crowd the boundary, where bilinear logits are ~0, so not exactly 0
    assert out["loss_dice"].item() < 0.5
    assert shifted["loss_dice"].item() > 5 * out["loss_dice"].item()
    assert shifted["loss_mask"].item() > 5 * out["loss_mask"].item()


def test_no_targets_gives_only_no_object_ce():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 4, 3, generator=g, requires_grad=True)
    masks = torch.randn(1, 4, 6, 6, generator=g, requires_grad=True)
    tgt = {"labels": torch.zeros(0, dtype=torch.int64), "masks": torch.zeros(0, 12, 12)}
    out = _criterion(2)(logits, masks, [tgt])
    assert out["loss_mask"].item() == 0.0 and out["loss_dice"].item() == 0.0
    expected = 2.0 * (-torch.log_softmax(logits[0].detach(), -1)[:, 2]).mean().item()
    assert out["loss_ce"].item() == pytest.approx(expected, rel=1e-6)
    assert out["loss_total"].item() == pytest.approx(expected, rel=1e-6)
    out["loss_total"].backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def _random_batch():
    """Two images, 5 queries, 3 classes; 2 + 1 stripe targets."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 4, generator=g)
    masks = torch.randn(2, 5, 10, 10, generator=g)
    return logits, masks, [_stripe_targets([0, 2], 20), _stripe_targets([1], 20)]


def test_deterministic_with_generator():
    logits, masks, targets = _random_batch()
    crit = _criterion(3)
    torch.manual_seed(1)  # different global RNG states must not matter
    a = crit(logits, masks, targets, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    b = crit(logits, masks, targets, generator=torch.Generator().manual_seed(7))
    for key in a:
        assert a[key].item() == b[key].item()
    c = crit(logits, masks, targets, generator=torch.Generator().manual_seed(8))
    assert c["loss_mask"].item() != a["loss_mask"].item()


def test_caller_matched_pairs_give_the_same_losses():
    """Matching first (to reuse the pairs elsewhere) changes nothing; other pairs do."""
    logits, masks, targets = _random_batch()
    crit = _criterion(3)
    a = crit(logits, masks, targets, generator=torch.Generator().manual_seed(7))
    gen = torch.Generator().manual_seed(7)
    indices = crit.matcher(logits, masks, targets, generator=gen)
    b = crit(logits, masks, targets, generator=gen, indices=indices)
    for key in a:
        assert a[key].item() == b[key].item()
    swapped = [(src.flip(0), tgt) for src, tgt in indices]
    c = crit(logits, masks, targets, generator=torch.Generator().manual_seed(7), indices=swapped)
    assert c["loss_ce"].item() != a["loss_ce"].item()
