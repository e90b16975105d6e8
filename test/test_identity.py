"""Which region is MINE (`personal.identity`): at most one region per concept, the one whose
dense features match the shots; look-alikes go back to the base class; absent when nothing
matches. Hand-made frames with known features, then the segmenter's decode path."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from povss_ros.personal.concept import Concept
from povss_ros.personal.identity import (
    PART_SIMILARITY,
    UNDECIDED,
    FrameRegions,
    keep_one,
    label_regions,
    uses_identity,
)
from povss_ros.personal.shots import region_embedding, region_sums
from povss_ros.san.model import BatchGeometry, SANFeatures

H, W, CELL, D = 40, 60, 4, 4  # dense grid cells of 4x4 pixels, 4 feature channels
OWN, BASE, OTHER = 5, 2, 0
E = torch.eye(D)

# Three objects on a background: A and B labelled the concept, C its base class.
BLOBS = {"A": (slice(4, 12), slice(4, 16)), "B": (slice(4, 12), slice(36, 48)),
         "C": (slice(24, 36), slice(20, 32))}


def _frame(features_of: dict[str, torch.Tensor]) -> tuple[np.ndarray, SANFeatures]:
    labels = np.full((H, W), OTHER, np.uint16)
    dense = E[3].reshape(D, 1, 1).repeat(1, H // CELL, W // CELL).clone()  # background
    for name, (ys, xs) in BLOBS.items():
        labels[ys, xs] = BASE if name == "C" else OWN
        grid = (slice(ys.start // CELL, ys.stop // CELL), slice(xs.start // CELL, xs.stop // CELL))
        dense[:, grid[0], grid[1]] = features_of[name].reshape(D, 1, 1)
    geometry = BatchGeometry(((H, W),), ((H, W),), (H, W))
    return labels, SANFeatures(torch.zeros(1, 1, D), torch.zeros(1, 1, 1, 1), dense[None],
                               geometry)


def _concept(prototype: torch.Tensor, unique: bool = True) -> Concept:
    concept = Concept("my mug", "mug", torch.ones(1, D), 1, unique=unique)
    concept.f_per.copy_(prototype.reshape(1, D))
    return concept


def test_region_embedding_is_the_mean_feature_inside_the_region():
    _, features = _frame({"A": E[0], "B": E[1], "C": E[2]})
    mask = np.zeros((H, W), bool)
    mask[BLOBS["A"]] = True
    assert torch.allclose(region_embedding(features, mask), E[0])
    half = np.zeros((H, W), bool)
    half[4:12, 8:24] = True  # half on A (cells 2-3), half on background (cells 4-5)
    assert torch.allclose(region_embedding(features, half), (E[0] + E[3]) / 2)
    assert torch.equal(region_embedding(features, np.zeros((H, W), bool)), torch.zeros(D))


def test_region_sums_pool_every_region_at_once_and_add_over_unions():
    _, features = _frame({"A": E[0], "B": E[1], "C": E[2]})
    ids = np.zeros((H, W), np.int32)
    for r, name in enumerate("ABC", start=1):
        ids[BLOBS[name]] = r
    ids[20, 0] = 40  # ids 4-39 absent, 40 present: every id is pooled, none shifted
    sums, weights = region_sums(features, ids, 40)
    assert sums.shape == (40, D) and weights.shape == (40,)
    for r, name in enumerate("ABC"):
        mask = np.zeros((H, W), bool)
        mask[BLOBS[name]] = True
        assert torch.allclose(sums[r] / weights[r], region_embedding(features, mask))
    assert torch.all(weights[3:39] == 0) and weights[39] > 0  # absent ids weigh nothing
    both = (ids == 1) | (ids == 2)
    assert torch.allclose((sums[0] + sums[1]) / (weights[0] + weights[1]),
                          region_embedding(features, both))


def _assert_regions_as_found_afresh(regions: FrameRegions, labels: np.ndarray,
                                    features: SANFeatures) -> None:
    for fixed in ((), (OWN,), (BASE, 7), tuple(range(12))):
        ids, owners, sums, weights = regions.select(fixed)
        expected_ids, expected_owners = label_regions(labels, fixed)
        np.testing.assert_array_equal(ids, expected_ids)
        np.testing.assert_array_equal(owners, expected_owners)
        expected_sums, expected_weights = region_sums(features, expected_ids, len(owners))
        torch.testing.assert_close(sums, expected_sums)
        torch.testing.assert_close(weights, expected_weights)


def test_a_frames_regions_kept_up_to_date_are_the_regions_found_afresh():
    """`FrameRegions` finds again only the labels a decision changed; whatever changed, each
    selection is what `label_regions` and `region_sums` give on the new label map."""
    rng = np.random.default_rng(3)
    _, features = _frame({"A": E[0], "B": E[1], "C": E[2]})
    features.dense_features.copy_(torch.randn_like(features.dense_features))
    labels = np.kron(rng.integers(0, 8, (H // 4, W // 6)), np.ones((4, 6), np.int64))
    labels = labels.astype(np.uint16)
    labels[rng.random((H, W)) < 0.02] = 9  # speckle of its own label
    regions = FrameRegions(features)
    regions.sync(labels)
    _assert_regions_as_found_afresh(regions, labels, features)
    steps = [
        lambda x: np.where(x == OWN, BASE, x),  # a concept's pixels go to its base word
        lambda x: np.where(x == 3, 11, x),  # a label gone, a new one in its place
        lambda x: np.where((x == BASE) & (rng.random(x.shape) < 0.9), OTHER, x),  # broken up
        lambda x: x,  # nothing changed
    ]
    for step in steps:
        labels = step(labels).astype(np.uint16)
        regions.sync(labels)
        _assert_regions_as_found_afresh(regions, labels, features)


def test_the_region_most_like_the_shots_becomes_the_concept_whole():
    """My mug (C) was labelled the base class; the two look-alikes (A, B) the concept."""
    labels, features = _frame({"A": E[1], "B": E[2], "C": E[0]})
    out, choice = keep_one(labels, OWN, BASE, features, _concept(E[0]), min_similarity=0.9)
    assert choice.kept and choice.candidates == 1 and choice.similarity == pytest.approx(1.0)
    expected = np.full((H, W), OTHER, np.uint16)
    expected[BLOBS["A"]] = expected[BLOBS["B"]] = BASE  # look-alikes: "mug"
    expected[BLOBS["C"]] = OWN
    np.testing.assert_array_equal(out, expected)
    assert len(label_regions((out == OWN).astype(np.uint8), fixed=[0])[1]) == 1


def test_nothing_like_the_shots_in_view_means_absent():
    labels, features = _frame({"A": E[1], "B": E[2], "C": E[1]})
    out, choice = keep_one(labels, OWN, BASE, features, _concept(E[0] + 0.1 * E[1]),
                           min_similarity=0.5)
    assert not choice.kept and math.isnan(choice.similarity)  # no region even a part of it
    assert not (out == OWN).any()
    assert (out[BLOBS["A"]] == BASE).all() and (out[BLOBS["C"]] == BASE).all()


def test_without_a_base_word_the_pixels_taken_away_are_left_undecided():
    labels, features = _frame({"A": E[0], "B": E[1], "C": E[2]})
    labels[BLOBS["C"]] = OTHER  # no base word
    out, choice = keep_one(labels, OWN, None, features, _concept(E[0]), min_similarity=0.9)
    assert choice.candidates == 1 and choice.kept
    assert (out[BLOBS["A"]] == OWN).all() and (out[BLOBS["B"]] == UNDECIDED).all()


def test_speckle_is_no_candidate_and_no_region_is_no_choice():
    labels = np.full((H, W), OTHER, np.uint16)
    labels[0, 0] = OWN  # one pixel: under MIN_REGION_FRACTION of the frame
    _, features = _frame({"A": E[0], "B": E[1], "C": E[2]})
    out, choice = keep_one(labels, OWN, BASE, features, _concept(E[0]))
    assert choice.candidates == 0 and math.isnan(choice.similarity) and not choice.kept
    assert out[0, 0] == BASE and not (out == OWN).any()  # the speckle is not the concept


def test_which_concepts_are_decided_by_identity():
    assert uses_identity(_concept(E[0]))
    assert not uses_identity(_concept(E[0], unique=False))  # a small category
    assert not uses_identity(_concept(torch.zeros(D)))  # no shots to compare with
    inert = _concept(E[0])
    inert.use_prompt = inert.use_negative = inert.use_visual = False  # SAN alone, bit for bit
    assert not uses_identity(inert)


def test_a_region_nearer_a_marked_look_alike_than_my_shots_is_never_chosen():
    """A (labelled the concept) is 0.94 like my shots but identical to a look-alike marked
    "not this one"; C is a little less like my shots and like no look-alike: C wins."""
    mine = E[0]
    a = torch.nn.functional.normalize(E[0] + 0.35 * E[1], dim=0)
    c = torch.nn.functional.normalize(E[0] + 0.5 * E[2], dim=0)
    labels, features = _frame({"A": a, "B": E[3], "C": c})
    concept = _concept(mine)
    out, choice = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.8)
    assert choice.kept and (out[BLOBS["A"]] == OWN).all()  # without the mark: A
    concept.look_alikes = a.reshape(1, D).clone()
    out, choice = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.8)
    assert choice.kept and choice.similarity == pytest.approx(float(c @ mine))
    assert (out[BLOBS["C"]] == OWN).all() and (out[BLOBS["A"]] == BASE).all()
    concept.look_alikes = torch.stack([a, c])  # both marked: nothing is mine
    out, choice = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.8)
    assert not choice.kept and not (out == OWN).any()
    assert math.isnan(choice.similarity)  # both more like a look-alike: no candidate at all


def test_another_concept_of_the_same_base_word_is_a_rival():
    """"your mug" (its F_per like A) keeps "my mug" off A, which is a little like mine."""
    mine = E[0]
    a = torch.nn.functional.normalize(E[0] + 0.35 * E[1], dim=0)
    c = torch.nn.functional.normalize(E[0] + 0.5 * E[2], dim=0)
    labels, features = _frame({"A": a, "B": E[3], "C": c})
    out, choice = keep_one(labels, OWN, BASE, features, _concept(mine), min_similarity=0.8,
                           rivals=a.reshape(1, D))
    assert choice.kept and (out[BLOBS["C"]] == OWN).all() and (out[BLOBS["A"]] == BASE).all()


def _scene(parts: list[tuple[tuple[slice, slice], int, torch.Tensor]]
           ) -> tuple[np.ndarray, SANFeatures]:
    """A frame of labelled rectangles, each with one feature (cells of CELL pixels), on a
    background labelled OTHER with feature E[3]."""
    labels = np.full((H, W), OTHER, np.uint16)
    dense = E[3].reshape(D, 1, 1).repeat(1, H // CELL, W // CELL).clone()
    for (ys, xs), label, feature in parts:
        labels[ys, xs] = label
        dense[:, ys.start // CELL: ys.stop // CELL, xs.start // CELL: xs.stop // CELL] = \
            feature.reshape(D, 1, 1)
    geometry = BatchGeometry(((H, W),), ((H, W),), (H, W))
    return labels, SANFeatures(torch.zeros(1, 1, D), torch.zeros(1, 1, 1, 1), dense[None],
                               geometry)


VASE, TABLE = 3, 4
MINE_A = torch.nn.functional.normalize(E[0] + 0.3 * E[1], dim=0)  # two halves of my mug
MINE_B = torch.nn.functional.normalize(E[0] + 0.3 * E[2], dim=0)
LEFT, RIGHT = (slice(8, 24), slice(8, 20)), (slice(8, 24), slice(20, 32))


def test_my_object_split_between_words_is_joined_whole():
    """The classifier called my mug's left half "mug" and its right half "vase": one region
    of two words, and the grown region's own similarity decides."""
    labels, features = _scene([(LEFT, BASE, MINE_A), (RIGHT, VASE, MINE_B)])
    out, choice = keep_one(labels, OWN, BASE, features, _concept(E[0]), min_similarity=0.9)
    joined = torch.nn.functional.normalize(MINE_A + MINE_B, dim=0)
    assert choice.kept and choice.similarity == pytest.approx(float(joined @ E[0]))
    assert choice.similarity > float(MINE_A @ E[0])  # the whole is more like the shots
    assert (out[LEFT] == OWN).all() and (out[RIGHT] == OWN).all()
    assert (out[labels == OTHER] == OTHER).all()


