"""SAN's set loss for one target against FROZEN open masks, with the frozen part computed once.

During teaching the open mask logits never change, so of `SetCriterion`'s work only the class
terms (matching's class cost and the cross-entropy) depend on trainable parameters. Points are
drawn once per shot from a seeded generator, the same draws `SetCriterion` makes when called
with ``generator=torch.Generator().manual_seed(seed)``; with those points fixed, the matcher's
mask/dice costs and the matched pair's mask/dice losses are constants per (shot, query) and are
cached. The result equals `SetCriterion(...)` called with that freshly seeded generator
(tested), at a fraction of the cost (the 100 x 12544 point costs are paid once per shot).

Why fixed points per shot rather than fresh points each iteration: with frozen masks the mask
terms carry no gradient; fresh draws would only add noise to which query gets matched.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..san.losses import (
    SetCriterion,
    batch_dice_cost,
    batch_sigmoid_bce_cost,
    dice_loss,
    point_sample,
    sigmoid_bce_loss,
    uncertainty_point_coords,
)


def shot_generator(seed: int) -> torch.Generator:
    """The generator `SetCriterion` gets for a shot: same seed, same points, every iteration."""
    return torch.Generator().manual_seed(seed)


class FrozenMaskSetLoss:
    """`SetCriterion` with one target (class `label`, mask `target`) and frozen masks `masks`."""

    def __init__(
        self, criterion: SetCriterion, masks: Tensor, target: Tensor, label: int, seed: int
    ) -> None:
        matcher = criterion.matcher
        self.criterion = criterion
        self.label = label
        self.masks = masks[0].float()[:, None]  # [Q, 1, h, w]
        self.target = target.float()[None, None]  # [1, 1, H, W]
        gen = shot_generator(seed)
        # The matcher's uniform points (first draw on the generator).
        coords = torch.rand((1, matcher.num_points, 2), generator=gen, device=gen.device)
        coords = coords.to(self.masks.device)
        q = self.masks.shape[0]
        out_pts = point_sample(self.masks, coords.expand(q, -1, -1)).squeeze(1)
        tgt_pts = point_sample(self.target, coords).squeeze(1)
        self.cost_bce = batch_sigmoid_bce_cost(out_pts, tgt_pts)  # [Q, 1]
        self.cost_dice = batch_dice_cost(out_pts, tgt_pts)
        self._after_matcher = gen.get_state()
        self._pairs: dict[int, tuple[Tensor, Tensor]] = {}

    def _pair_losses(self, query: int) -> tuple[Tensor, Tensor]:
        """Weighted mask BCE and dice of the matched pair: constants, computed once per query."""
        if query not in self._pairs:
            c = self.criterion
            gen = torch.Generator()
            gen.set_state(self._after_matcher)
            src = self.masks[query : query + 1]
            coords = uncertainty_point_coords(
                src, c.num_points, c.oversample_ratio, c.importance_ratio, generator=gen
            )
            labels = point_sample(self.target, coords).squeeze(1)
            logits = point_sample(src, coords).squeeze(1)
            self._pairs[query] = (
                c.weight_mask * sigmoid_bce_loss(logits, labels, 1.0),
                c.weight_dice * dice_loss(logits, labels, 1.0),
            )
        return self._pairs[query]

    def __call__(self, pred_logits: Tensor) -> dict[str, Tensor]:
        """``pred_logits`` [1, Q, C+1] for the Q frozen masks -> SetCriterion's loss dict."""
        c, matcher = self.criterion, self.criterion.matcher
        with torch.no_grad():
            probs = pred_logits[0].float().softmax(-1)
            cost_class = -probs[:, [self.label]]
            cost = (
                matcher.cost_mask * self.cost_bce
                + matcher.cost_class * cost_class
                + matcher.cost_dice * self.cost_dice
            )
            rows, _ = linear_sum_assignment(cost.cpu().numpy())
        query = int(rows[0])
        target_classes = torch.full(
            pred_logits.shape[:2], c.num_classes, dtype=torch.int64, device=pred_logits.device
        )
        target_classes[0, query] = self.label
        loss_ce = F.cross_entropy(
            pred_logits.float().transpose(1, 2),
            target_classes,
            weight=c.empty_weight.to(pred_logits.device, torch.float32),
        )
        loss_mask, loss_dice = self._pair_losses(query)
        losses = {"loss_ce": c.weight_ce * loss_ce, "loss_mask": loss_mask, "loss_dice": loss_dice}
        losses["loss_total"] = losses["loss_ce"] + losses["loss_mask"] + losses["loss_dice"]
        return losses
