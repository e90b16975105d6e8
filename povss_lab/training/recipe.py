"""The recipe of the synthetic world's small SAN ("syn_small"): its shape and its options.

The model is exactly the project's SAN code at a small size (`SYN_SMALL`); it is trained from
scratch, since no pretrained CLIP exists offline, so the recipe adds what SAN gets from
pretraining (a word prior for the text tower, dense losses, identity terms; see
`povss_lab.training.losses`). `TrainOptions` holds every other choice of a run. What each
choice bought is measured in docs/experiments.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from povss_lab.synthetic.world import CLASS_NAMES, IDENTITIES_PER_CLASS
from povss_lab.training.losses import IdentityHead
from povss_ros.precision import AUTO, auto_precision, emulation_warning
from povss_ros.san.config import VIT_B16
from povss_ros.san.losses import HungarianMatcher, SetCriterion
from povss_ros.san.model import SAN

# 8 px patches for both towers and a 160 px shortest side: objects are 25-60 px across in a
# 320x240 scene, and 1/8-resolution masks keep them at a cost two CPU cores can train.
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

# Parameters that are positions, tokens or prototypes rather than weights: no weight decay.
_NO_DECAY = ("embedding", "embed")

# Training precisions: the forward's autocast dtype (fp16 would need a gradient scaler).
TRAIN_PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


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
    # because more of each scene is then things, which mIoU lacks
    train_objects: tuple[int, int] = (9, 14)
    # side blocks whose decoded masks also get the set loss (SAN's deep supervision); () = none
    aux_blocks: tuple[int, ...] = ()
    ema_decay: float = 0.0  # > 0: ship an exponential moving average of the weights
    # progressive resizing: the first `low_res_steps` steps see inputs of this shortest side
    # instead of the config's min_size (cheaper scenes while the model learns coarse things)
    low_res_size: int = 128
    low_res_steps: int = 3300
    # "bf16": the model's forward runs under bf16 autocast (losses and weights stay fp32);
    # "auto": bf16 where the device has it natively, else fp32 (`resolve_precision`)
    precision: str = AUTO
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
    """AdamW over the trained parameters; weight decay on matrices only."""
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
    """SAN's set loss over the world's classes, on `opts.num_points` sampled points."""
    matcher = HungarianMatcher(num_points=opts.num_points)
    return SetCriterion(num_classes, matcher, num_points=opts.num_points)


def resolve_precision(opts: TrainOptions, device: str) -> tuple[TrainOptions, str]:
    """`opts` with "auto" replaced by the precision the run will use, and a line saying why.

    auto: `povss_ros.precision.choose` for `device` (as the segmenter decides), fp32 where that
    is fp16 (training it would need a gradient scaler). An explicit bf16 runs as asked; the
    line then names its measured slowdown where `device` only emulates it. Unknown: ValueError.
    """
    if opts.precision == AUTO:
        choice = auto_precision(torch.device(device))
        precision = choice.precision if choice.precision in TRAIN_PRECISIONS else "fp32"
        why = choice.reason + ("" if precision == choice.precision else
                               "; fp16 training needs a gradient scaler, so fp32")
        line = f"forward precision {precision} (auto: {why})"
        return replace(opts, precision=precision), line
    forward_dtype(opts)
    warning = emulation_warning(opts.precision, torch.device(device))
    return opts, f"forward precision {opts.precision} (requested)" + (
        f"; WARNING: {warning}" if warning else "")


def forward_dtype(opts: TrainOptions) -> torch.dtype | None:
    """The autocast dtype of `opts.precision` (None: plain fp32); "auto" must be resolved
    first (`resolve_precision`)."""
    try:
        return TRAIN_PRECISIONS[opts.precision]
    except KeyError:
        raise ValueError(f"precision must be one of {sorted([AUTO, *TRAIN_PRECISIONS])}, "
                         f"got {opts.precision!r}") from None