def test_my_object_named_by_another_word_alone_is_found():
    """No pixel says "my mug" or "mug": the object labelled "vase" is still mine."""
    labels, features = _scene([(LEFT, VASE, MINE_A), ((slice(28, 36), slice(40, 52)), BASE,
                                                      E[2])])
    out, choice = keep_one(labels, OWN, BASE, features, _concept(E[0]), min_similarity=0.9)
    assert choice.kept and (out[LEFT] == OWN).all() and not (out[labels == BASE] == OWN).any()


def test_a_touching_region_more_like_the_surroundings_is_not_grown_over():
    """The table under my mug is a little like the mug (above PART_SIMILARITY) but more like
    what the shots showed around it: it stays the table."""
    table = torch.nn.functional.normalize(E[0] + 1.2 * E[3], dim=0)
    assert PART_SIMILARITY < float(table @ E[0]) < float(table @ E[3])
    labels, features = _scene([(LEFT, BASE, MINE_A), (RIGHT, TABLE, table)])
    concept = _concept(E[0])
    out, _ = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.8)
    assert (out[RIGHT] == OWN).all()  # without surroundings it looks like a part of my mug
    concept.surroundings = E[3].reshape(1, D).clone()
    out, choice = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.8)
    assert choice.kept and choice.similarity == pytest.approx(float(MINE_A @ E[0]))
    assert (out[LEFT] == OWN).all() and (out[RIGHT] == TABLE).all()


