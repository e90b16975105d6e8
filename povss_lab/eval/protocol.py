"""The paper's K-shot episode protocol (numpy only).

For one personal concept: K shots are drawn from the images that contain it (positives); the
test set is the remaining positives plus as many images WITHOUT the concept (negatives: same
base class, other instance/species), because a personalized model must also be judged on what
it wrongly claims (paper Sec. 4.1). The "concat" variant (supp. B.4) puts one positive and one
negative side by side in a single input.

Everything is driven by one ``numpy.random.Generator`` seeded by ``seed``, so an episode is a
pure function of (ids, k, seed): results are reproducible and comparable across methods, which
must all see the same shots and the same test images.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Episode", "concat_pairs", "make_episode", "side_by_side"]


@dataclass(frozen=True)
class Episode:
    """One K-shot split. All id tuples are pairwise disjoint and keep the caller's input order.

    ``dropped_positives`` lists the remaining positives left out of the test set because there
    were fewer negatives than test positives (the test set is kept balanced); it is empty in the
    normal case, and ``truncated`` says whether that happened.
    """

    shots: tuple
    test_positive: tuple
    test_negative: tuple
    dropped_positives: tuple = ()
    k: int = 0
    seed: int = 0

    @property
    def truncated(self) -> bool:
        """True when positives were dropped to match the number of negatives."""
        return len(self.dropped_positives) > 0

    @property
    def test_ids(self) -> tuple:
        """Positives then negatives: the full test set."""
        return self.test_positive + self.test_negative


def _check_ids(name: str, ids: Sequence[Hashable]) -> list:
    ids = list(ids)
    seen: set = set()
    dups = []
    for i in ids:
        if i in seen:
            dups.append(i)
        seen.add(i)
    if dups:
        raise ValueError(f"{name} contains duplicate ids (first few: {dups[:5]})")
    return ids


def make_episode(
    positive_ids: Sequence[Hashable],
    negative_ids: Sequence[Hashable],
    k: int,
    seed: int,
) -> Episode:
    """Draw K shots from the positives and build a balanced test set.

    The shots are ``k`` positives drawn with ``numpy.random.default_rng(seed)``; the test
    positives are all remaining positives; the test negatives are as many negatives, drawn with
    the same generator. If there are fewer negatives than remaining positives, all negatives are
    used and the test positives are cut (at random, same generator) to the same count, the cut
    ones being recorded in :attr:`Episode.dropped_positives`.

    Raises ValueError if ``k < 1``, if ``k >= len(positive_ids)`` (at least one positive must
    remain for testing), if there are no negatives, or if ids repeat or appear on both sides.
    """
    pos = _check_ids("positive_ids", positive_ids)
    neg = _check_ids("negative_ids", negative_ids)
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if k >= len(pos):
        raise ValueError(
            f"k={k} shots need at least {k + 1} positive images (one left to test), got {len(pos)}"
        )
    if not neg:
        raise ValueError("no negative images: the protocol needs a balanced test set")
    both = set(pos) & set(neg)
    if both:
        raise ValueError(f"ids are both positive and negative (first few: {list(both)[:5]})")

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pos))
    shot_idx = np.sort(order[:k])
    rest = order[k:]  # random order: a prefix of it is a random subset
    n_test = min(len(rest), len(neg))
    test_idx = np.sort(rest[:n_test])
    drop_idx = np.sort(rest[n_test:])
    neg_idx = np.sort(rng.permutation(len(neg))[:n_test])

    return Episode(
        shots=tuple(pos[i] for i in shot_idx),
        test_positive=tuple(pos[i] for i in test_idx),
        test_negative=tuple(neg[i] for i in neg_idx),
        dropped_positives=tuple(pos[i] for i in drop_idx),
        k=k,
        seed=int(seed),
    )


def concat_pairs(
    test_positive: Sequence[Hashable], test_negative: Sequence[Hashable], seed: int
) -> list[tuple[Hashable, Hashable]]:
    """Pair every test positive with a distinct negative for the "concat" variant.

    Returns ``[(positive, negative), ...]`` in the order of ``test_positive``; the positive
    goes on the left (:func:`side_by_side`). Negatives are assigned by a permutation drawn from
    ``numpy.random.default_rng(seed)``, so no negative is used twice. Raises ValueError if there
    are fewer negatives than positives.
    """
    pos = _check_ids("test_positive", test_positive)
    neg = _check_ids("test_negative", test_negative)
    if len(neg) < len(pos):
        raise ValueError(
            f"concat needs one distinct negative per positive: {len(pos)} positives, "
            f"{len(neg)} negatives"
        )
    perm = np.random.default_rng(seed).permutation(len(neg))[: len(pos)]
    return [(p, neg[j]) for p, j in zip(pos, perm)]


def side_by_side(left: np.ndarray, right: np.ndarray, fill: int | float = 0) -> np.ndarray:
    """Concatenate two images or label maps horizontally ([H, W] or [H, W, C]).

    A shorter one is padded at the bottom with ``fill`` (use the ignore index for label maps,
    so padding is never scored); resize beforehand if equal sizes are preferred.
    """
    left = np.asarray(left)
    right = np.asarray(right)
    if left.ndim not in (2, 3) or left.ndim != right.ndim or left.shape[2:] != right.shape[2:]:
        raise ValueError(f"incompatible shapes for side by side: {left.shape} and {right.shape}")
    h = max(left.shape[0], right.shape[0])
    dtype = np.result_type(left.dtype, right.dtype)

    def pad(x: np.ndarray) -> np.ndarray:
        out = np.full((h,) + x.shape[1:], fill, dtype=dtype)
        out[: x.shape[0]] = x
        return out

    return np.concatenate([pad(left), pad(right)], axis=1)
