"""Teach one personal concept from K image+mask shots: one frozen forward per shot, then a
short Adam loop on the cached (Z, M, F) (docs/method.md, "Why teaching is fast").

Loss per iteration (batch size 1, shots in a seeded per-epoch permutation):
``L = L_seg + lambda_z * L_Z + lambda_m * L_M`` with

- ``L_seg``: SAN's `SetCriterion` (CE 2 with no-object 0.1, mask BCE 5, dice 5, point-sampled)
  over the N OPEN queries, classes ``[T_open; T_per_vis; bg]`` and ONE target (class k = V,
  the shot mask). The negative query is left out of matching and CE by default
  (``negative_in_seg=False``): as an unmatched query CE would push it to "no object", which
  contradicts L_Z (uniform over the open words), and matching could hand it the personal mask,
  the opposite of what it stands for; it has its own two losses. Its effect on the personal
  row still reaches training through L_Z's softmax, which includes T_per.
- ``L_Z = -mean_{i in open words} log p[i, neg]`` (personal class and, by default, bg excluded).
- ``L_M = BCE(M_neg logits, 1 - mask)`` with the mask area-resized to M's grid (soft targets),
  averaged over the grid.

``F_per`` is the area-weighted mean of F inside the mask on F's grid (see `shots`), averaged
over shots, computed once before training.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from ..options import option, validate
from ..san.losses import HungarianMatcher, SetCriterion
from ..san.model import SAN
from .concept import TEXT_INIT, Concept, layout
from .fusion import decode_concepts
from .runtime import frozen, intra_op_threads
from .setloss import FrozenMaskSetLoss, shot_generator
from .shots import (
    ShotFeatures,
    cache_shots,
    encoder_of,
    make_shot,
    surroundings_embeddings,
    visual_embedding,
)

__all__ = [
    "ShotFeatures",
    "TeachConfig",
    "TeachReport",
    "cache_shots",
    "concept_loss",
    "fit_iou",
    "frozen",
    "make_criterion",
    "make_shot",
    "seg_loss",
    "teach",
    "visual_embedding",
]

Progress = Callable[[int, int, float], None]
# The fit IoU reads each shot's prediction at most this many pixels (`fit_iou`).
FIT_PIXELS = 320 * 240
SegLoss = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


@dataclass
class TeachConfig:
    """Every teach setting and its default, in one place (docs/method.md).

    Fields made with `option` are user-facing: the node's ``teach_<name>`` parameters and
    `povss teach`'s ``--<name>`` flags map onto them by name. The rest are the paper's
    ablation switches and implementation choices, set by the evaluation harness.
    """

    iterations: int = option(
        200, "Adam steps on the cached shot features (batch size 1)", low=1, high=100_000)
    lr: float = option(5e-4, "Adam learning rate", positive=True, high=1.0)
    alpha: float = option(
        0.1, "visual injection: class row = alpha * F_per + (1 - alpha) * T_per", low=0.0, high=1.0)
    lambda_z: float = option(
        0.1, "weight of the negative embedding's uniform-word loss L_Z", low=0.0, high=1000.0)
    lambda_m: float = option(
        10.0, "weight of the negative mask's BCE loss L_M", low=0.0, high=1000.0)
    kernel: int = option(
        3, "kernel size of the negative mask's convolution W_M", low=1, high=31, odd=True)
    num_points: int = option(
        12544, "points sampled per mask by the set loss", low=1, high=1_000_000)
    seed: int = option(
        0, "seed of the shot order and of the loss's point samples", low=0, high=2**32 - 1)
    even_negative: bool = option(
        True, "ours: the negative proposal's word probabilities made exactly uniform at "
        "inference, so it never relabels other objects (false: the paper's decoding)")
    auto_min_score: float = option(
        0.3, "automatic teach masks: the chosen base-class region's minimum mean SAN score; "
        "frames below it are rejected", low=0.0, high=1.0)
    auto_dominance: float = option(
        2.0, "automatic teach masks: how many times the chosen region's summed score must "
        "exceed the runner-up region's (frames with several similar regions are rejected)",
        low=1.0, high=1000.0)
    measure_fit: bool = option(
        True, "after training, decode every shot (at most 320x240) for the fit IoU it "
        "reports (false: skip that, the fit is then NaN; the concept is the same)")
    use_prompt: bool = True
    use_negative: bool = True
    use_visual: bool = True
    exclude_bg_in_lz: bool = True
    negative_in_seg: bool = False
    # Intra-op threads for the CPU loop (None: leave torch's setting). Its ops are small: on a
    # loaded machine every multi-threaded op waits for a busy core. Set for the calling thread
    # only under PyTorch's OpenMP backend (the default on Linux), and restored afterwards.
    threads: int | None = 1

    def __post_init__(self) -> None:
        """A user field outside its limits is a ValueError naming it (the ablation switches
        and implementation choices above are the harness's, unchecked)."""
        validate(self)


@dataclass
class TeachReport:
    """What a teach did: per-iteration losses (total and terms), times, fit on the shots."""

    losses: list[float]
    parts: dict[str, list[float]]
    seconds: float  # the training loop only
    fit_iou: float
    fit_seconds: float
    shots: int
    config: dict = field(default_factory=dict)
    recomputed: bool = False


def shot_seed(cfg: TeachConfig, index: int) -> int:
    """Seed of shot `index`'s loss points (fixed across iterations, distinct across shots)."""
    return cfg.seed * 1_000_003 + 1 + index


def make_criterion(num_open: int, cfg: TeachConfig) -> SetCriterion:
    """SAN's set loss over V open classes + the personal one (weights: SAN's defaults)."""
    matcher = HungarianMatcher(num_points=cfg.num_points)
    return SetCriterion(num_open + 1, matcher, num_points=cfg.num_points)


def seg_loss(
    criterion: SetCriterion, shot: ShotFeatures, label: int, seed: int, cached: bool = True
) -> SegLoss:
    """L_seg for one shot: SetCriterion with the shot's fixed points (see `setloss`).

    ``cached`` uses `FrozenMaskSetLoss` (valid while the masks scored are the shot's frozen
    open masks); otherwise SetCriterion itself runs on whatever masks it is given.
    """
    if cached:
        frozen_loss = FrozenMaskSetLoss(criterion, shot.m, shot.target, label, seed)
        return lambda logits, masks: frozen_loss(logits)
    targets = [{"labels": torch.tensor([label], device=shot.m.device), "masks": shot.target[None]}]
    return lambda logits, masks: criterion(logits, masks, targets, shot_generator(seed))


def concept_loss(
    model: SAN,
    text_rows: torch.Tensor,
    concept: Concept,
    shot: ShotFeatures,
    seg: SegLoss,
    cfg: TeachConfig,
    look_alike: bool = False,
) -> dict[str, torch.Tensor]:
    """One shot's loss terms: `total` = seg + lambda_z * z + lambda_m * m (see module doc).
    A `look_alike` shot holds no personal pixel: its negative mask's target is the whole
    frame (`seg` then targets the look-alike with the base class, `look_alike_loss`)."""
    v = text_rows.shape[0]
    rows = model.class_rows(torch.cat([text_rows, concept.row().to(text_rows)], dim=0))
    logits, masks = model.class_logits(shot.z, rows), shot.m
    zero = logits.new_zeros(())
    l_z = l_m = zero
    if concept.use_negative:
        logits_neg = model.class_logits(concept.negative_embedding(shot.z), rows)
        logp = logits_neg[0, 0].float().log_softmax(dim=-1)
        words = logp[:v] if cfg.exclude_bg_in_lz else torch.cat([logp[:v], logp[v + 1 :]])
        l_z = -words.mean() if words.numel() else zero
        m_neg = concept.negative_mask(shot.m)
        personal = torch.zeros_like(shot.mask_m) if look_alike else shot.mask_m
        l_m = F.binary_cross_entropy_with_logits(m_neg[0, 0], 1.0 - personal)
        if cfg.negative_in_seg:
            logits = torch.cat([logits, logits_neg], dim=1)
            masks = torch.cat([masks, m_neg], dim=1)
    seg = seg(logits, masks)
    total = seg["loss_total"] + cfg.lambda_z * l_z + cfg.lambda_m * l_m
    return {
        "total": total,
        "seg": seg["loss_total"],
        "seg_ce": seg["loss_ce"],
        "seg_mask": seg["loss_mask"],
        "seg_dice": seg["loss_dice"],
        "z": l_z,
        "m": l_m,
    }


def fit_iou(
    model: SAN, text_rows: torch.Tensor, concept: Concept, shots: Sequence[ShotFeatures]
) -> float:
    """IoU of the concept's predicted pixels vs the shot masks, pooled over all shots. The
    prediction is the node's own decoding of the concept alone (`decode_concepts`), read at
    most `FIT_PIXELS` per shot: SAN's bilinear mask chain sampled at a smaller output size,
    the mask area-resized to it. A quality figure for the operator, so it need not cost
    more than the training it reports on."""
    inter = union = 0
    own = layout(text_rows, [concept]).aliases.get(0, text_rows.shape[0])  # its label id
    with torch.no_grad():
        for s in shots:
            f = s.features()
            h, w = f.geometry.original_hw[0]
            scale = min(1.0, math.sqrt(FIT_PIXELS / (h * w)))
            size = (max(1, round(h * scale)), max(1, round(w * scale)))
            geometry = dataclasses.replace(f.geometry, original_hw=(size,))
            _, labels = decode_concepts(model, text_rows, [concept], f.mask_embeddings[:1],
                                        f.mask_logits[:1], geometry)
            pred = labels == own
            mask = s.mask if size == (h, w) else F.interpolate(
                s.mask[None, None].float(), size=size, mode="area")[0, 0] >= 0.5
            inter += int((pred & mask).sum())
            union += int((pred | mask).sum())
    return inter / union if union else 0.0


def _train(
    model: SAN,
    text_rows: torch.Tensor,
    concept: Concept,
    shots: Sequence[ShotFeatures],
    cfg: TeachConfig,
    params: list[torch.nn.Parameter],
    recompute_backbone: bool,
    parts: dict[str, list[float]],
    progress: Progress | None,
    look_alikes: Sequence[ShotFeatures] = (),
    base: int | None = None,
) -> None:
    """The Adam loop (batch size 1, seeded per-epoch order over the shots and the
    `look_alikes`, whose target is the `base` class); loss terms into `parts`."""
    criterion = make_criterion(text_rows.shape[0], cfg).to(text_rows.device)
    cached = not (recompute_backbone or cfg.negative_in_seg)
    v = text_rows.shape[0]
    labels = [v] * len(shots) + [base] * len(look_alikes)
    shots = [*shots, *look_alikes]
    segs = [seg_loss(criterion, s, label, shot_seed(cfg, i), cached)
            for i, (s, label) in enumerate(zip(shots, labels))]
    encode = encoder_of(model)[1]
    order_gen = torch.Generator().manual_seed(cfg.seed)
    optim = torch.optim.Adam(params, lr=cfg.lr)
    order: list[int] = []
    for it in range(cfg.iterations):
        if not order:
            order = torch.randperm(len(shots), generator=order_gen).tolist()
        i = order.pop(0)
        shot = shots[i]
        if recompute_backbone:
            fresh = encode(shot.image)
            z, m = fresh.mask_embeddings.float(), fresh.mask_logits.float()
            shot = dataclasses.replace(shot, z=z, m=m)
        terms = concept_loss(model, text_rows, concept, shot, segs[i], cfg, labels[i] != v)
        optim.zero_grad()
        terms["total"].backward()
        optim.step()
        values = torch.stack([t.detach().float() for t in terms.values()]).tolist()
        for key, value in zip(terms, values):
            parts.setdefault(key, []).append(value)
        if progress is not None:
            progress(it + 1, cfg.iterations, values[0])


def teach(
    model: SAN,
    text_rows: torch.Tensor,
    base: int | torch.Tensor,
    shots: Sequence[ShotFeatures],
    cfg: TeachConfig | None = None,
    *,
    name: str = "concept",
    base_class: str = "",
    progress: Progress | None = None,
    recompute_backbone: bool = False,
    evaluate_fit: bool = True,
    text_init: str = TEXT_INIT,
    unique: bool = True,
    negatives: Sequence[ShotFeatures] = (),
) -> tuple[Concept, TeachReport]:
    """Learn one concept; `base` is the base class's row index in `text_rows`, or its row
    (e.g. ``model.text_rows([word])[0]`` when the word is not in the vocabulary); `text_init`
    records how that row was made; `unique`: the concept is one object (`identity`).
    `negatives`: look-alikes marked "not this one", each a shot whose mask is the look-alike:
    hard negatives of the objective (its query is taught the base class, its negative mask
    the whole frame) and rivals of the identity (`Concept.look_alikes`); they need `base`
    to be a row index.

    ``recompute_backbone=True`` is the straightforward loop (one frozen forward per iteration,
    same seeds, SetCriterion itself): it exists to show that caching changes only the time.
    ``evaluate_fit`` (and `TeachConfig.measure_fit`) decodes every shot (`fit_iou`) for
    `TeachReport.fit_iou`, else it is NaN.
    """
    cfg = cfg or TeachConfig()
    if not shots:
        raise ValueError("teach needs at least one shot")
    text_rows = text_rows.detach()
    base_row = text_rows[base] if isinstance(base, int) else base.detach()
    concept = Concept(
        name,
        base_class,
        base_row.to(text_rows),
        shots[0].z.shape[1],
        cfg.kernel,
        cfg.alpha,
        cfg.use_prompt,
        cfg.use_negative,
        cfg.use_visual,
        text_init,
        even_negative=cfg.even_negative,
        unique=unique,
    )
    if cfg.use_visual or unique:  # identity compares regions with F_per
        concept.f_per.copy_(visual_embedding(shots))
    if unique:  # and grows my object over regions more like it than like its surroundings
        concept.surroundings = surroundings_embeddings(shots).to(concept.f_per)
    if negatives:
        if not isinstance(base, int):
            raise ValueError("look-alikes need the base class in the vocabulary (their target)")
        concept.look_alikes = torch.cat([visual_embedding([n]) for n in negatives]).to(
            concept.f_per)
    params = concept.trainable()
    parts: dict[str, list[float]] = {}
    start = time.perf_counter()
    if params:
        with frozen(model), intra_op_threads(cfg.threads, text_rows.device):
            _train(model, text_rows, concept, shots, cfg, params, recompute_backbone, parts,
                   progress, negatives, base if isinstance(base, int) else None)
    losses = list(parts.get("total", []))
    seconds = time.perf_counter() - start
    start = time.perf_counter()
    measured = evaluate_fit and cfg.measure_fit
    iou = fit_iou(model, text_rows, concept, shots) if measured else float("nan")
    report = TeachReport(
        losses,
        parts,
        seconds,
        iou,
        time.perf_counter() - start,
        len(shots),
        dataclasses.asdict(cfg),
        recompute_backbone,
    )
    return concept, report
