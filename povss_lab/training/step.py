"""One optimizer step of the small SAN: SAN's set loss plus the recipe's extra terms.

`train_step` takes the run's `TrainOptions` whole; `TrainParts` bundles what a run builds once
(model, loss, optimizer, random stream, identity head, workers). The forward may run under
bf16 autocast; its outputs, the losses, the gradients and the weights stay fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from povss_lab.synthetic.world import CLASS_NAMES, IDENTITIES_PER_CLASS, Identity, SceneObject
from povss_lab.training.losses import IdentityHead, patch_text_loss, semantic_inference_loss
from povss_lab.training.parallel import SINGLE, Workers, average_gradients, average_values
from povss_lab.training.recipe import TrainOptions, forward_dtype
from povss_lab.training.train_data import (
    PAD_LABEL,
    grid_labels,
    instance_targets,
    instance_weights,
    scene_targets,
)
from povss_ros.san.losses import SetCriterion
from povss_ros.san.model import SAN, SANFeatures

Losses = dict[str, torch.Tensor]


@dataclass
class TrainParts:
    """What a run builds once and every step uses."""

    model: SAN
    criterion: SetCriterion
    text_rows: torch.Tensor  # the world's class names through the frozen text tower
    optimizer: torch.optim.Optimizer
    generator: torch.Generator  # the loss's point samples
    identity_head: IdentityHead | None = None
    workers: Workers = SINGLE


def train_step(
    parts: TrainParts, scenes: list, opts: TrainOptions, short_side: int | None = None
) -> dict[str, float]:
    """One optimizer step on a batch of scenes; returns the weighted losses.

    With several workers, ``scenes`` is this worker's share of the batch: gradients and the
    returned losses are averaged over the workers, and every worker takes the same step.
    ``short_side``: the inputs' shortest side (None: the config's ``min_size``).
    """
    model = parts.model
    pixels, geometry = model.preprocess([s.image for s in scenes], short_side)
    if opts.instance_targets:
        paired = [instance_targets(s, geometry, i) for i, s in enumerate(scenes)]
        targets, owners = [t for t, _ in paired], [o for _, o in paired]
    else:
        targets = [scene_targets(s.semantic, geometry, i) for i, s in enumerate(scenes)]
        owners = []
    with _autocast(pixels.device, forward_dtype(opts)):
        feats, aux = model.encode_with_aux(pixels, geometry, opts.aux_blocks)
    rows = model.class_rows(parts.text_rows)
    logits = model.class_logits(feats.mask_embeddings, rows)
    criterion, gen = parts.criterion, parts.generator
    indices = criterion.matcher(logits, feats.mask_logits, targets, generator=gen)
    losses = criterion(logits, feats.mask_logits, targets, generator=gen, indices=indices)
    if aux:  # deep supervision: the set loss again on earlier side blocks' masks
        aux_losses = [criterion(model.class_logits(z, rows), masks, targets, generator=gen)
                      for z, masks in aux]
        losses["loss_aux"] = sum(a["loss_total"] for a in aux_losses)
    if parts.identity_head is not None:
        losses |= _identity_terms(parts.identity_head, feats, scenes, geometry, indices, owners,
                                  opts)
    losses |= _dense_terms(model, feats, logits, rows, scenes, geometry, opts)
    for key in _EXTRA_TERMS:  # one fixed order: the sum is bit-for-bit repeatable
        if key in losses:
            losses["loss_total"] = losses["loss_total"] + losses[key]
    optimizer = parts.optimizer
    optimizer.zero_grad(set_to_none=True)
    losses["loss_total"].backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    average_gradients(params, parts.workers)
    torch.nn.utils.clip_grad_norm_(params, opts.grad_clip)
    optimizer.step()
    return average_values(
        {k.removeprefix("loss_"): float(v.detach()) for k, v in losses.items()}, parts.workers)


# The terms added to SetCriterion's total, in the order they are summed.
_EXTRA_TERMS = ("loss_aux", "loss_qidentity", "loss_patch", "loss_identity", "loss_sem")


def _identity_terms(
    head: IdentityHead, feats: SANFeatures, scenes: list, geometry: object,
    indices: list, owners: list, opts: TrainOptions,
) -> Losses:
    """The identity classifier on the matched queries' Z and on F pooled over each object."""
    out: Losses = {}
    slots = opts.identities_per_class
    if opts.query_identity_weight > 0:
        if not opts.instance_targets:
            raise ValueError("the identity term on Z needs per-instance targets")
        z, ids = matched_object_queries(feats.mask_embeddings, indices, owners, slots)
        out["loss_qidentity"] = opts.query_identity_weight * head.classify(z, ids)
    if opts.identity_weight > 0:
        grid = tuple(feats.dense_features.shape[-2:])
        weights, labels = [], []
        for i, s in enumerate(scenes):
            w, objects = instance_weights(s, geometry, i, grid)
            weights.append(w)
            labels += [identity_index(o.identity, slots) for o in objects]
        out["loss_identity"] = opts.identity_weight * head(
            feats.dense_features, weights, torch.tensor(labels, dtype=torch.int64))
    return out


