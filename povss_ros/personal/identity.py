"""Which region is MINE: a personal concept names one object, chosen by identity.

The fused classifier labels every pixel that looks like the concept, so my mug's label also
lands on the other mugs in view. A concept taught as one object (`Concept.unique`) keeps at
most one region per frame. The candidates are the connected regions labelled the concept or
its base class (a look-alike is usually split between the two). Each is scored by the cosine
similarity between its mean dense CLIP feature (SAN's own `dense_features`, pooled over the
region as the shots are pooled for F_per: `shots.region_embedding`) and the concept's F_per,
the same mean over its shot masks. The best region becomes the concept, whole; every other
concept pixel goes back to the base class, so a look-alike mug is "mug". When even the best
similarity is below `min_similarity`, the object is not in view and no pixel keeps the
concept. Look-alikes an operator marked "not this one" (`Concept.look_alikes`, their mean
features) and the other concepts of the same base word (their F_per) take part as rivals: a
region more similar to one of them than to the shots is never chosen, so "my mug" does not
take "your mug".

This departs from the paper, which keeps every pixel the classifier gives the concept
(docs/method.md, "One object"). The frozen dense features carry the identity that the class
scores blur: docs/experiments.md has the measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..san.model import SANFeatures
from .concept import Concept
from .shots import region_embedding

# Regions smaller than this share of the frame are speckle, not candidate objects.
MIN_REGION_FRACTION = 1e-3
# Default of `min_similarity`: a region this similar to the shots can be my object. Chosen on
# SYN^per world 0 by the rule in docs/results/identity.md (`povss_lab.eval.identity`).
MIN_SIMILARITY = 0.74


@dataclass(frozen=True)
class IdentityChoice:
    """What `keep_one` decided for one concept in one frame."""

    similarity: float  # the best candidate's cosine similarity to the shots; NaN: none
    kept: bool  # whether that candidate became the concept
    candidates: int  # connected regions of the concept or its base class considered


def uses_identity(concept: Concept) -> bool:
    """Whether `concept` is decided by identity: taught as one object, with shots to compare
    against (an F_per), and not inert (all components off is SAN alone, bit for bit)."""
    return concept.unique and not concept.inert and bool(concept.f_per.abs().sum() > 0)


def candidate_regions(labels: np.ndarray, own: int, base: int | None) -> list[np.ndarray]:
    """Connected regions (bool masks) of the pixels labelled `own` or `base`, speckle left out."""
    hit = labels == own if base is None else (labels == own) | (labels == base)
    count, parts = cv2.connectedComponents(hit.astype(np.uint8), connectivity=8)
    if count <= 1:
        return []
    sizes = np.bincount(parts.ravel(), minlength=count)
    least = max(1, math.ceil(MIN_REGION_FRACTION * labels.size))
    return [parts == k for k in range(1, count) if sizes[k] >= least]


def keep_one(
    labels: np.ndarray,
    own: int,
    base: int | None,
    features: SANFeatures,
    concept: Concept,
    min_similarity: float = MIN_SIMILARITY,
    rivals: torch.Tensor | None = None,
) -> tuple[np.ndarray, IdentityChoice]:
    """`labels` with concept `own` on at most one region (see the module doc): the candidate
    most similar to the concept's shots, when at least `min_similarity` and nearer its shots
    than any rival (its marked look-alikes, and `rivals` [R, D]: other concepts of the same
    base word). Every other concept pixel, speckle included, gets `base`; with `base` None
    (the base word is not in the vocabulary) `UNDECIDED`, for the caller to fill. `features`
    is this image's (batch of one)."""
    out = labels.copy()
    out[labels == own] = UNDECIDED if base is None else base
    regions = candidate_regions(labels, own, base)
    if not regions:
        return out, IdentityChoice(math.nan, False, 0)
    with torch.no_grad():
        embeddings = F.normalize(torch.stack([region_embedding(features, r) for r in regions]),
                                 dim=1)
        mine = embeddings @ F.normalize(concept.f_per.reshape(-1).float(), dim=0).to(embeddings)
        others = concept.look_alikes.float().to(embeddings)
        if rivals is not None:
            others = torch.cat([others, rivals.float().to(embeddings)])
        if others.shape[0]:  # nearer a marked look-alike or another concept than to mine
            eligible = mine > (embeddings @ F.normalize(others, dim=1).t()).max(dim=1).values
        else:
            eligible = torch.ones_like(mine, dtype=torch.bool)
    if not bool(eligible.any()):
        return out, IdentityChoice(float(mine.max()), False, len(regions))
    best = int(torch.where(eligible, mine, mine.new_tensor(-math.inf)).argmax())
    score = float(mine[best])
    kept = score >= min_similarity
    if kept:
        out[regions[best]] = own
    return out, IdentityChoice(score, kept, len(regions))


# The label `keep_one` leaves on concept pixels it took away when there is no base word.
UNDECIDED = np.iinfo(np.uint16).max
