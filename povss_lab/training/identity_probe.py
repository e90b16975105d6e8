"""Does a model's embedding space keep object identity, or only the class?

    python -m povss_lab.training.identity_probe --weights models/syn_small.safetensors

Personalization can only separate "my mug" from other mugs if the frozen model's features
differ between the mugs. Real CLIP keeps such differences: it learned from captions that
describe colours and patterns. A model trained only on class labels is pushed to map every mug
to one point. This probe measures that on the synthetic world. For a few identities of a class
it pools CLIP's dense features F inside each identity's mask (and takes the query embedding Z
of the mask proposal that covers it best), over several scenes. It then
reports the mean cosine within an identity and between identities, and the accuracy of
telling identities apart by the nearest leave-one-out centroid (chance = 1 / identities).

It also measures whether a mask proposal cuts ONE object out when a second object of its class
stands in the same scene (`proposal_recall`): if every proposal covers both mugs, no text row
can select mine, however well Z separates identities.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from itertools import combinations, product

import numpy as np
import torch
import torch.nn.functional as F

from povss_lab.interrupt import run_main
from povss_lab.synthetic.world import Identity, World, sample_scene
from povss_ros.san.model import SAN
from povss_ros.san.semantic import masks_to_image


@dataclass(frozen=True)
class IdentityReport:
    """How separable the identities of one class are in F."""

    class_name: str
    identities: int
    samples: int
    cos_within: float
    cos_between: float
    nearest_centroid_accuracy: float


@torch.no_grad()
def pooled_feature(model: SAN, image: np.ndarray, mask: np.ndarray) -> torch.Tensor | None:
    """F averaged over the mask (weighted by how much of each patch it covers), normalized;
    None when the object is not visible."""
    pixels, geometry = model.preprocess([image])
    dense = model.encode(pixels, geometry).dense_features[0].float()  # [D, h, w]
    (rh, rw), (ph, pw) = geometry.resized_hw[0], geometry.padded_hw
    canvas = torch.zeros(1, 1, ph, pw)
    resized = F.interpolate(torch.from_numpy(mask).float()[None, None], (rh, rw), mode="bilinear")
    canvas[..., :rh, :rw] = resized
    weight = F.adaptive_avg_pool2d(canvas, dense.shape[-2:])[0, 0].to(dense.device)
    if float(weight.sum()) < 1e-3:
        return None
    return F.normalize((dense * weight).sum((1, 2)) / weight.sum(), dim=0).cpu()


@dataclass(frozen=True)
class ProposalReport:
    """How well the best single mask proposal covers one object beside another of its class."""

    class_name: str
    objects: int
    mean_best_iou: float
    recall_at_50: float  # share of objects some proposal covers with IoU >= 0.5


def _proposals(model: SAN, image: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Mask proposal probabilities [N, H, W] at the image's size, and Z [N, D]."""
    pixels, geometry = model.preprocess([image])
    feats = model.encode(pixels, geometry)
    probs = masks_to_image(feats.mask_logits[0], geometry, 0).sigmoid()
    return probs, feats.mask_embeddings[0]


def _soft_iou(probs: torch.Tensor, mask: np.ndarray) -> torch.Tensor:
    target = torch.from_numpy(mask).to(probs)
    inter = (probs * target).flatten(1).sum(1)
    union = (probs + target - probs * target).flatten(1).sum(1)
    return inter / union.clamp_min(1e-6)


@torch.no_grad()
def matched_query(model: SAN, image: np.ndarray, mask: np.ndarray) -> torch.Tensor | None:
    """Z of the query whose mask proposal overlaps the object best (soft IoU), normalized:
    the embedding a personal text row is scored against. None when the object is not visible."""
    if not mask.any():
        return None
    probs, z = _proposals(model, image)
    best = int(torch.argmax(_soft_iou(probs, mask)))
    return F.normalize(z[best].float(), dim=0).cpu()


