"""Train the small SAN of the synthetic world ("syn_small") on a CPU, seeded, in about 46 min.

    python -m povss_lab.synthetic.train --out models/syn_small.safetensors --steps 6600 \
        --low-res 128 3300 --precision bf16 --workers 2 --seed 0

Why each choice (see DATA.md: no pretrained weights exist offline):

* Model: EXACTLY the project's SAN code (`build_san`), only smaller (`SYN_SMALL`): a 6-block
  CLIP image tower of width 128 (extractor = blocks 0-3, recognition head = blocks 4-5), a
  4-block side adapter of width 128 with 24 queries (`--queries`: a 9-14-object training
  scene has up to 17 targets, but 32 and 48 queries reached 27.4 and 25.5 held-out mIoU
  against 28.5 in the 1000-step trial setup below, 2026-11-25), and embed_dim 64. Patches
  are 8 px for both towers (SAN: 16) and inputs are resized to a shortest side of 160
  (320x240 -> 213x160, padded to 224x160): objects are only 25-60 px across at 320x240,
  and 8 px patches keep 1/8-resolution masks at a cost the CPU budget allows (192 px was
  1.4x slower per step; 128 px was 1.35x faster, 4500 steps in 33.4 min, but reached only
  51.8 held-out mIoU against 57.5, both before class balancing: a trial on 2026-11-24,
  same machine).
  CLIP sees the input at SAN's scale 0.5 (`--clip-scale`): 0.75 and 1.0 make steps 1.25x and
  1.9x slower, and at equal time reached 18.1 and 12.0 held-out mIoU against 23.8 (1000-step
  trial setup below; 2026-11-25, same machine).
* Text tower: width 32, 2 layers, so the 49408-token embedding stays 6 MB and the weights
  file about 16 MB. Its random init makes every class row alike (cosine 0.997). A short
  word-identity prior (`text_prior.py`, BPE words only, class names excluded) spreads words
  apart first, then the tower is frozen as SAN freezes CLIP's. The "open vocabulary" here is
  only this: any word gets a distinct fixed row; the model is trained on the 17 class names.
* Init: `build_san`'s seeded init, except the mask decoder's MLPs (`reinit_mask_decoder`):
  with the std-0.02 init, masks and attention biases start near 1e-5 and barely learn.
* Trained: everything but the text tower, plus SAN's learned void row `bg_embed`. Unlike SAN,
  the CLIP image tower is trained too, from scratch (nothing pretrained to freeze).
  `logit_scale` stays at CLIP's 100, as in SAN (a trained temperature from 1/0.07 did no
  better in short trials).
* Data: an endless seeded stream of `sample_scene` scenes of `World(world_seed)`. Targets are
  one mask per object instance and one per stuff class present (Mask2Former's panoptic
  targets, `instance_targets`), in the padded input frame (`train_data.py`). SAN trains with
  one mask per class; here a proposal, and its query embedding Z, must stand for ONE object,
  because a personal text row is scored against Z and has to pick my mug out from the mug
  beside it (`--class-targets` restores SAN's targets). SAN's semantic inference sums over
  proposals, so per-instance proposals give the same kind of label map.
  Training scenes hold 9 to 14 objects, the held-out ones 3 to 7 (`--train-objects`): more of
  each scene is things, which mIoU lacks. 1000-step trials on 2026-11-25 (same machine):
  3-7 23.8, 5-10 26.6, 7-12 27.3, 9-14 28.5, but 11-16 only 16.6 and 13-18 16.3 (the floor
  class collapsed); the wider 5-14 and 7-14 reached 26.0 and 26.6. The full run with 9-14:
  64.6 held-out mIoU against 60.7 with 3-7 (50.4 against 46.0 min: about 9% more per step).
  A full run with 7-12 reached 64.9: floor and table better, personalization and the demo no
  better (README), so not adopted.
  The pool holds 8 looks per thing class (`--identities-per-class`). With 32, the full
  recipe (57.3 min, 2026-12-03, same machine) reached 36.2 mIoU on unseen identities against
  25.0, but 52.1 held-out against 71.6: the same steps spread over more looks. Personalization
  followed (README). Not adopted here; with more compute it is the way to unseen objects.
* Progressive resizing (`--low-res 128 3300`): the first half of the steps resize the
  scenes to a shortest side of 128 instead of 160, padded to 192x128 instead of 224x160:
  1.47x the steps per second. A full fp32 run of 5400 steps, half at 128, reached 68.1
  held-out mIoU against 64.6 for 4500 steps at 160 (55.8 min, 2026-11-25).
  1000-step-time trials (2026-11-25, same machine): half the steps at 128 reached 29.6, three
  quarters only 23.1, against 28.5 at 160 throughout. 128 px throughout is worse (above).
* bf16 forward (`--precision bf16`): the model's forward runs under bf16 autocast (this CPU
  has avx512_bf16); the matcher, losses, gradients, optimizer and weights stay fp32. The full
  run made 2.96 steps per second at 128 px and 2.0 at 160 (18.6 and 27.5 min), against 1.93
  and 1.39 for the fp32 run of 2026-11-25: its 6600 steps took 46.1 min and reached 71.6
  (unseen identities 25.0) against 68.1 for 5400 fp32 steps (2026-12-03). Per step bf16 is
  no better: in the 1000-step-time trials (one worker each, two side by side, 2026-12-02)
  1150 bf16 steps reached 25.7 against 29.6 for fp32, and 1440 bf16 steps (18.9 min;
  fp32's 1150 took 23.2) 30.6. It buys steps, and steps count.
* Loss: the project's `SetCriterion` + `HungarianMatcher` (CE 2, mask BCE 5, dice 5, void
  weight 0.1) on 4096 sampled points instead of 12544 for speed; no deep supervision
  (`--deep-supervision 3` makes steps about 1.2x slower and, at equal time with 7-12 objects,
  reached 25.9 against 27.3 in a 1000-step-budget trial on 2026-11-25). Two
  dense terms SAN does not have, because SAN starts from a pretrained CLIP and we do not:
  `semantic_inference_loss` (weight 2: per-pixel NLL of the map inference argmaxes; with the
  set loss alone, held-out mIoU after 500 steps was 5, with it 10 after 400) and
  `patch_text_loss` (weight 1: CLIP's dense features F classified by the text rows, the
  alignment with text that contrastive pretraining gives a real CLIP and that visual
  embedding injection assumes when it mixes F into a text row). A third term (weight 1,
  `IdentityHead`, training only) asks F pooled over each object to tell the world's 112
  identities apart: with class labels alone the tower collapsed identity (cosine 0.990 within
  vs 0.989 between mugs, `identity_probe`); with it, 0.65 vs 0.21, and held-out mIoU rose
  from 34.2 to 39.5 at the same 3000 steps. F alone was not enough: the query embeddings Z
  stayed collapsed (0.986 vs 0.981) and personalization gained nothing on SYN^per. So a fourth
  term (weight 1, `query_identity_weight`) puts the same classifier, with the same
  prototypes, on the Z of every query the Hungarian matcher pairs with an object: Z then
  separates identities (mug 0.72 vs 0.48) and F and Z of one object point the same way, which
  visual injection relies on when it mixes F into a row scored against Z.
  AdamW (lr 5e-4, weight decay 0.05 on matrices), 100 warmup steps then cosine, clip norm 1,
  batch 8. (lr 2e-3 destabilized the masks in short trials. Trials of this CLI on 2026-11-24,
  same machine: at 1000 steps of batch 8, lr 1e-3 reached 17.1 held-out mIoU on 100 scenes
  against 19.0 for 5e-4; batch 4 for 2000 steps, 21.1. But the full run with batch 4 for 9000
  steps took 50.1 min and reached 57.3 against 57.5 for batch 8 at 4500 steps (both before
  class balancing), its loss tracking the batch-8 run's at equal wall time: the model learns
  per scene seen, not per step.)
* Class balance: both dense terms weight each class by its pixel count in the batch to the
  power -0.5 (`class_balance`). A per-pixel mean lets wall, floor and table, most of the
  pixels, drown the small things that mIoU counts just as much. Trials of this CLI on
  2026-11-24, same machine (1000 steps of 8 on one worker, 100 held-out scenes): per-pixel
  mean 19.0, power 0.5 23.8, power 1 (a mean over the classes present) 22.1. The full run
  with 0.5 (3-7 objects): 60.7 against 57.5; 12 of the 14 thing classes up by 2 to 10
  points (box and phone unchanged), floor and table down by 9 and 4; its class loss stayed below the
  per-pixel run's from step 300 on. With 0.5, the same 1000-step trial with semantic weight 4
  instead of 2 reached 17.6 (its masks learned slower), and with lr 7e-4 instead of 5e-4 22.2.
  On 9-14-object scenes (2026-11-25) power 0.25 reached 25.5 and 0.75 17.6, against 28.5.
* No weight average: `--ema-decay 0.999` (an exponential moving average, shipped in place of
  the last weights, both evaluated) scored 60.2 against the last weights' 60.7 in the same
  full run on 3-7-object scenes (2026-11-25, same machine): the cosine schedule already ends
  at 1% of the peak lr.
* Evaluation: mIoU by `ConfusionMatrix` over 200 held-out scenes of a separate seed, through
  SAN's own inference (`semantic_argmax`), and again on a world of unseen identities
  (world seed + 1).
* Outputs next to --out: the weights (config in the metadata, so `Segmenter.from_weights` needs
  nothing else), `<stem>.json` (metrics, config, options, times), `<stem>_loss.png`,
  `<stem>_samples.png`. While training, the weights and `<out>.state.pt` are saved every
  250 steps (atomically); `--resume` continues a killed run where it stopped, with the same
  scenes and the same result.
* Two data-parallel processes of one thread each (`--workers 2`, `parallel.py`) instead of
  one process of two threads: the ops are too small for two threads to pay. Whole runs on
  the 2-core build machine (3-7-object scenes): 4500 steps in 45-46 min with two workers,
  3000 in 42.7 min with one process (1.66 vs 1.17 it/s). The extra steps lifted held-out
  mIoU from 41.8 to 57.5 (before class balancing).
* Bit-for-bit repeatable on one machine with the same thread and worker count.
  OMP_WAIT_POLICY=PASSIVE (set by `main`) only changes how fast threads wait, never the
  arithmetic.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from povss_lab.eval.report import save_json
from povss_lab.synthetic.losses import IdentityHead, patch_text_loss, semantic_inference_loss
from povss_lab.synthetic.parallel import (
    SINGLE,
    Workers,
    average_gradients,
    average_values,
    broadcast_parameters,
    gather_objects,
    launch,
)
from povss_lab.synthetic.text_prior import fit_word_prior, row_similarity
from povss_lab.synthetic.train_data import (
    PAD_LABEL,
    SceneStream,
    grid_labels,
    instance_targets,
    instance_weights,
    scene_targets,
)
from povss_lab.synthetic.train_eval import (
    evaluate,
    held_out_scenes,
    save_loss_curve,
    save_sample_grid,
)
from povss_lab.synthetic.weight_average import WeightAverage
from povss_lab.synthetic.world import (
    CLASS_NAMES,
    IDENTITIES_PER_CLASS,
    SCENE_OBJECTS,
    STUFF_CLASSES,
    Identity,
    SceneObject,
    World,
)
from povss_ros.san.checkpoint import load_weights, save_weights
from povss_ros.san.config import VIT_B16, SANConfig
from povss_ros.san.losses import HungarianMatcher, SetCriterion
from povss_ros.san.model import SAN, build_san

SYN_SMALL = replace(
    VIT_B16,
    name="syn_small",
    clip_patch=8,
    clip_width=128,
    clip_layers=6,
    clip_heads=4,
    clip_pretrain_size=112,
    embed_dim=64,
    feature_last_layer=4,
    text_width=32,
    text_layers=2,
    text_heads=2,
    side_width=128,
    side_depth=4,
    side_heads=4,
    side_patch=8,
    side_image_size=224,
    num_queries=24,
    fusion_map=((0, 0), (1, 2), (2, 3), (3, 4)),
    decoder_channels=128,
    min_size=160,
    max_size=768,
    num_train_classes=len(CLASS_NAMES),
)

# Loss terms beyond SAN's own, in the order the progress lines show them.
_EXTRA_TERMS = ("aux", "sem", "patch", "identity", "qidentity")

# Parameters that are positions, tokens or prototypes rather than weights: no weight decay.
_NO_DECAY = ("embedding", "embed")

# Training precisions: the forward's autocast dtype (fp16 would need a gradient scaler).
TRAIN_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}

# Worker r draws its point samples from torch seed `seed + r * stride` (worker 0: `seed`).
_GENERATOR_STRIDE = 7919


@dataclass(frozen=True)
class TrainOptions:
    """Everything a run depends on besides the architecture."""

    steps: int = 6600
    batch_size: int = 8
    lr: float = 5e-4
    min_lr_ratio: float = 0.01
    warmup: int = 100
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    num_points: int = 4096
    semantic_weight: float = 2.0
    patch_text_weight: float = 1.0
    identity_weight: float = 1.0
    query_identity_weight: float = 1.0
    # the training world's pool of looks per thing class, at least IDENTITIES_PER_CLASS: the
    # first ones are the default world's, so held-out scenes and SYN^per's seen identities stay
    # inside the pool; the identity head classifies classes x this many ids
    identities_per_class: int = IDENTITIES_PER_CLASS
    class_balance: float = 0.5
    # objects per training scene: denser than the held-out scenes (the world's SCENE_OBJECTS)
    # because more of each scene is then things, which mIoU lacks; 11-16 collapsed the floor
    train_objects: tuple[int, int] = (9, 14)
    # side blocks whose decoded masks also get the set loss (SAN's deep supervision); () = none
    aux_blocks: tuple[int, ...] = ()
    ema_decay: float = 0.0  # > 0: ship an exponential moving average of the weights
    # progressive resizing: the first `low_res_steps` steps see inputs of this shortest side
    # instead of the config's min_size (cheaper scenes while the model learns coarse things)
    low_res_size: int = 128
    low_res_steps: int = 3300
    # "bf16": the model's forward runs under bf16 autocast (losses and weights stay fp32)
    precision: str = "bf16"
    instance_targets: bool = True
    seed: int = 0
    world_seed: int = 0
    workers: int = 1  # data-parallel processes; batch_size is split over them (`parallel.py`)
    text_prior_steps: int = 200
    eval_scenes: int = 200
    eval_seed: int = 10_000
    sample_rows: int = 6
    log_every: int = 25
    ckpt_every: int = 250


@torch.no_grad()
def reinit_mask_decoder(model: SAN, seed: int) -> None:
    """Re-initialize the mask decoder's MLPs so that training can start at all.

    `init_weights` draws every side-adapter weight with std 0.02 (timm style). Through the
    decoder's two 3-layer MLPs and their dot product that makes the initial mask logits and
    attention biases about 1e-5 (measured), and their gradients just as small: masks barely
    moved in 500 steps, and 4 images could not even be overfit. He init for the layers before
    a ReLU and LeCun init for the last layers give O(1) logits instead.

    The attention-bias MLP then starts as a copy of the mask MLP, one copy per head, so each
    query's recognition attention starts on its own mask proposal. SAN's idea is exactly that
    the bias follows the mask; starting there lowered the class loss in short trials.
    """
    gen = torch.Generator().manual_seed(seed + 7)
    dec = model.side_adapter_network.mask_decoder
    for mlp in (dec.query_mlp, dec.pix_mlp):
        for i, layer in enumerate(mlp.layers):
            gain = 2.0 if i < len(mlp.layers) - 1 else 1.0
            std = (gain / layer.weight[0].numel()) ** 0.5
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=gen) * std)
            layer.bias.zero_()
    last = len(dec.pix_mlp.layers) - 1
    for i, (attn, pix) in enumerate(zip(dec.attn_mlp.layers, dec.pix_mlp.layers)):
        repeat = dec.heads if i == last else 1
        attn.weight.copy_(pix.weight.repeat(repeat, *([1] * (pix.weight.dim() - 1))))
        attn.bias.copy_(pix.bias.repeat(repeat))


def lr_at(step: int, opts: TrainOptions) -> float:
    """Linear warmup over `warmup` steps, then cosine down to min_lr_ratio * lr."""
    if step < opts.warmup:
        return opts.lr * (step + 1) / opts.warmup
    t = (step - opts.warmup) / max(opts.steps - opts.warmup, 1)
    floor = opts.lr * opts.min_lr_ratio
    return floor + 0.5 * (opts.lr - floor) * (1.0 + math.cos(math.pi * min(t, 1.0)))


def input_side(step: int, opts: TrainOptions) -> int | None:
    """The shortest input side at `step`: the low-resolution phase's, then the config's."""
    return opts.low_res_size if step < opts.low_res_steps else None


def trainable_parameters(model: SAN) -> list[tuple[str, torch.nn.Parameter]]:
    """All of SAN but the frozen text tower; SAN's learned void row is trained."""
    named = []
    for name, p in model.named_parameters():
        train = not name.startswith("ov_classifier.") or name == "ov_classifier.bg_embed"
        p.requires_grad_(train)
        if train:
            named.append((name, p))
    return named


