"""Mask2Former-style set loss used to train SAN and, with one target per shot, personalization.

Predictions are matched one-to-one to targets (Hungarian matching), then scored with a class
cross-entropy over every query plus mask BCE and dice on the matched pairs. Masks are compared on
sampled points rather than full grids so that low-resolution predictions (e.g. 40x40) can be
scored against full-resolution targets (e.g. 640x640) without materialising upsampled masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

__all__ = [
    "HungarianMatcher",
    "SetCriterion",
    "batch_dice_cost",
    "batch_sigmoid_bce_cost",
    "dice_loss",
    "point_sample",
    "sigmoid_bce_loss",
    "uncertainty_point_coords",
]


def point_sample(inputs: Tensor, coords: Tensor) -> Tensor:
    """Bilinearly read maps at normalised points, so any resolution can be compared on one set.

    ``inputs`` is [B, C, H, W]; ``coords`` is [B, P, 2] in [0, 1] as (x, y), with (0, 0) the
    top-left image corner (pixel centres sit at (j + 0.5) / W, (i + 0.5) / H). Returns [B, C, P].
    """
    grid = (2.0 * coords - 1.0).unsqueeze(2).to(inputs.dtype)  # [B, P, 1, 2]
    out = F.grid_sample(inputs, grid, mode="bilinear", align_corners=False)
    return out.squeeze(3)


def _rand(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """Uniform [0, 1) noise drawn on the generator's device so a CPU generator works with CUDA."""
    device = generator.device if generator is not None else like.device
    return torch.rand(shape, generator=generator, device=device).to(like.device, like.dtype)