@torch.no_grad()
def proposal_recall(
    model: SAN, world: World, class_name: str, scenes: int = 12, seed: int = 2
) -> ProposalReport:
    """Best hard-mask IoU (proposal > 0.5) of any one proposal with each of two same-class
    objects placed in one scene: can the model cut MY mug out from the mug beside it?"""
    rng = np.random.default_rng(seed)
    pool = world.identities(class_name)
    best: list[float] = []
    for _ in range(scenes):
        pair = [pool[i] for i in rng.choice(len(pool), size=2, replace=False)]
        scene = sample_scene(rng, world, required=pair, n_objects=(3, 5))
        probs, _ = _proposals(model, scene.image)
        hard = (probs > 0.5).float()
        for ident in pair:
            mask = scene.mask(ident)
            if mask.any():
                best.append(float(_soft_iou(hard, mask).max()))
    if not best:
        raise ValueError(f"no {class_name} was visible in {scenes} scenes")
    return ProposalReport(class_name, len(best), float(np.mean(best)),
                          float(np.mean([b >= 0.5 for b in best])))


def probe_class(
    model: SAN,
    world: World,
    class_name: str,
    identities: int = 4,
    scenes: int = 6,
    seed: int = 1,
    features: str = "F",
) -> IdentityReport:
    """Cosines and nearest-centroid accuracy for the first `identities` of a class, on CLIP's
    dense features pooled over the object (``features="F"``) or on the query embedding of the
    best-matching mask proposal (``"Z"``)."""
    embed = {"F": pooled_feature, "Z": matched_query}[features]
    rng = np.random.default_rng(seed)
    pool: list[Identity] = world.identities(class_name)[:identities]
    feats: list[list[torch.Tensor]] = []
    for ident in pool:
        found = []
        for _ in range(scenes):
            scene = sample_scene(rng, world, required=[ident], n_objects=(2, 4))
            f = embed(model, scene.image, scene.mask(ident))
            if f is not None:
                found.append(f)
        if len(found) < 2:
            raise ValueError(f"{class_name} identity {ident.identity_id} was visible < 2 times")
        feats.append(found)
    within = [float(a @ b) for group in feats for a, b in combinations(group, 2)]
    between = [
        float(a @ b) for g1, g2 in combinations(feats, 2) for a in g1 for b in g2
    ]
    correct = total = 0
    for i, group in enumerate(feats):
        for x, f in enumerate(group):
            others = [[b for y, b in enumerate(g) if (j, y) != (i, x)] for j, g in enumerate(feats)]
            centroids = [F.normalize(torch.stack(o).mean(0), dim=0) for o in others]
            correct += int(np.argmax([float(f @ c) for c in centroids]) == i)
            total += 1
    return IdentityReport(
        class_name, len(pool), total, float(np.mean(within)), float(np.mean(between)),
        correct / total,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", default="models/syn_small.safetensors")
    ap.add_argument("--classes", default="mug,plate,bottle,book")
    ap.add_argument("--identities", type=int, default=4)
    ap.add_argument("--scenes", type=int, default=6, help="scenes per identity")
    args = ap.parse_args(argv)
    from povss_ros.san.checkpoint import load_weights
    from povss_ros.san.model import build_san
    from povss_ros.weights import config_for_weights

    torch.set_flush_denormal(True)
    cfg = config_for_weights(args.weights, None)
    models = {
        "trained": load_weights(build_san(cfg, seed=None), args.weights).eval(),
        "random init (same architecture)": build_san(cfg, seed=0).eval(),
    }
    world = World(0)
    classes = [c.strip() for c in args.classes.split(",") if c.strip()]
    print("| model | features | class | cos within identity | cos between identities | gap | "
          f"nearest-centroid accuracy (chance {1 / args.identities:.2f}) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for (label, model), feats in product(models.items(), ("F", "Z")):
        for cls in classes:
            r = probe_class(model, world, cls, args.identities, args.scenes, features=feats)
            print(f"| {label} | {feats} | {cls} | {r.cos_within:.3f} | {r.cos_between:.3f} | "
                  f"{r.cos_within - r.cos_between:+.3f} | {r.nearest_centroid_accuracy:.2f} |",
                  flush=True)
    print("\n| model | class | objects (two of the class per scene) | mean best proposal IoU | "
          "proposal recall@0.5 |")
    print("|---|---|---:|---:|---:|")
    for label, model in models.items():
        for cls in classes:
            p = proposal_recall(model, world, cls, args.scenes * 2)
            print(f"| {label} | {cls} | {p.objects} | {p.mean_best_iou:.3f} | "
                  f"{p.recall_at_50:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    run_main(main)
