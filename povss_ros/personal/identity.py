"""Which region is MINE: a personal concept names one object, chosen by identity.

The fused classifier labels every pixel that looks like the concept, so my mug's label also
lands on the other mugs in view, and on an object it never saw it often names my mug by some
other word, or splits it among several. A concept taught as one object (`Concept.unique`)
keeps at most one region per frame, found from the dense CLIP features SAN already computed
(`SANFeatures.dense_features`), whatever words the label map put on it:

1. Regions: the connected parts of each label of the frame (speckle left out, other concepts'
   pixels never taken). Each is pooled to its mean dense feature as the shots were for F_per
   (`shots.region_sums`, all regions in one batched pass) and compared by cosine similarity
   with F_per, with what the shots show around the object (`Concept.surroundings`) and with
   the rivals: look-alikes marked "not this one" (`Concept.look_alikes`) and the other
   concepts of the same base word.
2. Parts: a region at least `PART_SIMILARITY` like my object and more like it than like its
   surroundings or any rival can be a piece of my object. Seeds: the parts, and the regions
   labelled the concept or its base word that are as similar and more like my object than
   like any rival (a marked look-alike never seeds, nor joins, my object).
3. Each seed grows over the touching parts (what the classifier split is joined again); the
   grown region is scored by the similarity of its own pooled feature. The best one that is
   more like my object than like any rival becomes the concept when its similarity is at least
   `min_similarity`; every other concept pixel goes back to the base word ("mug").

This departs from the paper, which keeps every pixel the classifier gives the concept
(docs/method.md, "One object"); docs/experiments.md has the measurements behind each step.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..san.model import SANFeatures
from .concept import Concept
from .shots import region_sums

# Regions smaller than this share of the frame are speckle, not candidate objects.
MIN_REGION_FRACTION = 1e-3
# Default of `min_similarity`: a region this similar to the shots can be my object. Chosen on
# SYN^per world 0 by the rule in docs/results/identity.md (`povss_lab.eval.identity`).
MIN_SIMILARITY = 0.75
# A region at least this similar to the shots may be a piece of my object (and a seed).
# Chosen on SYN^per world 0 (docs/experiments.md).
PART_SIMILARITY = 0.6
# Default of the threshold while my object is already in view (`Segmenter.decode`'s `held`):
# the best region that could be a piece of it keeps it, so a harder view of an object being
# watched does not drop it (hysteresis; docs/method.md, "One object").
STAY_SIMILARITY = PART_SIMILARITY
# The label `keep_one` leaves on concept pixels it took away when there is no base word.
UNDECIDED = np.iinfo(np.uint16).max


@dataclass(frozen=True)
class IdentityChoice:
    """What `keep_one` decided for one concept in one frame."""

    similarity: float  # the best grown region's cosine similarity to the shots; NaN: none
    kept: bool  # whether that region became the concept
    candidates: int  # seeds considered


def uses_identity(concept: Concept) -> bool:
    """Whether `concept` is decided by identity: taught as one object, with shots to compare
    against (an F_per), and not inert (all components off is SAN alone, bit for bit)."""
    return concept.unique and not concept.inert and bool(concept.f_per.abs().sum() > 0)


def label_regions(labels: np.ndarray, fixed: Collection[int] = ()
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(ids [H, W] int32, 0 = no region; label [R] of region r = ids value r + 1): the
    connected parts (8-connectivity) of each label's pixels, speckle and `fixed` labels
    left out."""
    ids = np.zeros(labels.shape, np.int32)
    owners: list[int] = []
    least = max(1, math.ceil(MIN_REGION_FRACTION * labels.size))
    sizes = np.bincount(labels.ravel())  # the labels present, in order, in one pass
    for value in np.flatnonzero(sizes >= least):  # a smaller label holds no region
        if int(value) in fixed:
            continue
        hit = labels == value
        count, parts = cv2.connectedComponents(hit.view(np.uint8), connectivity=8)
        mine = parts[hit]  # the component of each of the label's pixels; areas counted
        # from these (cv2's own statistics cost several times the components themselves)
        kept = np.flatnonzero(np.bincount(mine, minlength=count)[1:] >= least) + 1
        if not len(kept):
            continue
        lut = np.zeros(count, np.int32)  # component -> region id (0: speckle)
        lut[kept] = np.arange(len(owners) + 1, len(owners) + 1 + len(kept))
        owners += [int(value)] * len(kept)
        ids[hit] = lut[mine]
    return ids, np.asarray(owners, np.int64)


