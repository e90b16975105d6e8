"""The identity evaluation (`povss_lab.eval.identity`): its measures on hand-made labels, its
composed look-alike scenes, and a tiny real run on world 0 whose offline thresholds must agree
with what `Segmenter.decode` does at that threshold."""

import math
from pathlib import Path

import numpy as np
import pytest

from povss_lab.eval import identity as ev
from povss_lab.eval.identity import Claim, Confusions, FrameRecord, claim, rates

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "models" / "syn_small.safetensors"


def _rec(target: bool, on: Claim, off: Claim, sim: float, target_px: int = 100) -> FrameRecord:
    return FrameRecord(0, "my mug", 5, 0, "f", target, 10_000, target_px if target else 0, 3,
                       sim, Claim(), off, on, [])


def test_claim_counts_pixels_and_8_connected_regions():
    mask = np.zeros((10, 10), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours: one region
    mask[6:8, 6:8] = True
    target = np.zeros_like(mask)
    target[6:9, 6:9] = True
    look = np.zeros_like(mask)
    look[0:3, 0:3] = True
    assert claim(mask, target, look) == Claim(pixels=6, tp=4, lookalike=2, regions=2)
    assert claim(np.zeros_like(mask), target, look) == Claim()


def test_rates_on_hand_made_claims():
    recs = [
        _rec(True, Claim(80, 80, 0, 1), Claim(150, 80, 70, 3), 0.9),  # off: most on target
        _rec(True, Claim(60, 0, 60, 1), Claim(100, 20, 80, 2), 0.7),  # both on a look-alike
        _rec(True, Claim(), Claim(), math.nan),  # nothing anywhere
        _rec(False, Claim(40, 0, 40, 1), Claim(40, 0, 40, 2), 0.6),  # 0.4% of the frame
        _rec(False, Claim(20, 0, 20, 1), Claim(20, 0, 20, 1), 0.5),  # 0.2%: not present
    ]
    off = rates(recs, "off")
    assert off["wrong"] == pytest.approx(1 / 2) and off["false_present"] == pytest.approx(1 / 2)
    assert off["recall"] == pytest.approx(1 / 3)  # IoU 80/170 only in the first frame
    assert off["regions"] == pytest.approx(5 / 3) and off["multi"] == pytest.approx(3 / 5)
    # TP 100; FP 70 + 80 + 40 + 20; FN 20 + 80 + 100.
    assert off["iou_per"] == pytest.approx(100 * 100 / (100 + 210 + 200))
    on = rates(recs, "on", 0.65)  # drops the two look-alike-only regions, keeps 0.7 and 0.9
    assert on["wrong"] == pytest.approx(1 / 2) and on["false_present"] == 0.0
    assert on["recall"] == pytest.approx(1 / 3) and on["multi"] == 0.0
    higher = rates(recs, "on", 0.8)
    assert higher["wrong"] == 0.0 and higher["regions"] == pytest.approx(1 / 3)
    assert higher["iou_per"] == pytest.approx(100 * 80 / (80 + 0 + 220))


def test_threshold_is_the_highest_that_keeps_95_percent_of_the_hits():
    hit = Claim(100, 100, 0, 1)
    sims = [round(0.5 + 0.01 * i, 2) for i in range(40)]  # 40 hits, similarities 0.50 .. 0.89
    recs = [_rec(True, hit, hit, s) for s in sims] + [_rec(False, Claim(50, 0, 50, 1),
                                                           Claim(), 0.55)]
    # Two of 40 hits may go (95%): 0.52 keeps 38; 0.53 keeps 37.
    assert ev.choose_threshold(recs) == pytest.approx(0.52)
    assert ev.choose_threshold(recs, max_loss=0.0) == pytest.approx(0.5)


def test_miou_at_a_threshold_moves_kept_regions_to_the_personal_class():
    # Two classes and the personal one (id 2); base class 1. One frame, 10 pixels of gt 2 and
    # 5 of gt 1 in the region identity on keeps; with it dropped they are predicted 1.
    drop = np.array([[20, 0, 0], [0, 5, 0], [0, 10, 0]])
    conf = Confusions(drop, drop, drop)
    rec = _rec(True, Claim(15, 10, 5, 1), Claim(), 0.7)
    rec.base_id, rec.region_gt = 1, [0, 5, 10]
    kept = np.array([[20, 0, 0], [0, 0, 5], [0, 0, 10]])
    assert ev.miou_on(conf, [rec], 0.6) == pytest.approx(ev.miou(kept))
    assert ev.miou_on(conf, [rec], 0.8) == pytest.approx(ev.miou(drop))
    assert ev.miou(kept) == pytest.approx(100 * (1 + 0 + 10 / 15) / 3)


def test_lookalike_scenes_hold_exactly_the_chosen_objects_of_the_class():
    from povss_lab.synthetic.world import World

    world = World(0)
    mug = world.identity("mug", 3)
    mug_id = world.class_id("mug")
    with_target = ev.lookalike_scene(world, mug, 0, True)
    alone = ev.lookalike_scene(world, mug, 0, False)
    assert with_target.target.any() and with_target.lookalikes.any()
    assert not (with_target.target & with_target.lookalikes).any()
    np.testing.assert_array_equal(with_target.semantic == mug_id,
                                  with_target.target | with_target.lookalikes)
    assert not alone.target.any()
    np.testing.assert_array_equal(alone.semantic == mug_id, alone.lookalikes)
    again = ev.lookalike_scene(world, mug, 0, True)  # a pure function of its keys
    np.testing.assert_array_equal(again.image, with_target.image)


def test_negative_scenes_hold_one_look_alike_and_are_no_test_frame():
    from povss_lab.synthetic.world import World

    world = World(0)
    mug = world.identity("mug", 3)
    marks = ev.negative_scenes(world, mug, 2, (320, 240))
    tests = {ev.lookalike_scene(world, mug, j, t).frame_id for j in range(12) for t in (0, 1)}
    for f in marks:
        assert not f.target.any() and f.lookalikes.any() and f.frame_id not in tests
        np.testing.assert_array_equal(f.semantic == world.class_id("mug"), f.lookalikes)


@pytest.mark.skipif(not WEIGHTS.exists(), reason="needs models/syn_small.safetensors")
def test_a_marked_look_alike_is_taught_with_the_concept():
    records, confs, _ = ev.collect(0, str(WEIGHTS), ["mug"], 1, [1], [0], "cpu",
                                   lambda _: None, negatives=[0, 1])
    assert set(confs) == {(0, 1, 0, 0), (0, 1, 1, 0)}
    assert sorted(r.negatives for r in records) == [0, 0, 1, 1]
    assert all(r.teach_seconds > 0 for r in records)
    plain, marked = ([r for r in records if r.negatives == n and r.target][0] for n in (0, 1))
    assert plain.off != marked.off or plain.similarity != marked.similarity  # it changed


@pytest.mark.skipif(not WEIGHTS.exists(), reason="needs models/syn_small.safetensors")
def test_tiny_real_run_on_world_0(tmp_path):
    records, confs, shown = ev.collect(0, str(WEIGHTS), ["mug"], 1, [1], [0], "cpu",
                                       lambda _: None, keep=True)
    assert len(records) == 2 and len(shown) == 2 and set(confs) == {(0, 1, 0, 0)}
    t, n = sorted(records, key=lambda r: not r.target)
    assert t.target and t.target_px > 0 and not n.target and n.target_px == 0
    for r in records:
        assert r.on.regions <= 1  # identity on: one region at most, whatever the classifier
        assert r.on.pixels == sum(r.region_gt)
    assert n.on.tp == n.off.tp == n.san.tp == 0
    # Offline thresholds are what decode does at that threshold.
    for s in shown:
        r = s.record
        assert np.array_equal(s.on, _decode_at(s.image, r.similarity - 1e-4))
        assert not _decode_at(s.image, r.similarity + 1e-4).any()
    # The report's tables come out of the records (threshold chosen on these two frames).
    meta = {"command": "x", "machine": "cpu", "threads": 1, "date": "d", "seconds": 1.0,
            "classes": ["mug"], "seeds": [0], "frames": 1}
    md = ev.report(records, confs, ev.choose_threshold(records), 0.8, meta)
    assert "| 0 | 1 | 0 | identity off (the paper's rule) |" in md
    # The vocabulary's own mIoU: SAN alone against itself is no change; every matrix filled.
    for conf in confs.values():
        assert conf.words_san.sum() == conf.words_on.sum() == conf.drop.sum() > 0
    assert ev.words_change(confs, "on", 0, 1) == pytest.approx(
        ev.miou(confs[(0, 1, 0, 0)].words_on) - ev.miou(confs[(0, 1, 0, 0)].words_san))


_SEG: dict = {}


def _decode_at(image: np.ndarray, threshold: float) -> np.ndarray:
    """The concept's pixels when the mug concept of world 0 (K=1, seed 0, taught as `collect`
    teaches it) decodes `image` with `identity_min_similarity` = threshold."""
    from povss_lab.eval.datasets.synper import SynPer
    from povss_lab.eval.protocol import make_episode
    from povss_lab.eval.runner import make_concept, seeded
    from povss_ros.personal.teach import TeachConfig
    from povss_ros.segmenter import Segmenter

    if not _SEG:
        bench = SynPer(0, 14)
        ci = [s.base_class for s in bench.concepts()].index("mug")
        spec = bench.concepts()[ci]
        seg = Segmenter.from_weights(str(WEIGHTS), bench.vocabulary, device="cpu")
        seg.resize = "exact"
        shots = [bench.sample(s) for s in make_episode(spec.positive_ids, spec.negative_ids,
                                                       1, 0).shots]
        concept, _ = make_concept(seg, spec, shots, [seg.encode(s.image) for s in shots],
                                  seeded(TeachConfig(), 0, 1, ci), "base")
        seg.set_concepts([concept])
        _SEG["seg"] = seg
    seg = _SEG["seg"]
    seg.identity_min_similarity = threshold
    return seg.decode(seg.encode(image)).labels == len(seg.vocabulary)


def test_presence_filters_are_scored_over_target_then_look_alike_frames():
    seen, unseen = Claim(40, 40, 0, 1), Claim()  # 40 of 10,000 pixels: over PRESENT_AREA
    on = [_rec(True, c, Claim(), 0.9) for c in (seen, seen, unseen, seen)]
    off = [_rec(False, c, Claim(), 0.9) for c in (unseen, seen, unseen)]
    records = off[:1] + on + off[1:]  # the order in records does not matter
    raw = ev.sequence_errors(records, 0.5, (1, 1, 1, 1))
    assert raw["missed"] == pytest.approx(1 / 4) and raw["false"] == pytest.approx(1 / 3)
    assert raw["wrong"] == pytest.approx(2 / 7) and raw["enter"] == 0 and raw["leave"] == 0
    # In after 2 of 2, out after 2 of 2: enters at the 2nd target frame and holds over the
    # miss; the look-alike seen in between the two misses keeps it present to the end.
    held = ev.sequence_errors(records, 0.5, (2, 2, 2, 2))
    assert held["missed"] == pytest.approx(1 / 4) and held["enter"] == 1
    assert held["false"] == 1 and held["leave"] == 3
    assert ev.choose_filter(records, 0.5, [(2, 2, 2, 2), (1, 1, 1, 1)], None) == (1, 1, 1, 1)
    # A threshold above every similarity: nothing is ever seen, nothing false.
    none = ev.sequence_errors(records, 0.95, (1, 1, 1, 1))
    assert none["missed"] == 1 and none["false"] == 0 and none["enter"] == 4


def test_presence_filters_over_long_segments_count_each_entry_and_exit():
    seen, unseen = Claim(40, 40, 0, 1), Claim()
    # Every target frame seen, no look-alike frame: no filter is never wrong; in after 2 of 2,
    # out after 2 of 2 misses the first frame of each target segment and reports the first
    # frame of each look-alike segment present (the object was just there).
    records = [_rec(True, seen, Claim(), 0.9) for _ in range(3)]
    records += [_rec(False, unseen, Claim(), 0.9) for _ in range(3)]
    n = ev.SEQUENCE_PAIRS * 10
    raw = ev.sequence_errors(records, 0.5, (1, 1, 1, 1), 10)
    assert raw["wrong"] == 0 and raw["enter"] == 0 and raw["leave"] == 0
    held = ev.sequence_errors(records, 0.5, (2, 2, 2, 2), 10)
    assert held["missed"] == pytest.approx(ev.SEQUENCE_PAIRS / n)
    assert held["false"] == pytest.approx(ev.SEQUENCE_PAIRS / n)
    assert held["enter"] == 1 and held["leave"] == 1
    # A flickering target (seen every other frame) favours the filter over long segments.
    flicker = [_rec(True, c, Claim(), 0.9) for c in (seen, unseen)] + records[3:]
    assert (ev.sequence_errors(flicker, 0.5, (1, 2, 2, 2), 40)["wrong"]
            < ev.sequence_errors(flicker, 0.5, (1, 1, 1, 1), 40)["wrong"])
    assert ev.choose_filter(flicker, 0.5, [(1, 1, 1, 1), (1, 2, 2, 2)], 40) == (1, 2, 2, 2)


def test_hysteresis_keeps_a_watched_target_its_threshold_alone_would_drop():
    """Targets at 0.9, then at 0.7 (under the 0.75 threshold, over the 0.6 to stay): with
    hysteresis the node keeps publishing them once present. Its cost: look-alikes at 0.7
    coming right after are held too, as long as each is seen at the lower bar (without it,
    never shown)."""
    seen, look = Claim(40, 40, 0, 1), Claim(40, 0, 40, 1)
    records = [_rec(True, seen, Claim(), sim) for sim in (0.9, 0.9, 0.7, 0.7, 0.7, 0.7)]
    records += [_rec(False, look, Claim(), 0.7) for _ in range(4)]
    plain = ev.sequence_errors(records, 0.75, (1, 1, 1, 1))
    held = ev.sequence_errors(records, 0.75, (1, 1, 1, 1), stay=0.6)
    assert plain["hits"] == pytest.approx(2 / 6) and held["hits"] == pytest.approx(1)
    assert plain["shown"] == 0 and held["shown"] == pytest.approx(4 / 4)
