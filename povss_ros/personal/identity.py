"""Which region is MINE: a personal concept names one object, chosen by identity.

The fused classifier labels every pixel that looks like the concept, so my mug's label also
lands on the other mugs in view, and on an object it never saw it often names my mug by some
other word, or splits it among several. A concept taught as one object (`Concept.unique`)
keeps at most one region per frame, found from the dense CLIP features SAN already computed
(`SANFeatures.dense_features`), whatever words the label map put on it:

1. Regions: the connected parts of each label of the frame (speckle left out, other concepts'
   pixels never taken). Each is pooled to its mean dense feature as the shots were for F_per
   (`shots.region_sums`, all regions in one batched pass; the concepts of one frame share
   them, `FrameRegions`) and compared by cosine similarity with F_per, with what the shots
   show around the object (`Concept.surroundings`) and with the rivals: look-alikes marked
   "not this one" (`Concept.look_alikes`) and the other concepts of the same base word.
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
    left out. Regions are numbered label by label in increasing order, each label's parts in
    the order their first pixel comes in the frame."""
    ids = np.zeros(labels.shape, np.int32)
    owners: list[int] = []
    sizes = np.bincount(labels.ravel())  # the labels present, in order, in one pass
    for value in np.flatnonzero(sizes >= _least_area(labels)):  # a smaller one holds none
        if int(value) not in fixed:
            owners += [int(value)] * _number_parts(labels, int(value), ids, len(owners) + 1)
    return ids, np.asarray(owners, np.int64)


def _least_area(labels: np.ndarray) -> int:
    """The fewest pixels a region of `labels` has (fewer: speckle)."""
    return max(1, math.ceil(MIN_REGION_FRACTION * labels.size))


def _number_parts(labels: np.ndarray, value: int, ids: np.ndarray, first: int) -> int:
    """Writes into `ids`, over every pixel of label `value`, its region's number (`first`,
    `first` + 1, ... in the order of the parts' first pixels) or 0 for speckle; returns how
    many regions the label has."""
    hit = labels == value
    count, parts = cv2.connectedComponents(hit.view(np.uint8), connectivity=8)
    mine = parts[hit]  # the component of each of the label's pixels; areas counted from
    # these (cv2's own statistics cost several times the components themselves)
    kept = np.flatnonzero(np.bincount(mine, minlength=count)[1:] >= _least_area(labels)) + 1
    lut = np.zeros(count, np.int32)  # component -> region number (0: speckle)
    lut[kept] = np.arange(first, first + len(kept))
    ids[hit] = lut[mine]
    return len(kept)


class FrameRegions:
    """One frame's regions (`label_regions` with nothing fixed) and their pooled dense
    features (`shots.region_sums`), shared by the concepts of one frame decided one after
    another: each concept's decision changes only a few labels (its own, its base word's),
    so `sync` finds again only the parts of the labels that changed, and `select` gives each
    concept its candidates without finding or pooling anything again."""

    def __init__(self, features: SANFeatures) -> None:
        self.features = features  # one image's (batch of one)
        self._labels: np.ndarray | None = None
        self._ids = np.zeros((0, 0), np.int32)  # every region's key, 0 = none
        self._next = 1  # the key the next region found gets
        # label -> (its first region's key, [count, D] feature sums, [count] weights)
        self._parts: dict[int, tuple[int, torch.Tensor, torch.Tensor]] = {}

    def sync(self, labels: np.ndarray) -> None:
        """Brings the regions up to date with `labels`, finding again only the parts of the
        labels whose pixels changed since the last call."""
        if self._labels is None or self._labels.shape != labels.shape:
            self._ids = np.zeros(labels.shape, np.int32)
            self._parts.clear()
            moved = None
        else:
            moved = self._labels != labels
            if not moved.any():
                return
        sizes = np.bincount(labels.ravel())  # pixels per label (a vanished one: beyond its end)
        changed = (np.flatnonzero(sizes) if moved is None else
                   np.unique(np.concatenate([self._labels[moved], labels[moved]])))
        self._labels = labels.copy()
        first = self._next
        counts = {}
        for value in changed.tolist():
            self._parts.pop(value, None)
            if value < len(sizes) and sizes[value] >= _least_area(labels):
                counts[value] = _number_parts(labels, value, self._ids, self._next)
                self._next += counts[value]
            else:  # too few pixels for any region: all speckle
                self._ids[labels == value] = 0
        found = self._next - first
        if found == 0:
            return
        fresh = self._ids if first == 1 else np.where(self._ids >= first,
                                                      self._ids - (first - 1), 0)
        sums, weights = region_sums(self.features, fresh, found)
        start = 0
        for value, count in counts.items():
            if count:
                self._parts[value] = (first + start, sums[start : start + count],
                                      weights[start : start + count])
                start += count

    def select(self, fixed: Collection[int] = ()
               ) -> tuple[np.ndarray, np.ndarray, torch.Tensor, torch.Tensor]:
        """(ids, owners) as `label_regions(labels, fixed)` of the last `sync`, with each
        region's feature sum [R, D] and weight [R] as `region_sums` gives them."""
        lut = np.zeros(self._next, np.int32)
        owners: list[int] = []
        sums, weights = [], []
        for value in sorted(self._parts):
            if value in fixed:
                continue
            key, s, w = self._parts[value]
            lut[key : key + len(w)] = np.arange(len(owners) + 1, len(owners) + 1 + len(w))
            owners += [value] * len(w)
            sums.append(s)
            weights.append(w)
        if not owners:
            f = self.features.dense_features
            return (np.zeros(self._ids.shape, np.int32), np.zeros(0, np.int64),
                    f.new_zeros(0, f.shape[1]).float(), f.new_zeros(0).float())
        if np.array_equal(lut, np.arange(len(lut))):  # every region, in key order
            ids = self._ids.view()
            ids.flags.writeable = False  # the cache's own map: read it, never change it
        else:
            ids = lut[self._ids]
        return ids, np.asarray(owners, np.int64), torch.cat(sums), torch.cat(weights)


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
    regions: FrameRegions | None = None,
) -> tuple[np.ndarray, IdentityChoice]:
    """`labels` with concept `own` on at most one region, found as the module doc says;
    `rivals` [R, D]: other concepts of the same base word; `fixed`: labels never taken (the
    other concepts'). Every other concept pixel, speckle included, gets `base`; with `base`
    None (the base word is not in the vocabulary) `UNDECIDED`, for the caller to fill.
    `features` is this image's (batch of one); `regions`: the frame's `FrameRegions` of the
    same features when several concepts are decided in turn (None: found here)."""
    out = labels.copy()
    out[labels == own] = UNDECIDED if base is None else base
    if regions is None:
        regions = FrameRegions(features)
    with torch.no_grad():
        regions.sync(labels)
        ids, owners, sums, weights = regions.select(fixed)
    n = len(owners)
    if n == 0:
        return out, IdentityChoice(math.nan, False, 0)
    with torch.no_grad():
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