def touching(ids: np.ndarray, count: int) -> list[set[int]]:
    """For each region 0..count-1 of `ids` (value r + 1), the regions it touches
    (8-connectivity)."""
    near: list[set[int]] = [set() for _ in range(count)]
    codes = []
    for a, b in ((ids[:, :-1], ids[:, 1:]), (ids[:-1, :], ids[1:, :]),
                 (ids[:-1, :-1], ids[1:, 1:]), (ids[:-1, 1:], ids[1:, :-1])):
        edge = a != b  # only the few pixels on a boundary are gathered
        codes.append(a[edge].astype(np.int64) * (count + 1) + b[edge])
    for code in np.unique(np.concatenate(codes)).tolist():
        x, y = divmod(code, count + 1)
        if x and y:
            near[x - 1].add(y - 1)
            near[y - 1].add(x - 1)
    return near


def _best_match(embeddings: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """[R]: each (unit) embedding's highest cosine with the rows of `rows` [J, D]; -inf
    where there is none."""
    if rows.shape[0] == 0:
        return embeddings.new_full((embeddings.shape[0],), -math.inf)
    return (embeddings @ F.normalize(rows.float().to(embeddings), dim=1).t()).max(dim=1).values


def keep_one(
    labels: np.ndarray,
    own: int,
    base: int | None,
    features: SANFeatures,
    concept: Concept,
    min_similarity: float = MIN_SIMILARITY,
    rivals: torch.Tensor | None = None,
    fixed: Collection[int] = (),
) -> tuple[np.ndarray, IdentityChoice]:
    """`labels` with concept `own` on at most one region, found as the module doc says;
    `rivals` [R, D]: other concepts of the same base word; `fixed`: labels never taken (the
    other concepts'). Every other concept pixel, speckle included, gets `base`; with `base`
    None (the base word is not in the vocabulary) `UNDECIDED`, for the caller to fill.
    `features` is this image's (batch of one)."""
    out = labels.copy()
    out[labels == own] = UNDECIDED if base is None else base
    ids, owners = label_regions(labels, fixed)
    n = len(owners)
    if n == 0:
        return out, IdentityChoice(math.nan, False, 0)
    with torch.no_grad():
        sums, weights = region_sums(features, ids, n)
        unit = F.normalize(sums, dim=1)
        f_per = F.normalize(concept.f_per.reshape(-1).float(), dim=0).to(unit)
        others = concept.look_alikes
        if rivals is not None:
            others = torch.cat([others.to(rivals), rivals])
        mine = unit @ f_per
        # like my object, and more like it than like any rival: never a marked look-alike
        like_mine = ((mine >= PART_SIMILARITY) & (weights > 0)
                     & (mine > _best_match(unit, others)))
        part = like_mine & (mine > _best_match(unit, concept.surroundings))
        ours = torch.from_numpy(np.isin(owners, [own] if base is None else [own, base]))
        seeds = torch.nonzero(part | (like_mine & ours.to(part.device))).ravel().tolist()
        if not seeds:
            return out, IdentityChoice(math.nan, False, 0)
        is_part, near = part.tolist(), touching(ids, n)
        grown: dict[frozenset[int], None] = {}
        for seed in seeds:  # each seed with the parts it reaches through parts
            members, todo = {seed}, [seed]
            while todo:
                for r in near[todo.pop()]:
                    if is_part[r] and r not in members:
                        members.add(r)
                        todo.append(r)
            grown[frozenset(members)] = None
        unions = list(grown)
        pick = torch.zeros(len(unions), n, dtype=sums.dtype, device=sums.device)
        for i, members in enumerate(unions):
            pick[i, list(members)] = 1.0
        union_unit = F.normalize(pick @ sums, dim=1)
        score = union_unit @ f_per
        eligible = score > _best_match(union_unit, others)
    if not bool(eligible.any()):
        return out, IdentityChoice(float(score.max()), False, len(seeds))
    best = int(torch.where(eligible, score, score.new_tensor(-math.inf)).argmax())
    similarity = float(score[best])
    kept = similarity >= min_similarity
    if kept:
        out[np.isin(ids, [r + 1 for r in unions[best]])] = own
    return out, IdentityChoice(similarity, kept, len(seeds))
