"""Several personal concepts in one frame: each decides as if it were alone, then fuse.

Decoding every concept in one softmax (`personal_logits` with all of them) lets them hurt
each other: two rows near the same mask split its class probability, and every concept's
negative proposal, a mask over nearly the whole image, hands a share of its probability to
the other concepts' rows, which its loss never saw (docs/experiments.md, section 7).

So with two or more concepts, concept j claims the pixels where SAN with the vocabulary and
concept j alone (its row, its negative proposal) labels it: the decision its teaching
optimized and the one the evaluation measures. A pixel claimed by several concepts goes to
the highest score, each concept's own SAN score (sum over masks of P(class) x P(mask)). The
remaining pixels keep plain SAN's open-vocabulary labels and scores, bit for bit. One
concept decodes as the paper does (`personal_logits`).

Cost: per band of rows, one [pixels, N] x [N, 3C] product gives every concept's score and
bounds on the best word's score beside it; the full [pixels, V] scores of concept j are formed
only where the bounds leave the answer open (bench/bench_teach.py times it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..san.model import SAN, BatchGeometry
from ..san.semantic import BestClass, band_rows, class_probs, mask_bands, semantic_argmax
from .concept import Concept, layout, personal_logits


def decode_concepts(
    model: SAN,
    text_rows: torch.Tensor,
    concepts: Sequence[Concept],
    z: torch.Tensor,
    m: torch.Tensor,
    geometry: BatchGeometry,
    index: int = 0,
    joint: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(confidence [H, W], labels [H, W]) for one image; label V+j is ``concepts[j]``.

    ``z`` [1, N, D] and ``m`` [1, N, h, w] are SAN's open mask embeddings and logits. With
    at most one scored concept, or ``joint`` (every concept in one softmax: kept to measure
    what the fusion changes), this is `personal_logits` + SAN's semantic argmax; otherwise
    the per-concept fusion of the module doc. Either way an inert concept whose base word is
    in the vocabulary gets no label of its own: it *is* that word (`concept.layout`).
    """
    plan = layout(text_rows, concepts)
    if joint or len(plan.active) <= 1:
        logits, m_ext, ids = personal_logits(model, text_rows, concepts, z, m)
        confidence, labels = semantic_argmax(logits[0], m_ext[0], geometry, index)
        return confidence, ids[labels]
    v, n = text_rows.shape[0], m.shape[1]
    probs_open = class_probs(model.class_logits(z, model.class_rows(text_rows))[0])  # [N, V]
    ids, deciders, negatives = [], [], []
    for j, concept in enumerate(concepts):
        if j not in plan.aliases:
            logits, m_ext, _ = personal_logits(model, text_rows, [concept], z, m)
            ids.append(v + j)
            # [N(+1), V+1]: the row after the N open masks is its negative mask's
            deciders.append(class_probs(logits[0]))
            negatives.append(m_ext[0, n:])  # [0 or 1, h, w]
    oh, ow = geometry.original_hw[index]
    claims = _Claims(probs_open, deciders, negatives, n, band_rows(m.device) * ow)
    confidence = torch.empty(oh * ow, device=m.device)
    labels = torch.empty(oh * ow, dtype=torch.long, device=m.device)
    ids_t = torch.tensor(ids, device=m.device)
    # Open and negative masks resized separately: the open bands are then exactly plain
    # SAN's, so unclaimed pixels get plain SAN's label and confidence bit for bit.
    open_bands = mask_bands(m[0], geometry, index)
    neg_bands = (mask_bands(torch.cat(negatives), geometry, index)
                 if claims.has_neg else None)
    for span, band in open_bands:
        neg_band = next(neg_bands)[1] if neg_bands is not None else None
        conf, plain, best, winner = claims.decide(band, neg_band)
        claimed = best >= 0
        confidence[span] = torch.where(claimed, best, conf)
        labels[span] = torch.where(claimed, ids_t[winner], plain)
    return confidence.view(oh, ow), labels.view(oh, ow)


class _Claims:
    """Which concept, if any, claims each pixel of a band of rows (see the module doc).

    Concept i claims a pixel when its score beats every word's score beside it. Joining the
    softmax of mask q moves each word's probability down by at most drop[q] and up by at most
    rise[q], so beside concept i the best word's score lies within [conf - sum_q drop[q]
    mask_q, conf + sum_q rise[q] mask_q + its negative mask's share], conf being plain SAN's
    best score. One product per band gives every concept's score and both bounds; only pixels
    inside the interval need the concept's full [P, V] scores.
    """

    # Score every pixel with each concept's words instead of only the undecided ones: None =
    # on a GPU (selecting pixels would stall the frame on the host), else only the undecided.
    score_all: bool | None = None

    def __init__(self, probs_open: torch.Tensor, deciders: list[torch.Tensor],
                 negatives: list[torch.Tensor], n: int, band_pixels: int) -> None:
        self.open_best = BestClass(probs_open, band_pixels)  # plain SAN's, as semantic_argmax
        self.deciders, self.n = deciders, n
        self.k = len(deciders)
        mine_open = torch.stack([p[:n, -1] for p in deciders], 1)  # [N, K]
        drop = torch.stack([(probs_open - p[:n, :-1]).clamp(min=0).amax(1) for p in deciders], 1)
        rise = torch.stack([(p[:n, :-1] - probs_open).clamp(min=0).amax(1) for p in deciders], 1)
        self.weights = torch.cat([mine_open, drop, rise], 1)
        self.has_neg = [i for i, neg in enumerate(negatives) if len(neg)]
        if self.has_neg:
            self.neg_mine = torch.stack([deciders[i][n, -1] for i in self.has_neg])
            self.neg_word = torch.stack([deciders[i][n, :-1].max() for i in self.has_neg])

    def decide(self, band: torch.Tensor, neg_band: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(plain SAN's score and label, the winning concept's score or -1, its index) per
        pixel of `band` [P, N] (open masks) and `neg_band` [P, K'] (negative masks)."""
        k, has_neg = self.k, self.has_neg
        conf, plain = self.open_best(band)  # plain SAN's, bit for bit
        both = band @ self.weights
        mine, low, high = both[:, :k].clone(), both[:, k : 2 * k], both[:, 2 * k :].clone()
        if neg_band is not None:
            mine[:, has_neg] += neg_band * self.neg_mine
            high[:, has_neg] += neg_band * self.neg_word
        slack = 1e-5 * (1.0 + conf[:, None])  # float rounding must never decide a claim
        loses = mine <= conf[:, None] - low - slack  # plain SAN's word still beats it
        wins = mine > conf[:, None] + high + slack  # beats every word's highest possible score
        claims = wins.clone()
        every = band.is_cuda if self.score_all is None else self.score_all
        for i in range(k):
            # The bounds settle most pixels; the rest need concept i's own words (scoring all
            # pixels instead gives the same claims: the bounds are exact; `score_all`).
            if every:
                where = torch.arange(band.shape[0], device=band.device)
            else:
                where = (~loses[:, i] & ~wins[:, i]).nonzero().squeeze(1)
            if where.numel():
                masks = band[where]
                if i in has_neg:
                    masks = torch.cat([masks, neg_band[where, has_neg.index(i), None]], 1)
                words = (masks @ self.deciders[i][:, :-1]).max(dim=1).values
                decided = mine[where, i] > words  # ties go to the word, as in SAN
                claims[where, i] = decided if not every else torch.where(
                    loses[:, i], False, torch.where(wins[:, i], True, decided))
        scores = torch.where(claims, mine, -1.0)
        best, winner = scores.max(dim=1)  # ties: the first concept
        return conf, plain, best, winner
