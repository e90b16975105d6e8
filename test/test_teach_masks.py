"""Teach masks as a robot operator gives them: a box or a point per shot (or one for the newest
shot), automatic masks that say why a frame was rejected, and the review picture. The small
synthetic-world model on real SYN^per scenes, whose true masks are exact."""

from __future__ import annotations

import math
import re
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
from _small_model import engine_on

from povss_lab.eval.datasets.synper import SynPer
from povss_lab.eval.prompt_masks import prompts_from_truth
from povss_lab.synthetic.world import World, sample_scene
from povss_ros import PerceptionEngine, Segmenter, TeachRequest
from povss_ros.personal.teach import TeachConfig
from povss_ros.teaching.learn import gather_shots
from povss_ros.teaching.review import TILE_HEIGHT
from povss_ros.teaching.shot_masks import box_mask, box_pixels, look, point_mask
from povss_ros.vis import HIGHLIGHTS

ROOT = Path(__file__).resolve().parents[1]
FAST = TeachConfig(iterations=3, num_points=256)
TITLE = 22  # height of `vis.titled`'s bar


def _engine(segmenter: Segmenter, root: Path, **teach: float) -> PerceptionEngine:
    return engine_on(segmenter, root, replace(FAST, **teach))


def _iou(a: np.ndarray | None, b: np.ndarray) -> float:
    return 0.0 if a is None else float((a & b).sum() / (a | b).sum())


def _scenes(synper: SynPer, n: int) -> list:
    """(sample, base class) of the second positive scene of the first n concepts."""
    specs = synper.concepts()[:n]
    return [(synper.sample(s.positive_ids[1]), s.base_class) for s in specs]


def _stored(root: Path) -> list[Path]:
    return [p for p in root.iterdir() if p.is_dir()] if root.exists() else []


# ---------------------------------------------------------------- prompt masks


def test_a_box_or_a_point_on_the_true_object_gives_its_mask(small_segmenter, synper):
    box_ious, point_ious, rect_ious = [], [], []
    for sample, _ in _scenes(synper, 8):
        truth = sample.personal_mask
        view = look(small_segmenter, sample.image)
        box, point = prompts_from_truth(truth)
        box_ious.append(_iou(box_mask(view, box)[0], truth))
        point_ious.append(_iou(point_mask(view, point)[0], truth))
        rect_ious.append(_iou(box_pixels(box, truth.shape), truth))
    assert min(box_ious) > 0.4 and np.mean(box_ious) > 0.7, box_ious
    assert min(point_ious) > 0.4 and np.mean(point_ious) > 0.7, point_ious
    assert np.mean(box_ious) > np.mean(rect_ious) + 0.05  # the model's regions, not the box


def test_a_prompt_on_another_object_gives_that_object_not_mine(small_segmenter, synper):
    sample, base = _scenes(synper, 1)[0]
    words = synper.vocabulary
    other = None  # the largest visible object of another thing class
    for cid in np.unique(sample.semantic):
        if words[cid] in synper.world.thing_classes and words[cid] != base:
            count, comp = cv2.connectedComponents((sample.semantic == cid).astype(np.uint8))
            for k in range(1, count):
                if other is None or (comp == k).sum() > other.sum():
                    other = comp == k
    assert other is not None and other.sum() > 500
    view = look(small_segmenter, sample.image)
    box, point = prompts_from_truth(other)
    for mask, _ in (box_mask(view, box), point_mask(view, point)):
        assert _iou(mask, other) > 0.5
        assert _iou(mask, sample.personal_mask) < 0.05


