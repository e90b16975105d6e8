"""Loss terms for training the small SAN from scratch, beyond SAN's own set loss.

SAN starts from a pretrained CLIP; the synthetic world's model does not. These dense terms and
the identity head stand in for what pretraining gives a real CLIP (see docs/experiments.md for
what each one bought). None of them is used at inference or by personalization.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def class_balance_weights(
    labels: Tensor, num_classes: int, ignore_index: int, power: float
) -> Tensor | None:
    """Per-class weights n_c^-power of the labels present (None when power is 0).

    A per-pixel mean lets the large stuff classes drown the thin things that mIoU counts just
    as much; power 1 makes the loss a mean over the classes present, 0.5 a milder tilt.
    """
    if power == 0:
        return None
    valid = labels[labels != ignore_index]
    counts = torch.bincount(valid, minlength=num_classes)[:num_classes].float()
    return torch.where(counts > 0, counts.clamp(min=1).pow(-power), torch.zeros_like(counts))


def semantic_inference_loss(
    pred_logits: Tensor,
    pred_masks: Tensor,
    labels: Tensor,
    ignore_index: int,
    class_balance: float = 0.0,
) -> Tensor:
    """Per-pixel cross-entropy of SAN's own semantic inference (softmax classes x sigmoid masks).

    Not part of SAN's published recipe: a dense auxiliary term for training from scratch on a
    small budget. The set loss supervises each image through a handful of matched queries;
    this term scores every pixel of the map that inference actually argmaxes, so classes and
    masks get a signal from the first step. ``labels`` [B, h, w] is on the masks' grid; pixels
    equal to ``ignore_index`` (padding) are skipped. The semantic scores are renormalized over
    classes, so the term is a plain NLL of the predicted class distribution per pixel.
    ``class_balance``: see `class_balance_weights`.
    """
    probs = pred_logits.float().softmax(dim=-1)[..., :-1]  # [B, Q, C]
    masks = pred_masks.float().sigmoid()  # [B, Q, h, w]
    scores = torch.einsum("bqc,bqhw->bchw", probs, masks)
    log_p = torch.log(scores + 1e-6) - torch.log(scores.sum(dim=1, keepdim=True) + 1e-6)
    weight = class_balance_weights(labels, log_p.shape[1], ignore_index, class_balance)
    return F.nll_loss(log_p, labels, weight=weight, ignore_index=ignore_index)


def patch_text_loss(
    dense: Tensor,
    class_rows: Tensor,
    scale: Tensor,
    labels: Tensor,
    ignore_index: int,
    class_balance: float = 0.0,
) -> Tensor:
    """Per-patch cross-entropy of CLIP's dense features F against the class text rows.

    Stands in, when the image tower is trained from scratch, for what CLIP's contrastive
    pretraining gives a real ViT for free: patch features that lie near the text embedding of
    what they show. The method relies on it (visual injection mixes F with T_per), and it gives
    every CLIP block a dense gradient. ``dense`` [B, D, h, w] and ``class_rows`` [C, D] are
    L2-normalized; ``labels`` [B, h, w] is on F's grid, ``ignore_index`` marks padding.
    ``class_balance``: see `class_balance_weights`.
    """
    logits = scale * torch.einsum("bdhw,cd->bchw", dense.float(), class_rows.float())
    weight = class_balance_weights(labels, logits.shape[1], ignore_index, class_balance)
    return F.cross_entropy(logits, labels, weight=weight, ignore_index=ignore_index)


class IdentityHead(nn.Module):
    """A training-only cosine classifier of object identity on instance-pooled CLIP features.

    Trained on class labels alone, a CLIP tower learned from scratch maps every mug to one
    point (see `synthetic.identity_probe`), while a real CLIP keeps colours and patterns
    because captions name them. Asking the pooled features to also tell identities apart keeps
    that information, which personalization needs to separate "my mug" from the others. The
    head is discarded after training; it is not part of SAN.
    """

    def __init__(
        self,
        num_identities: int,
        dim: int,
        scale: float = 16.0,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.prototypes = nn.Parameter(torch.randn(num_identities, dim, generator=generator))
        self.scale = scale

    def forward(self, dense: Tensor, weights: list[Tensor], labels: Tensor) -> Tensor:
        """CE of identity; ``dense`` [B, D, h, w], ``weights[b]`` [K_b, h, w] area weights of
        image b's objects, ``labels`` [sum K_b] identity ids."""
        pooled = [
            torch.einsum("khw,dhw->kd", w.to(d), d) / w.flatten(1).sum(1, keepdim=True).to(d)
            for w, d in zip(weights, dense.float())
            if w.numel()
        ]
        if not pooled:
            return dense.sum() * 0.0
        return self.classify(torch.cat(pooled), labels)

    def classify(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """CE of identity for ready embeddings [K, D] (e.g. the matched queries' Z)."""
        if embeddings.shape[0] == 0:
            return embeddings.sum() * 0.0
        feats = F.normalize(embeddings.float(), dim=-1)
        logits = self.scale * feats @ F.normalize(self.prototypes, dim=-1).t()
        return F.cross_entropy(logits, labels.to(logits.device))