def make_optimizer(
    model: SAN, opts: TrainOptions, head: IdentityHead | None = None
) -> torch.optim.AdamW:
    decay, no_decay = [], []
    if head is not None:
        no_decay.extend(head.parameters())  # prototypes: no weight decay
    for name, p in trainable_parameters(model):
        plain = p.dim() >= 2 and not any(k in name for k in _NO_DECAY)
        (decay if plain else no_decay).append(p)
    groups = [
        {"params": decay, "weight_decay": opts.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=opts.lr, betas=(0.9, 0.999))


def make_criterion(num_classes: int, opts: TrainOptions) -> SetCriterion:
    matcher = HungarianMatcher(num_points=opts.num_points)
    return SetCriterion(num_classes, matcher, num_points=opts.num_points)


def train_step(
    model: SAN,
    criterion: SetCriterion,
    text_rows: torch.Tensor,
    scenes: list,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    grad_clip: float,
    semantic_weight: float = 0.0,
    patch_text_weight: float = 0.0,
    identity_head: IdentityHead | None = None,
    identity_weight: float = 0.0,
    query_identity_weight: float = 0.0,
    per_instance: bool = False,
    workers: Workers = SINGLE,
    class_balance: float = 0.0,
    aux_blocks: Sequence[int] = (),
    short_side: int | None = None,
    forward_dtype: torch.dtype | None = None,
    identity_slots: int = IDENTITIES_PER_CLASS,
) -> dict[str, float]:
    """One optimizer step on a batch of scenes; returns the weighted losses.

    With several `workers`, ``scenes`` is this worker's share of the batch: gradients and the
    returned losses are averaged over the workers, and every worker takes the same step.

    ``per_instance``: one target per object (`instance_targets`) instead of one per class.
    ``query_identity_weight``: the identity term on the matched queries' embeddings Z (needs
    ``per_instance``, so that a matched query stands for one object).
    ``aux_blocks``: deep supervision, the set loss again (matched on its own) on the masks and
    classes decoded after these side blocks.
    ``short_side``: the inputs' shortest side (None: the config's ``min_size``).
    ``forward_dtype``: run the model's forward under autocast to this dtype (bf16); its
    outputs come back as fp32, so the matcher, the losses and the optimizer stay fp32.
    ``identity_slots``: identity ids per class in ``identity_head`` (`identity_index`).
    """
    pixels, geometry = model.preprocess([s.image for s in scenes], short_side)
    if per_instance:
        paired = [instance_targets(s, geometry, i) for i, s in enumerate(scenes)]
        targets, owners = [t for t, _ in paired], [o for _, o in paired]
    else:
        targets = [scene_targets(s.semantic, geometry, i) for i, s in enumerate(scenes)]
    with _autocast(pixels.device, forward_dtype):
        feats, aux = model.encode_with_aux(pixels, geometry, aux_blocks)
    rows = model.class_rows(text_rows)
    logits = model.class_logits(feats.mask_embeddings, rows)
    indices = criterion.matcher(logits, feats.mask_logits, targets, generator=generator)
    losses = criterion(logits, feats.mask_logits, targets, generator=generator, indices=indices)
    if aux:
        aux_losses = [criterion(model.class_logits(z, rows), masks, targets, generator=generator)
                      for z, masks in aux]
        losses["loss_aux"] = sum(a["loss_total"] for a in aux_losses)
        losses["loss_total"] = losses["loss_total"] + losses["loss_aux"]
    if identity_head is not None and query_identity_weight > 0:
        if not per_instance:
            raise ValueError("the identity term on Z needs per-instance targets")
        z, ids = matched_object_queries(feats.mask_embeddings, indices, owners, identity_slots)
        losses["loss_qidentity"] = query_identity_weight * identity_head.classify(z, ids)
        losses["loss_total"] = losses["loss_total"] + losses["loss_qidentity"]
    if patch_text_weight > 0:
        grid = tuple(feats.dense_features.shape[-2:])
        labels = torch.stack([
            grid_labels(s.semantic, geometry, i, grid) for i, s in enumerate(scenes)
        ]).to(feats.dense_features.device)
        losses["loss_patch"] = patch_text_weight * patch_text_loss(
            feats.dense_features, rows[:-1], model.ov_classifier.logit_scale.exp(), labels,
            PAD_LABEL, class_balance)
        losses["loss_total"] = losses["loss_total"] + losses["loss_patch"]
    if identity_head is not None and identity_weight > 0:
        grid = tuple(feats.dense_features.shape[-2:])
        weights, labels = [], []
        for i, s in enumerate(scenes):
            w, objects = instance_weights(s, geometry, i, grid)
            weights.append(w)
            labels += [identity_index(o.identity, identity_slots) for o in objects]
        losses["loss_identity"] = identity_weight * identity_head(
            feats.dense_features, weights, torch.tensor(labels, dtype=torch.int64))
        losses["loss_total"] = losses["loss_total"] + losses["loss_identity"]
    if semantic_weight > 0:
        h, w = feats.mask_logits.shape[-2:]
        grid = (2 * h, 2 * w)  # twice the mask grid: boundaries finer than one patch
        labels = torch.stack([
            grid_labels(s.semantic, geometry, i, grid) for i, s in enumerate(scenes)
        ]).to(feats.mask_logits.device)
        upsampled = F.interpolate(feats.mask_logits, size=grid, mode="bilinear",
                                  align_corners=False)
        losses["loss_sem"] = semantic_weight * semantic_inference_loss(
            logits, upsampled, labels, PAD_LABEL, class_balance)
        losses["loss_total"] = losses["loss_total"] + losses["loss_sem"]
    optimizer.zero_grad(set_to_none=True)
    losses["loss_total"].backward()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    average_gradients(params, workers)
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return average_values(
        {k.removeprefix("loss_"): float(v.detach()) for k, v in losses.items()}, workers)


def _autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device`, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def forward_dtype(opts: TrainOptions) -> torch.dtype | None:
    """The autocast dtype of `opts.precision` (None: plain fp32)."""
    try:
        return TRAIN_PRECISIONS[opts.precision]
    except KeyError:
        raise ValueError(f"precision must be one of {sorted(TRAIN_PRECISIONS)}, "
                         f"got {opts.precision!r}") from None


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


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.pt")


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _silent(_line: str) -> None:
    """The log of every worker but rank 0."""


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def train(
    cfg: SANConfig,
    opts: TrainOptions,
    out: str | os.PathLike,
    resume: bool = False,
    log: Callable[[str], None] = print,
    device: str = "cpu",
    workers: Workers = SINGLE,
) -> dict:
    """Train, checkpoint, evaluate and write every output; returns the metrics dict.

    The scene stream and every random draw stay on the CPU, so a CUDA run sees the same data
    (its arithmetic, and so its weights, differ slightly). Run by each of `opts.workers`
    data-parallel processes (`launch`), every worker trains on scenes of its own and only
    rank 0 logs and writes; the others return an empty dict.
    """
    if workers.size != opts.workers or opts.batch_size % opts.workers:
        raise ValueError(f"{opts.workers} workers (running: {workers.size}) must split the "
                         f"batch of {opts.batch_size} evenly")
    if workers.parallel and device != "cpu":
        raise ValueError("data-parallel workers are for CPU cores; train on one GPU instead")
    dtype = forward_dtype(opts)
    if not workers.leader:
        log = _silent
    out = Path(out)
    state_path = _state_path(out)
    torch.manual_seed(opts.seed)
    world = World(opts.world_seed, opts.identities_per_class)
    class_names = list(world.class_names)
    t_start = time.perf_counter()
    state = None
    if resume and state_path.is_file() and out.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["options"] != asdict(opts) or state["config"] != cfg.to_dict():
            raise SystemExit(f"{state_path} was written with other options or config: not resumed")
        model = load_weights(build_san(cfg, seed=None), out)
        prior = state["text_prior"]
        log(f"resuming from step {state['step']} ({state_path})")
    else:
        model = build_san(cfg, seed=opts.seed)
        reinit_mask_decoder(model, opts.seed)
        before = row_similarity(model, class_names)
        prior_losses = fit_word_prior(model, opts.text_prior_steps, opts.seed, exclude=class_names)
        after = row_similarity(model, class_names)
        prior = {"steps": opts.text_prior_steps, "class_rows_before": before,
                 "class_rows_after": after, "final_loss": prior_losses[-1:] or None}
        log(f"text prior: class-row cosine mean {before['mean_cos']:.3f} -> "
            f"{after['mean_cos']:.3f} (max {after['max_cos']:.3f})")
    model.to(device).train()
    text_rows = model.text_rows(class_names)
    head = None
    if opts.identity_weight > 0 or opts.query_identity_weight > 0:
        gen = torch.Generator().manual_seed(opts.seed + 11)
        head = IdentityHead(len(class_names) * opts.identities_per_class, cfg.embed_dim,
                            generator=gen)
        head.to(device)
        if state is not None and state.get("identity_head") is not None:
            head.load_state_dict(state["identity_head"])
    broadcast_parameters([model] if head is None else [model, head], workers)
    average = WeightAverage(model, opts.ema_decay) if opts.ema_decay > 0 else None
    optimizer = make_optimizer(model, opts, head)
    criterion = make_criterion(len(class_names), opts).to(device)
    stream = SceneStream(world, opts.seed, shard=workers.rank, n_objects=opts.train_objects)
    generator = torch.Generator().manual_seed(opts.seed + _GENERATOR_STRIDE * workers.rank)
    per_worker = opts.batch_size // opts.workers
    history: dict[str, list[float]] = {"total": [], "ce": [], "mask": [], "dice": []}
    if opts.aux_blocks:
        history["aux"] = []
    if opts.semantic_weight > 0:
        history["sem"] = []
    if opts.patch_text_weight > 0:
        history["patch"] = []
    if opts.identity_weight > 0:
        history["identity"] = []
    if opts.query_identity_weight > 0:
        history["qidentity"] = []
    step, elapsed_before = 0, 0.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        stream.restore(state["streams"][workers.rank])
        generator.set_state(state["generators"][workers.rank])
        history = state["history"]
        if average is not None:
            average.load_state_dict(state["weight_average"])
        step, elapsed_before = int(state["step"]), float(state["elapsed_s"])

    bar = None
    if workers.leader and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=opts.steps, initial=step, desc="train syn_small", dynamic_ncols=True)
    t_loop, step0 = time.perf_counter(), step
    while step < opts.steps:
        lr = lr_at(step, opts)
        for group in optimizer.param_groups:
            group["lr"] = lr
        losses = train_step(model, criterion, text_rows, stream.next(per_worker),
                            optimizer, generator, opts.grad_clip, opts.semantic_weight,
                            opts.patch_text_weight, head, opts.identity_weight,
                            opts.query_identity_weight, opts.instance_targets, workers,
                            opts.class_balance, opts.aux_blocks, input_side(step, opts),
                            dtype, opts.identities_per_class)
        if average is not None:
            average.update(model)
        for key in history:
            history[key].append(losses[key])
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total']:.3f}", lr=f"{lr:.1e}")
        checkpoint = step % opts.ckpt_every == 0 and step < opts.steps
        if checkpoint:  # every worker's random state, so that a resumed run sees the same data
            streams = gather_objects(stream.state(), workers)
            generators = gather_objects(generator.get_state(), workers)
        if checkpoint and workers.leader:
            save_weights(model, out)
            _save_state(state_path, {
                "step": step, "optimizer": optimizer.state_dict(), "streams": streams,
                "generators": generators, "history": history,
                "identity_head": head.state_dict() if head is not None else None,
                "weight_average": average.state_dict() if average is not None else None,
                "elapsed_s": elapsed_before + time.perf_counter() - t_start,
                "options": asdict(opts), "config": cfg.to_dict(), "text_prior": prior,
            })
        if step % opts.log_every == 0 or step == opts.steps:
            rate = (step - step0) / (time.perf_counter() - t_loop)
            window = {k: sum(v[-opts.log_every:]) / len(v[-opts.log_every:])
                      for k, v in history.items()}
            line = (f"step {step}/{opts.steps} loss {window['total']:.3f} (ce {window['ce']:.3f} "
                    f"mask {window['mask']:.3f} dice {window['dice']:.3f}"
                    + "".join(f" {k} {window[k]:.3f}" for k in _EXTRA_TERMS if k in window)
                    + f") lr {lr:.2e} "
                    f"{rate:.2f} it/s elapsed {_fmt_time(time.perf_counter() - t_start)} "
                    f"ETA {_fmt_time((opts.steps - step) / max(rate, 1e-9))}")
            (bar.write if bar is not None else log)(line)
    if bar is not None:
        bar.close()
    if not workers.leader:
        return {}
    train_s = elapsed_before + time.perf_counter() - t_start
    model.eval()
    raw = None
    if average is not None:
        if opts.eval_scenes > 0:  # what the average bought: the last weights, measured alike
            raw = held_out_evaluations(model, opts)
        average.copy_to(model)
    save_weights(model, out)
    log(f"trained {opts.steps} steps in {_fmt_time(train_s)}; weights -> {out} "
        f"({out.stat().st_size / 2**20:.1f} MiB)")
    result = {
        "variant": cfg.name, "weights": out.name, "weights_bytes": out.stat().st_size,
        "train": {"options": asdict(opts), "wall_time_s": round(train_s, 1),
                  "torch_threads": torch.get_num_threads(), "workers": opts.workers,
                  "text_prior": prior,
                  "final_loss_mean_last_100": sum(history["total"][-100:])
                  / max(len(history["total"][-100:]), 1)},
        "config": cfg.to_dict(), "class_names": class_names,
    }
    if history["total"]:
        save_loss_curve(history, out.with_name(out.stem + "_loss.png"),
                        identities=len(world.all_identities()))
        result["train"]["loss_mean_per_50_steps"] = {
            k: [round(sum(v[i:i + 50]) / len(v[i:i + 50]), 4) for i in range(0, len(v), 50)]
            for k, v in history.items()
        }
    result.update(evaluate_outputs(model, opts, out, log))
    if raw:
        result["eval_raw_last_step"] = raw
        log(f"without the weight average: held-out mIoU {100 * raw['eval']['miou']:.1f} "
            f"(unseen identities {100 * raw['eval_new_identities']['miou']:.1f})")
    state_path.unlink(missing_ok=True)
    return result


def evaluate_outputs(
    model: SAN, opts: TrainOptions, out: Path, log: Callable[[str], None] = print
) -> dict:
    """Held-out mIoU (same world, unseen identities) and the sample grid."""
    if opts.eval_scenes <= 0:
        return {}
    t0 = time.perf_counter()
    res = held_out_evaluations(model, opts)
    res["eval_time_s"] = round(time.perf_counter() - t0, 1)
    if opts.sample_rows > 0:
        world = World(opts.world_seed)
        class_names = list(world.class_names)
        scenes = held_out_scenes(world, opts.sample_rows, opts.eval_seed)
        save_sample_grid(model, model.text_rows(class_names), class_names, scenes,
                         out.with_name(out.stem + "_samples.png"))
    log(f"held-out mIoU {100 * res['eval']['miou']:.1f} (unseen identities "
        f"{100 * res['eval_new_identities']['miou']:.1f}) over {opts.eval_scenes} scenes")
    for name, iou in res["eval"]["iou"].items():
        log(f"  {name:>9}: {'n/a' if iou is None else f'{100 * iou:.1f}'}")
    return res


def held_out_evaluations(model: SAN, opts: TrainOptions) -> dict:
    """mIoU on `eval_scenes` held-out scenes of the training world and of unseen identities."""
    res = {}
    for key, world_seed, what in (("eval", opts.world_seed, f"stream seed {opts.eval_seed}"),
                                  ("eval_new_identities", opts.world_seed + 1,
                                   "unseen identities")):
        world = World(world_seed)
        class_names = list(world.class_names)
        scenes = held_out_scenes(world, opts.eval_scenes, opts.eval_seed)
        res[key] = evaluate(model, model.text_rows(class_names), class_names, scenes)
        res[key]["protocol"] = f"{opts.eval_scenes} scenes of World({world_seed}), {what}"
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="models/syn_small.safetensors")
    ap.add_argument("--steps", type=int, default=TrainOptions.steps)
    ap.add_argument("--batch-size", type=int, default=TrainOptions.batch_size)
    ap.add_argument("--lr", type=float, default=TrainOptions.lr)
    ap.add_argument("--seed", type=int, default=TrainOptions.seed)
    ap.add_argument("--patch-text-weight", type=float, default=TrainOptions.patch_text_weight,
                    help="weight of the dense patch-text alignment loss on F (0: off)")
    ap.add_argument("--identity-weight", type=float, default=TrainOptions.identity_weight,
                    help="weight of the identity term on instance-pooled F (0: off)")
    ap.add_argument("--query-identity-weight", type=float,
                    default=TrainOptions.query_identity_weight,
                    help="weight of the identity term on the matched queries' Z (0: off)")
    ap.add_argument("--identities-per-class", type=int,
                    default=TrainOptions.identities_per_class,
                    help=f"looks per thing class in the training world (at least "
                         f"{IDENTITIES_PER_CLASS}: the first {IDENTITIES_PER_CLASS} are the "
                         f"held-out scenes' and SYN^per's seen identities)")
    ap.add_argument("--class-targets", action="store_true",
                    help="one target per class (SAN's semantic targets) instead of one per "
                         "object; implies --query-identity-weight 0")
    ap.add_argument("--semantic-weight", type=float, default=TrainOptions.semantic_weight,
                    help="weight of the dense semantic-inference loss (0: SAN's set loss only)")
    ap.add_argument("--class-balance", type=float, default=TrainOptions.class_balance,
                    help="dense losses weight each class by its pixel count^-P (0: per-pixel "
                         "mean, 1: mean over the classes present)")
    ap.add_argument("--deep-supervision", type=int, nargs="+", default=[], metavar="BLOCK",
                    help="also put the set loss on the masks decoded after these side blocks "
                         f"(1 to {SYN_SMALL.side_depth - 1}; SAN's deep supervision)")
    ap.add_argument("--train-objects", type=int, nargs=2, metavar=("MIN", "MAX"),
                    default=TrainOptions.train_objects,
                    help="objects per training scene (held-out scenes keep "
                         f"{SCENE_OBJECTS[0]} to {SCENE_OBJECTS[1]})")
    ap.add_argument("--ema-decay", type=float, default=TrainOptions.ema_decay,
                    help="ship an exponential moving average of the weights with this decay "
                         "(0: the last step's weights); both are evaluated")
    ap.add_argument("--eval-scenes", type=int, default=TrainOptions.eval_scenes)
    ap.add_argument("--min-size", type=int, default=SYN_SMALL.min_size,
                    help="shortest side the scenes are resized to (fewer pixels: faster steps, "
                         "lower mIoU per step); stored in the weights' config")
    ap.add_argument("--low-res", type=int, nargs=2, metavar=("SIZE", "STEPS"),
                    default=(TrainOptions.low_res_size, TrainOptions.low_res_steps),
                    help="progressive resizing: the first STEPS steps resize the scenes to a "
                         "shortest side of SIZE instead of --min-size (cheaper steps early; "
                         "0 0: off)")
    ap.add_argument("--clip-scale", type=float, default=SYN_SMALL.clip_scale,
                    help="factor CLIP's towers see the padded input at (more: more tokens per "
                         "object for recognition, slower steps); stored in the weights' config")
    ap.add_argument("--queries", type=int, default=SYN_SMALL.num_queries,
                    help="mask proposals (SAN's queries) per image, at least one per target (each "
                         "stuff class and object of a training scene); stored in the weights' "
                         "config")
    ap.add_argument("--precision", default=TrainOptions.precision,
                    choices=sorted(TRAIN_PRECISIONS),
                    help="bf16: the model's forward under bf16 autocast (losses, gradients "
                         "and weights stay fp32)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads in all")
    ap.add_argument("--workers", type=int, default=None,
                    help="data-parallel CPU processes sharing --threads (default: 2 on the CPU, "
                         "1.44x the steps per second on 2 cores; 1 on a GPU). The scenes, and "
                         "so the weights, depend on it")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--resume", action="store_true", help="continue a killed run of --out")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the weights at --out")
    args = ap.parse_args(argv)
    if args.workers is None:
        args.workers = 2 if args.device == "cpu" else 1
    if argv is None and "OMP_WAIT_POLICY" not in os.environ:
        # OpenMP threads spin while they wait for each other. On a shared CPU one starved
        # thread then stalls both (measured here: 3-10x slower steps, niced, beside one busy
        # process). Passive waiting frees the core instead. The OpenMP runtime reads this when
        # torch loads, so start again with it set.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "povss_lab.synthetic.train", *sys.argv[1:]])
    opts = TrainOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, eval_scenes=args.eval_scenes,
                        semantic_weight=args.semantic_weight,
                        patch_text_weight=args.patch_text_weight,
                        identity_weight=args.identity_weight,
                        class_balance=args.class_balance, ema_decay=args.ema_decay,
                        train_objects=tuple(args.train_objects),
                        aux_blocks=tuple(sorted(set(args.deep_supervision))),
                        query_identity_weight=0.0 if args.class_targets
                        else args.query_identity_weight,
                        instance_targets=not args.class_targets, workers=args.workers,
                        low_res_size=args.low_res[0], low_res_steps=args.low_res[1],
                        precision=args.precision,
                        identities_per_class=args.identities_per_class)
    out = Path(args.out)
    if args.eval_only:
        from povss_ros.segmenter import config_for_weights

        torch.set_num_threads(args.threads)
        torch.set_flush_denormal(True)  # see _train_and_save
        model = load_weights(build_san(config_for_weights(out, None), seed=None), out)
        model.to(args.device).eval()
        result = evaluate_outputs(model, replace(opts, eval_scenes=max(opts.eval_scenes, 1)), out)
        if _metrics_path(out).is_file():
            import json

            result = {**json.loads(_metrics_path(out).read_text()), **result}
        _write_metrics(out, result)
    else:
        threads = max(1, args.threads // opts.workers)
        if args.min_size < SYN_SMALL.size_divisibility:
            raise SystemExit(f"error: --min-size must be at least "
                             f"{SYN_SMALL.size_divisibility}, got {args.min_size}")
        if args.low_res[1] < 0 or (args.low_res[1] and not
                                   SYN_SMALL.size_divisibility <= args.low_res[0]):
            raise SystemExit(f"error: --low-res needs SIZE >= {SYN_SMALL.size_divisibility} "
                             f"and STEPS >= 0, got {args.low_res}")
        if any(not 1 <= b < SYN_SMALL.side_depth for b in args.deep_supervision):
            raise SystemExit(f"error: --deep-supervision blocks must lie in 1 to "
                             f"{SYN_SMALL.side_depth - 1}, got {args.deep_supervision}")
        if not 1 <= args.train_objects[0] <= args.train_objects[1]:
            raise SystemExit(f"error: --train-objects needs 1 <= MIN <= MAX, got "
                             f"{args.train_objects}")
        if args.identities_per_class < IDENTITIES_PER_CLASS:
            raise SystemExit(f"error: --identities-per-class must be at least "
                             f"{IDENTITIES_PER_CLASS}, got "
                             f"{args.identities_per_class}")
        if not 0 <= args.ema_decay < 1:
            raise SystemExit(f"error: --ema-decay must be in [0, 1), got {args.ema_decay}")
        if not 0 < args.clip_scale <= 1:
            raise SystemExit(f"error: --clip-scale must be in (0, 1], got {args.clip_scale}")
        targets = len(STUFF_CLASSES) + args.train_objects[1]  # the most in one training scene
        if args.queries < targets:
            raise SystemExit(f"error: --queries must be at least the {targets} targets of the "
                             f"densest training scene, got {args.queries}")
        cfg = replace(SYN_SMALL, min_size=args.min_size, clip_scale=args.clip_scale,
                      num_queries=args.queries)
        launch(_train_and_save, opts.workers, threads, cfg, opts, out, args.resume, args.device)
    return 0


def _train_and_save(workers: Workers, cfg: SANConfig, opts: TrainOptions, out: Path,
                    resume: bool, device: str) -> None:
    """One training process; rank 0 writes the metrics next to the weights."""
    # SAN's -100 attention masks make subnormal floats that slow CPU matmuls several-fold.
    torch.set_flush_denormal(True)
    result = train(cfg, opts, out, resume=resume, device=device, workers=workers)
    if workers.leader:
        _write_metrics(out, result)


def _metrics_path(out: Path) -> Path:
    """`<stem>.json` next to the weights."""
    return out.with_name(out.stem + ".json")


def _write_metrics(out: Path, result: dict) -> None:
    save_json(_metrics_path(out), result)
    print(f"metrics -> {_metrics_path(out)}")


if __name__ == "__main__":
    raise SystemExit(main())