def test_one_prompt_marks_the_newest_captured_frame_only(small_segmenter, synper, tmp_path):
    (old, _), (middle, _), (new, base) = _scenes(synper, 3)
    engine = _engine(small_segmenter, tmp_path, auto_min_score=0.0, auto_dominance=1.0)
    teach_mask = np.zeros(old.image.shape[:2], np.uint8)
    teach_mask[10:60, 20:90] = 255
    for stamp, sample in enumerate((old, middle, new), start=1):
        engine.capture.add_frame(stamp * 10**9, sample.image)
    engine.capture.add_mask(10**9, teach_mask)  # the operator's mask for the oldest frame
    box, _ = prompts_from_truth(new.personal_mask)
    request = TeachRequest("my thing", base, num_frames=3, boxes=[box])
    got = gather_shots(small_segmenter, request, engine.capture.recent(3), base, 0.0, 1.0)
    assert len(got.masks) == 3 and got.rejected == []
    assert np.array_equal(got.masks[0], teach_mask)  # stamp-matched mask kept
    auto, _ = engine.auto_mask(middle.image, base)
    assert np.array_equal(got.masks[1], auto)  # automatic, as without prompts
    assert _iou(got.masks[2], new.personal_mask) > 0.6  # the box's object
    outcome = engine.teach(request)
    assert outcome.success, outcome.message
    assert outcome.shots_used == 3 and outcome.frames_rejected == 0


def test_one_prompt_per_shot_marks_each_explicit_image(small_segmenter, synper, tmp_path):
    scenes = _scenes(synper, 2)
    base = scenes[0][1]
    points = [prompts_from_truth(s.personal_mask)[1] for s, _ in scenes]
    request = TeachRequest("my thing", base, [s.image for s, _ in scenes], points=points)
    got = gather_shots(small_segmenter, request, [], base, 0.3, 2.0)
    for mask, (sample, _) in zip(got.masks, scenes):
        assert _iou(mask, sample.personal_mask) > 0.6
    outcome = _engine(small_segmenter, tmp_path).teach(request)
    assert outcome.success and outcome.shots_used == 2, outcome.message


BAD_PROMPTS = [
    ({"boxes": [(1, 1, 50, 50)], "points": [(5, 5)]}, "boxes or points, not both"),
    ({"boxes": [(1, 1, 50, 50)] * 2}, r"2 boxes for 3 shots: give one per shot"),
    ({"points": [(5, 5)] * 4}, r"4 points for 3 shots"),
    ({"boxes": [(1, 1, 50, 50), (1, 1, 50, 50), (300, 10, 330, 40)]},
     r"box for image 2 .*outside the 320x240 image"),
    ({"boxes": [(-1, 1, 50, 50)]}, "outside the 320x240 image"),
    ({"boxes": [(40, 10, 40, 50)]}, "degenerate box"),
    ({"boxes": [(60, 10, 40, 50)]}, "degenerate box"),
    ({"boxes": [(10, 10, math.nan, 50)]}, "finite"),
    ({"points": [(10, math.inf)]}, "finite"),
    ({"points": [(320, 10)]}, r"point for image 2 .*outside the 320x240 image"),
    ({"points": [(10, -0.5)]}, "outside"),
    ({"points": [(10, 10, 3)]}, "a point is 2 numbers"),
]


@pytest.mark.parametrize(("prompts", "message"), BAD_PROMPTS)
def test_a_bad_prompt_is_refused_with_a_clear_message_and_stores_nothing(
    small_segmenter, synper, tmp_path, prompts, message
):
    engine = _engine(small_segmenter, tmp_path)
    images = [s.image for s, _ in _scenes(synper, 3)]
    outcome = engine.teach(TeachRequest("my mug", "mug", images, **prompts))
    assert not outcome.success
    assert re.search(message, outcome.message), outcome.message
    assert _stored(tmp_path) == [] and engine.segmenter.concepts == ()


def test_prompts_with_explicit_masks_are_refused(small_segmenter, synper, tmp_path):
    sample, base = _scenes(synper, 1)[0]
    engine = _engine(small_segmenter, tmp_path)
    request = TeachRequest("my mug", base, [sample.image], [sample.personal_mask],
                           points=[prompts_from_truth(sample.personal_mask)[1]])
    outcome = engine.teach(request)
    assert not outcome.success and "points and explicit masks together" in outcome.message
    assert _stored(tmp_path) == []


# ---------------------------------------------------------------- rejected frames, review


def _without(world: World, base: str, seed: int) -> np.ndarray:
    """A scene holding no object of class `base`."""
    return sample_scene(np.random.default_rng(seed), world, exclude=world.identities(base)).image


def _tiles(review: np.ndarray, widths: list[int]) -> list[np.ndarray]:
    edges = np.cumsum([0, *widths])
    return [review[:, a:b] for a, b in zip(edges[:-1], edges[1:])]