def _dense_terms(
    model: SAN, feats: SANFeatures, logits: torch.Tensor, rows: torch.Tensor, scenes: list,
    geometry: object, opts: TrainOptions,
) -> Losses:
    """Per-patch text alignment of F, and per-pixel NLL of SAN's own semantic map."""
    out: Losses = {}
    if opts.patch_text_weight > 0:
        grid = tuple(feats.dense_features.shape[-2:])
        labels = _grid_labels(scenes, geometry, grid, feats.dense_features.device)
        out["loss_patch"] = opts.patch_text_weight * patch_text_loss(
            feats.dense_features, rows[:-1], model.ov_classifier.logit_scale.exp(), labels,
            PAD_LABEL, opts.class_balance)
    if opts.semantic_weight > 0:
        h, w = feats.mask_logits.shape[-2:]
        grid = (2 * h, 2 * w)  # twice the mask grid: boundaries finer than one patch
        labels = _grid_labels(scenes, geometry, grid, feats.mask_logits.device)
        upsampled = F.interpolate(feats.mask_logits, size=grid, mode="bilinear",
                                  align_corners=False)
        out["loss_sem"] = opts.semantic_weight * semantic_inference_loss(
            logits, upsampled, labels, PAD_LABEL, opts.class_balance)
    return out


def _grid_labels(
    scenes: list, geometry: object, grid: tuple[int, int], device: torch.device
) -> torch.Tensor:
    """Each scene's semantic labels on `grid` of the padded input, stacked [B, h, w]."""
    return torch.stack([grid_labels(s.semantic, geometry, i, grid)
                        for i, s in enumerate(scenes)]).to(device)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """Autocast to `dtype` on `device`, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def matched_object_queries(
    mask_embeddings: torch.Tensor,
    indices: list[tuple[torch.Tensor, torch.Tensor]],
    owners: Sequence[Sequence[SceneObject | None]],
    identity_slots: int = IDENTITIES_PER_CLASS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z [K, D] of every query the matcher paired with an object (stuff targets skipped), and
    that object's identity id [K]."""
    picked, labels = [], []
    for b, (src, tgt) in enumerate(indices):
        for q, t in zip(src.tolist(), tgt.tolist()):
            if owners[b][t] is not None:
                picked.append(mask_embeddings[b, q])
                labels.append(identity_index(owners[b][t].identity, identity_slots))
    z = torch.stack(picked) if picked else mask_embeddings.new_zeros(0, mask_embeddings.shape[-1])
    return z, torch.tensor(labels, dtype=torch.int64)


def identity_index(identity: Identity, slots: int = IDENTITIES_PER_CLASS) -> int:
    """A global id for a pool identity: class index * slots + identity id."""
    if not 0 <= identity.identity_id < slots:
        raise ValueError(f"identity {identity.identity_id} of {identity.class_name!r} does not "
                         f"fit the identity head's {slots} ids per class")
    return CLASS_NAMES.index(identity.class_name) * slots + identity.identity_id