@torch.no_grad()
def uncertainty_point_coords(
    logits: Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_ratio: float = 0.75,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Pick points near the decision boundary, where mask losses carry the most signal.

    ``logits`` is [R, 1, H, W]. The first ``int(importance_ratio * num_points)`` points are the
    most uncertain (largest -|logit|) of ``int(num_points * oversample_ratio)`` uniform candidates;
    the rest are fresh uniform points, which keep the whole mask supervised. Returns [R, P, 2].
    """
    num_masks = logits.shape[0]
    num_sampled = max(int(num_points * oversample_ratio), num_points)
    candidates = _rand((num_masks, num_sampled, 2), logits, generator)
    uncertainty = -point_sample(logits, candidates).abs().squeeze(1)  # [R, S]
    num_uncertain = int(importance_ratio * num_points)
    num_random = num_points - num_uncertain
    idx = torch.topk(uncertainty, k=num_uncertain, dim=1).indices  # [R, k]
    picked = torch.gather(candidates, 1, idx.unsqueeze(-1).expand(-1, -1, 2))
    if num_random > 0:
        picked = torch.cat([picked, _rand((num_masks, num_random, 2), logits, generator)], dim=1)
    return picked


def dice_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Overlap loss that is insensitive to mask size, complementing the per-point BCE.

    ``inputs`` are logits [N, P], ``targets`` in [0, 1] [N, P]; +1 smoothing keeps empty masks
    finite. Summed over masks and divided by ``num_masks``.
    """
    probs = inputs.sigmoid()
    numerator = 2.0 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    loss = 1.0 - (numerator + 1.0) / (denominator + 1.0)
    return loss.sum() / num_masks


def sigmoid_bce_loss(inputs: Tensor, targets: Tensor, num_masks: float) -> Tensor:
    """Per-point BCE, averaged over points so the point count does not change the scale."""
    loss = F.binary_cross_entropy_with_logits(inputs, targets, reduction="none")
    return loss.mean(1).sum() / num_masks


def batch_dice_cost(inputs: Tensor, targets: Tensor) -> Tensor:
    """Dice loss of every prediction [Q, P] against every target [T, P] at once: cost [Q, T]."""
    probs = inputs.sigmoid()
    numerator = 2.0 * probs @ targets.t()
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1.0 - (numerator + 1.0) / (denominator + 1.0)


def batch_sigmoid_bce_cost(inputs: Tensor, targets: Tensor) -> Tensor:
    """Mean-over-points BCE of every prediction [Q, P] against every target [T, P]: cost [Q, T].

    BCE is linear in the target, so the pairwise table is two matrix products, not a Q*T loop.
    """
    num_points = inputs.shape[1]
    pos = F.binary_cross_entropy_with_logits(inputs, torch.ones_like(inputs), reduction="none")
    neg = F.binary_cross_entropy_with_logits(inputs, torch.zeros_like(inputs), reduction="none")
    return (pos @ targets.t() + neg @ (1.0 - targets).t()) / num_points


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to targets, so each target trains exactly one query."""

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
    ) -> None:
        super().__init__()
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        targets: list[dict[str, Tensor]],
        generator: torch.Generator | None = None,
    ) -> list[tuple[Tensor, Tensor]]:
        """Return per image (pred_idx, tgt_idx) int64 tensors of equal length min(Q, T).

        ``pred_logits`` [B, Q, C+1], ``pred_masks`` [B, Q, h, w]; each target holds ``labels``
        [T] and ``masks`` [T, H, W]. Mask costs use the same uniform points for preds and targets.
        """
        indices: list[tuple[Tensor, Tensor]] = []
        for b, target in enumerate(targets):
            labels = target["labels"].to(pred_logits.device)
            num_targets = labels.numel()
            if num_targets == 0:
                empty = torch.empty(0, dtype=torch.int64)
                indices.append((empty, empty.clone()))
                continue
            probs = pred_logits[b].float().softmax(-1)  # [Q, C+1]
            cost_class = -probs[:, labels]  # [Q, T]

            out_mask = pred_masks[b].float()[:, None]  # [Q, 1, h, w]
            tgt_mask = target["masks"].to(out_mask)[:, None]  # [T, 1, H, W]
            coords = _rand((1, self.num_points, 2), out_mask, generator)
            out_pts = point_sample(out_mask, coords.expand(out_mask.shape[0], -1, -1)).squeeze(1)
            tgt_pts = point_sample(tgt_mask, coords.expand(num_targets, -1, -1)).squeeze(1)
            cost_mask = batch_sigmoid_bce_cost(out_pts, tgt_pts)
            cost_dice = batch_dice_cost(out_pts, tgt_pts)

            cost = (
                self.cost_mask * cost_mask
                + self.cost_class * cost_class
                + self.cost_dice * cost_dice
            )
            rows, cols = linear_sum_assignment(cost.cpu().numpy())
            indices.append(
                (torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64))
            )
        return indices


class SetCriterion(nn.Module):
    """Class CE on all queries plus point-sampled mask BCE/dice on matched pairs."""

    empty_weight: Tensor

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        eos_coef: float = 0.1,
        weight_ce: float = 2.0,
        weight_mask: float = 5.0,
        weight_dice: float = 5.0,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.eos_coef = eos_coef
        self.weight_ce = weight_ce
        self.weight_mask = weight_mask
        self.weight_dice = weight_dice
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_ratio = importance_ratio
        # Down-weight "no object": most queries are unmatched and would otherwise dominate CE.
        empty_weight = torch.ones(num_classes + 1)
        empty_weight[-1] = eos_coef
        self.register_buffer("empty_weight", empty_weight)

    def forward(
        self,
        pred_logits: Tensor,
        pred_masks: Tensor,
        targets: list[dict[str, Tensor]],
        generator: torch.Generator | None = None,
        indices: list[tuple[Tensor, Tensor]] | None = None,
    ) -> dict[str, Tensor]:
        """Return weighted ``loss_ce``, ``loss_mask``, ``loss_dice`` and their sum ``loss_total``.

        ``generator`` drives both the matcher's and the loss's point sampling, for reproducibility.
        ``indices``: the matcher's (query, target) pairs when the caller already has them (to
        put another loss on the same matched queries); matched here otherwise.
        """
        if indices is None:
            indices = self.matcher(pred_logits, pred_masks, targets, generator=generator)
        num_masks = max(float(sum(int(t["labels"].numel()) for t in targets)), 1.0)

        batch_idx = torch.cat([torch.full_like(src, b) for b, (src, _) in enumerate(indices)])
        src_idx = torch.cat([src for src, _ in indices])
        batch_idx, src_idx = batch_idx.to(pred_logits.device), src_idx.to(pred_logits.device)

        # Classification: unmatched queries must predict "no object" (index num_classes).
        target_classes = torch.full(
            pred_logits.shape[:2], self.num_classes, dtype=torch.int64, device=pred_logits.device
        )
        matched_labels = [
            t["labels"].to(pred_logits.device)[tgt] for t, (_, tgt) in zip(targets, indices)
        ]
        target_classes[batch_idx, src_idx] = torch.cat(matched_labels).to(torch.int64)
        loss_ce = F.cross_entropy(
            pred_logits.float().transpose(1, 2),
            target_classes,
            weight=self.empty_weight.to(pred_logits.device, torch.float32),
        )

        # Masks: only matched pairs, on points concentrated where the prediction is uncertain.
        if src_idx.numel() == 0:
            zero = pred_masks.sum() * 0.0  # keeps the graph so backward() still works
            loss_mask, loss_dice = zero, zero.clone()
        else:
            src_masks = pred_masks[batch_idx, src_idx].float()[:, None]  # [N, 1, h, w]
            tgt_masks = torch.cat(
                [t["masks"].to(src_masks)[tgt] for t, (_, tgt) in zip(targets, indices)]
            )[:, None]  # [N, 1, H, W]
            coords = uncertainty_point_coords(
                src_masks.detach(),
                self.num_points,
                self.oversample_ratio,
                self.importance_ratio,
                generator=generator,
            )
            with torch.no_grad():
                point_labels = point_sample(tgt_masks, coords).squeeze(1)
            point_logits = point_sample(src_masks, coords).squeeze(1)
            loss_mask = sigmoid_bce_loss(point_logits, point_labels, num_masks)
            loss_dice = dice_loss(point_logits, point_labels, num_masks)

        losses = {
            "loss_ce": self.weight_ce * loss_ce,
            "loss_mask": self.weight_mask * loss_mask,
            "loss_dice": self.weight_dice * loss_dice,
        }
        losses["loss_total"] = losses["loss_ce"] + losses["loss_mask"] + losses["loss_dice"]
        return losses