def test_rejected_frames_are_listed_with_reasons_and_shown(small_segmenter, synper, tmp_path):
    sample, base = _scenes(synper, 1)[0]  # my mug's scene: one mug, found automatically
    images = [sample.image, _without(synper.world, base, 1), _without(synper.world, base, 2)]
    engine = _engine(small_segmenter, tmp_path, auto_min_score=0.0, auto_dominance=1.0)
    outcome = engine.teach(TeachRequest("my mug", base, images))
    assert outcome.success, outcome.message
    assert outcome.shots_used == 1 and outcome.frames_rejected == 2
    assert outcome.rejected_frames == [f"image 1: no {base!r} found", f"image 2: no {base!r} found"]
    assert all(r in outcome.message for r in outcome.rejected_frames)
    review = outcome.review
    assert review.dtype == np.uint8 and review.shape[2] == 3
    assert review.shape[1] == 3 * images[0].shape[1]  # three tiles side by side
    used, *rejected = _tiles(review, [images[0].shape[1]] * 3)
    body = used[TITLE : TITLE + TILE_HEIGHT]
    assert (body == HIGHLIGHTS[0]).all(axis=2).sum() > 50  # the chosen mask's outline
    for tile, image in zip(rejected, images[1:]):  # what the model sees there, and a legend
        assert (tile[TITLE : TITLE + TILE_HEIGHT] != image).any(axis=2).mean() > 0.5
        assert (tile[TITLE + TILE_HEIGHT :] != 32).any()


def test_a_teach_without_usable_shots_still_explains_itself(small_segmenter, synper, tmp_path):
    images = [_without(synper.world, "mug", s) for s in (3, 4)]
    engine = _engine(small_segmenter, tmp_path)
    outcome = engine.teach(TeachRequest("my mug", "mug", images))
    assert not outcome.success and outcome.message.startswith("no usable shots")
    assert outcome.frames_rejected == len(outcome.rejected_frames) == 2
    assert outcome.review is not None and outcome.review.shape[1] == 2 * images[0].shape[1]
    assert _stored(tmp_path) == []


def test_ambiguous_frames_number_their_candidate_regions(small_segmenter, synper, tmp_path):
    """A scene with my mug and its twin: with a strict dominance the frame is rejected as
    ambiguous, and its tile outlines the two strongest mug regions in highlight colours."""
    specs = synper.concepts()
    spec = specs[0]
    twin = next(synper.sample(s) for s in spec.positive_ids
                if _base_regions(small_segmenter, synper.sample(s).image, spec.base_class) >= 2)
    engine = _engine(small_segmenter, tmp_path, auto_min_score=0.0, auto_dominance=1000.0)
    outcome = engine.teach(TeachRequest("my mug", spec.base_class, [twin.image]))
    assert not outcome.success
    reason = outcome.rejected_frames[0]
    assert reason.startswith("image 0: ambiguous: ") and "region 2 scores" in reason
    body = outcome.review[TITLE : TITLE + TILE_HEIGHT]
    for color in HIGHLIGHTS[:2]:  # the two strongest regions, outlined
        assert (body == color).all(axis=2).sum() > 20


def _base_regions(small_segmenter: Segmenter, image: np.ndarray, base: str) -> int:
    labels = look(small_segmenter, image, proposals=False).segmentation.labels
    count, comp = cv2.connectedComponents((labels == small_segmenter.vocabulary.index(base)).astype(
        np.uint8))
    return sum((comp == k).sum() >= 50 for k in range(1, count))


def test_a_used_prompt_frame_shows_its_box(small_segmenter, synper, tmp_path):
    sample, base = _scenes(synper, 1)[0]
    box, _ = prompts_from_truth(sample.personal_mask)
    outcome = _engine(small_segmenter, tmp_path).teach(
        TeachRequest("my mug", base, [sample.image], boxes=[box]))
    assert outcome.success and outcome.rejected_frames == []
    body = outcome.review[TITLE:]
    x0, y0, x1, y1 = (int(v) for v in box)
    assert tuple(body[y0, (x0 + x1) // 2]) == HIGHLIGHTS[1]  # the box's top edge