def test_a_touching_look_alike_is_not_grown_over_and_other_concepts_are_never_taken():
    """Two mugs side by side: mine (left) and one marked "not this one" (right) that is quite
    like mine; then the right one is another concept's region, which is never taken."""
    other = torch.nn.functional.normalize(E[0] + 0.6 * E[2], dim=0)
    labels, features = _scene([(LEFT, OWN, MINE_A), (RIGHT, BASE, other)])
    concept = _concept(E[0])
    concept.look_alikes = other.reshape(1, D).clone()
    out, choice = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.9)
    assert choice.kept and (out[LEFT] == OWN).all() and (out[RIGHT] == BASE).all()
    labels[RIGHT] = 9  # another concept's region, however like mine
    concept.look_alikes = torch.zeros(0, D)
    out, choice = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.9, fixed=[9])
    assert choice.kept and (out[LEFT] == OWN).all() and (out[RIGHT] == 9).all()


@pytest.mark.parametrize("hw, resized, padded", [((48, 64), (24, 32), (32, 32)),  # shrunk
                                                 ((30, 40), (48, 64), (64, 64)),  # enlarged
                                                 ((40, 60), (40, 60), (48, 64))])  # padded
def test_region_sums_pool_as_a_shot_mask_is_pooled(hw, resized, padded):
    """The separable pooling of every region at once equals the shot path (resize like the
    image, pad, area-average each cell: `_frame_target`), region by region."""
    from povss_ros.personal.shots import _frame_target

    rng = np.random.default_rng(7)
    coarse = rng.integers(0, 12, (hw[0] // 6 + 1, hw[1] // 6 + 1))
    ids = np.kron(coarse, np.ones((6, 6), np.int64))[: hw[0], : hw[1]]  # blocky regions 0..11
    grid = (padded[0] // 8, padded[1] // 8)
    features = SANFeatures(torch.zeros(1, 1, D), torch.zeros(1, 1, 1, 1),
                           torch.randn(1, D, *grid), BatchGeometry((hw,), (resized,), padded))
    sums, weights = region_sums(features, ids, 11)
    for r in range(1, 12):
        target = _frame_target(ids == r, features.geometry, torch.device("cpu"))
        w = torch.nn.functional.adaptive_avg_pool2d(target[None, None], grid)[0, 0]
        assert torch.allclose(weights[r - 1], w.sum(), atol=1e-5)
        assert torch.allclose(sums[r - 1], (features.dense_features[0] * w).sum(dim=(1, 2)),
                              atol=1e-5)


def test_a_region_like_a_marked_look_alike_never_seeds_my_object():
    """A "mug" region a little like my shots (0.78) but more like a marked look-alike
    touches a real part of my mug (0.71): the look-alike is not joined to the part, and the
    part alone is below the threshold, so nothing is mine."""
    look = torch.nn.functional.normalize(E[0] + 0.8 * E[1], dim=0)
    near = torch.nn.functional.normalize(E[0] + 0.7 * E[1] + 0.3 * E[2], dim=0)
    part = torch.nn.functional.normalize(E[0] + E[2], dim=0)
    assert float(near @ look) > float(near @ E[0]) > PART_SIMILARITY
    labels, features = _scene([(LEFT, BASE, near), (RIGHT, VASE, part)])
    concept = _concept(E[0])
    out, choice = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.72)
    assert choice.kept and (out[LEFT] == OWN).all()  # unmarked, the "mug" region is mine
    concept.look_alikes = look.reshape(1, D).clone()
    out, choice = keep_one(labels, OWN, BASE, features, concept, min_similarity=0.72)
    assert not choice.kept and not (out == OWN).any()
    assert choice.similarity == pytest.approx(float(part @ E[0]))  # the part alone: 0.71
