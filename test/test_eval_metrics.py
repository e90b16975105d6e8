"""Tests of povss_lab.eval (metrics, K-shot protocol, reports) against hand-computed values."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from povss_lab.eval.metrics import (
    ConfusionMatrix,
    EvalResult,
    PersonalAccumulator,
    paste_personal,
)
from povss_lab.eval.protocol import concat_pairs, make_episode, side_by_side
from povss_lab.eval.report import plot_vs_k, results_table_markdown, save_json

IGN = 65535

# A 3x3 ground truth with 3 classes, 3 pixels each.
GT = np.array([[0, 0, 1], [0, 1, 1], [2, 2, 2]], dtype=np.int64)


def _cm(pred, gt, n=3, **kw):
    cm = ConfusionMatrix(n, **kw)
    cm.update(np.asarray(pred), np.asarray(gt))
    return cm


# ---------------------------------------------------------------- ConfusionMatrix


def test_perfect_prediction():
    cm = _cm(GT, GT)
    np.testing.assert_array_equal(cm.matrix, [[3, 0, 0], [0, 3, 0], [0, 0, 3]])
    np.testing.assert_array_equal(cm.iou(), [1.0, 1.0, 1.0])
    assert cm.miou() == 1.0
    assert cm.matrix.dtype == np.int64


def test_mixed_prediction_hand_computed():
    pred = np.array([[0, 1, 1], [0, 1, 0], [2, 2, 1]])
    cm = _cm(pred, GT)
    # rows = gt, cols = pred
    np.testing.assert_array_equal(cm.matrix, [[2, 1, 0], [1, 2, 0], [0, 1, 2]])
    # IoU_c = tp / (row + col - tp): 2/4, 2/5, 2/3
    np.testing.assert_allclose(cm.iou(), [0.5, 0.4, 2 / 3])
    assert cm.miou() == pytest.approx((0.5 + 0.4 + 2 / 3) / 3)


def test_empty_prediction_all_background():
    cm = _cm(np.zeros((3, 3), dtype=np.int64), GT)
    np.testing.assert_array_equal(cm.matrix, [[3, 0, 0], [3, 0, 0], [3, 0, 0]])
    np.testing.assert_allclose(cm.iou(), [3 / 9, 0.0, 0.0])
    assert cm.miou() == pytest.approx(1 / 9)


def test_class_absent_from_gt_and_pred_is_nan_and_excluded():
    pred = np.array([[0, 1, 1], [0, 1, 0], [2, 2, 1]])
    cm = _cm(pred, GT, n=4)
    np.testing.assert_array_equal(
        cm.matrix, [[2, 1, 0, 0], [1, 2, 0, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
    )
    iou = cm.iou()
    assert math.isnan(iou[3])
    np.testing.assert_allclose(iou[:3], [0.5, 0.4, 2 / 3])
    assert cm.miou() == pytest.approx((0.5 + 0.4 + 2 / 3) / 3)  # not divided by 4


def test_class_only_predicted_counts_as_zero_not_nan():
    gt = np.zeros((3, 3), dtype=np.int64)
    pred = gt.copy()
    pred[1, 1] = 1
    cm = _cm(pred, gt, n=2)
    np.testing.assert_array_equal(cm.matrix, [[8, 1], [0, 0]])
    np.testing.assert_allclose(cm.iou(), [8 / 9, 0.0])
    assert cm.miou() == pytest.approx(4 / 9)


def test_ignore_index_pixels_are_skipped():
    gt = np.array([[0, IGN, 1], [IGN, 1, 1], [0, 0, IGN]], dtype=np.uint16)
    # class 2 and the "unlabeled" value only where gt is ignored: neither may count
    pred = np.array([[0, 2, 1], [IGN, 1, 0], [0, 1, 2]], dtype=np.uint16)
    cm = _cm(pred, gt)
    np.testing.assert_array_equal(cm.matrix, [[2, 1, 0], [1, 2, 0], [0, 0, 0]])
    assert cm.total == 6
    iou = cm.iou()
    np.testing.assert_allclose(iou[:2], [0.5, 0.5])
    assert math.isnan(iou[2])


def test_custom_ignore_index():
    gt = np.array([[0, 255], [1, 1]])
    cm = _cm(np.array([[0, 0], [1, 0]]), gt, n=2, ignore_index=255)
    np.testing.assert_array_equal(cm.matrix, [[1, 0], [1, 1]])


def test_accumulation_equals_concatenated_image_and_merge():
    rng = np.random.default_rng(0)
    gts = [rng.integers(0, 5, size=(4, 6)) for _ in range(3)]
    preds = [rng.integers(0, 5, size=(4, 6)) for _ in range(3)]
    gts[1][0, :3] = IGN
    acc = ConfusionMatrix(5)
    for p, g in zip(preds, gts):
        acc.update(p, g)
    whole = _cm(np.concatenate(preds, axis=1), np.concatenate(gts, axis=1), n=5)
    np.testing.assert_array_equal(acc.matrix, whole.matrix)
    assert acc.total == 3 * 24 - 3

    a, b = ConfusionMatrix(5), ConfusionMatrix(5)
    a.update(preds[0], gts[0])
    for p, g in zip(preds[1:], gts[1:]):
        b.update(p, g)
    assert a.merge(b) is a
    np.testing.assert_array_equal(a.matrix, whole.matrix)


def test_merge_rejects_different_configuration():
    with pytest.raises(ValueError, match="different num_classes"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(TypeError):
        ConfusionMatrix(3).merge(PersonalAccumulator())


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="same shape"):
        ConfusionMatrix(3).update(np.zeros((3, 3), int), np.zeros((3, 4), int))
    with pytest.raises(ValueError, match="same shape"):
        PersonalAccumulator().update(np.zeros((3, 3), bool), np.zeros((4, 3), bool))
    with pytest.raises(ValueError, match="2-D"):
        ConfusionMatrix(3).update(np.zeros((1, 3, 3), int), np.zeros((1, 3, 3), int))


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError, match="gt labels out of range"):
        _cm(GT, np.where(GT == 2, 3, GT))
    with pytest.raises(ValueError, match="pred labels out of range"):
        _cm(np.where(GT == 2, -1, GT), GT)
    with pytest.raises(ValueError, match="pred labels out of range"):
        _cm(np.where(GT == 2, IGN, GT), GT)  # "unlabeled" prediction on a scored pixel


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="integer label map"):
        ConfusionMatrix(3).update(GT.astype(float), GT)
    with pytest.raises(ValueError, match="collides"):
        ConfusionMatrix(300, ignore_index=255)
    with pytest.raises(ValueError):
        ConfusionMatrix(0)


def test_nothing_scored_gives_nan_miou():
    cm = ConfusionMatrix(3)
    assert math.isnan(cm.miou())
    cm.update(np.zeros((2, 2), int), np.full((2, 2), IGN))
    assert cm.total == 0 and math.isnan(cm.miou())


# ---------------------------------------------------------------- PersonalAccumulator

GT_M = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=bool)
PRED_M = np.array([[1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)  # tp 2, fp 1, fn 1


def test_personal_perfect():
    acc = PersonalAccumulator()
    acc.update(GT_M, GT_M)
    r = acc.result()
    assert (r.tp, r.fp, r.fn, r.images) == (3, 0, 0, 1)
    assert r.iou == r.precision == r.recall == 1.0


def test_personal_hand_computed():
    acc = PersonalAccumulator()
    acc.update(PRED_M, GT_M)
    r = acc.result()
    assert (r.tp, r.fp, r.fn) == (2, 1, 1)
    assert r.iou == pytest.approx(0.5)
    assert r.precision == pytest.approx(2 / 3)
    assert r.recall == pytest.approx(2 / 3)


def test_negative_only_image_counts_false_positives():
    acc = PersonalAccumulator()
    neg_pred = np.zeros((3, 3), bool)
    neg_pred[2, 1:] = True
    acc.update(neg_pred, np.zeros((3, 3), bool))
    r = acc.result()
    assert (r.tp, r.fp, r.fn) == (0, 2, 0)
    assert r.iou == 0.0
    assert r.precision == 0.0
    assert r.recall == 0.0  # documented: empty denominator with an error -> 0.0


def test_personal_summed_over_set_not_mean_of_images():
    acc = PersonalAccumulator()
    acc.update(PRED_M, GT_M)  # tp 2, fp 1, fn 1 (image IoU 0.5)
    neg_pred = np.zeros((3, 3), bool)
    neg_pred[2, 1:] = True
    acc.update(neg_pred, np.zeros((3, 3), bool))  # fp 2 (image IoU 0)
    r = acc.result()
    assert (r.tp, r.fp, r.fn, r.images) == (2, 3, 1, 2)
    assert r.iou == pytest.approx(2 / 6)  # not (0.5 + 0) / 2
    assert r.precision == pytest.approx(2 / 5)
    assert r.recall == pytest.approx(2 / 3)


def test_personal_empty_prediction_on_positive():
    acc = PersonalAccumulator()
    acc.update(np.zeros((3, 3), bool), GT_M)
    r = acc.result()
    assert (r.tp, r.fp, r.fn) == (0, 0, 3)
    assert r.iou == 0.0 and r.recall == 0.0
    assert r.precision == 0.0  # documented: nothing predicted but something missed -> 0.0


def test_personal_nothing_at_all_is_nan():
    acc = PersonalAccumulator()
    r = acc.result()
    assert math.isnan(r.iou) and math.isnan(r.precision) and math.isnan(r.recall)
    acc.update(np.zeros((3, 3), bool), np.zeros((3, 3), bool))
    r = acc.result()
    assert r.images == 1 and (r.tp, r.fp, r.fn) == (0, 0, 0)
    assert math.isnan(r.iou) and math.isnan(r.precision) and math.isnan(r.recall)


def test_personal_valid_mask_and_labels():
    valid = np.ones((3, 3), bool)
    valid[0, 1] = False  # hides the single false positive
    acc = PersonalAccumulator()
    acc.update(PRED_M, GT_M, valid=valid)
    assert (acc.tp, acc.fp, acc.fn) == (2, 0, 1)

    gt = np.where(GT_M, 7, 0)
    gt[0, 1] = IGN
    pred = np.where(PRED_M, 7, 1)
    lab = PersonalAccumulator()
    lab.update_labels(pred, gt, personal_id=7)
    assert (lab.tp, lab.fp, lab.fn) == (2, 0, 1)


def test_personal_mask_dtypes_and_merge():
    acc = PersonalAccumulator()
    acc.update(PRED_M.astype(np.uint8), GT_M.astype(np.int32))  # 0/1 integers are fine
    with pytest.raises(ValueError, match="boolean mask"):
        acc.update(np.full((3, 3), 2), GT_M)  # a label map is not a mask
    other = PersonalAccumulator()
    other.update(GT_M, GT_M)
    acc.merge(other)
    assert (acc.tp, acc.fp, acc.fn, acc.images) == (5, 1, 1, 2)


def test_eval_result_percent_and_dict():
    cm = _cm(np.array([[0, 1, 1], [0, 1, 0], [2, 2, 1]]), GT)
    acc = PersonalAccumulator()
    acc.update(PRED_M, GT_M)
    res = EvalResult.from_accumulators(cm, acc)
    assert res.miou == pytest.approx(100 * (0.5 + 0.4 + 2 / 3) / 3)
    assert res.iou_per == pytest.approx(50.0)
    assert res.precision == pytest.approx(200 / 3)
    assert res.recall == pytest.approx(200 / 3)
    d = res.to_dict()
    assert set(d) == {"miou", "iou_per", "precision", "recall", "images"}
    assert d["images"] == 1 and isinstance(d["miou"], float)


# ---------------------------------------------------------------- paste_personal


def test_paste_personal():
    base = np.array([[0, 0, 1], [2, 2, 1], [0, 1, 1]], dtype=np.uint8)
    mask = np.array([[0, 1, 1], [0, 1, 0], [0, 0, 0]], dtype=bool)
    gt = paste_personal(base, mask, 3)
    np.testing.assert_array_equal(gt, [[0, 3, 3], [2, 3, 1], [0, 1, 1]])
    assert gt.dtype == np.uint8
    np.testing.assert_array_equal(base, [[0, 0, 1], [2, 2, 1], [0, 1, 1]])  # untouched

    wide = paste_personal(base, mask, 300)  # does not fit uint8: upcast, no wrap-around
    assert wide[0, 1] == 300 and wide.dtype == np.int64

    # the frozen model's own prediction scored against its pseudo gt: the personal class is
    # missed entirely (IoU 0), the others keep only their unmasked pixels
    cm = _cm(base, gt, n=4)
    np.testing.assert_array_equal(
        cm.matrix, [[2, 0, 0, 0], [0, 3, 0, 0], [0, 0, 1, 0], [1, 1, 1, 0]]
    )


def test_paste_personal_errors():
    base = np.zeros((3, 3), np.int64)
    with pytest.raises(ValueError, match="same shape"):
        paste_personal(base, np.zeros((2, 3), bool), 5)
    with pytest.raises(ValueError, match="already contains"):
        paste_personal(base, np.zeros((3, 3), bool), 0)


# ---------------------------------------------------------------- protocol

POS = [f"p{i:02d}" for i in range(20)]
NEG = [f"n{i:02d}" for i in range(30)]


def test_episode_deterministic_and_seed_dependent():
    a = make_episode(POS, NEG, k=3, seed=0)
    b = make_episode(POS, NEG, k=3, seed=0)
    c = make_episode(POS, NEG, k=3, seed=1)
    assert a == b
    assert a.shots != c.shots or a.test_negative != c.test_negative
    assert (a.k, a.seed) == (3, 0)


def test_episode_disjoint_and_balanced():
    for k in (1, 3, 5):
        ep = make_episode(POS, NEG, k=k, seed=k)
        assert len(ep.shots) == k
        assert not set(ep.shots) & set(ep.test_positive)
        assert set(ep.shots) | set(ep.test_positive) == set(POS)
        assert set(ep.test_negative) <= set(NEG)
        assert len(ep.test_positive) == len(ep.test_negative) == len(POS) - k
        assert len(set(ep.test_negative)) == len(ep.test_negative)
        assert not ep.truncated and ep.dropped_positives == ()
        assert ep.test_ids == ep.test_positive + ep.test_negative


def test_episode_too_few_negatives_shrinks_positives():
    pos, neg = POS[:10], NEG[:4]
    ep = make_episode(pos, neg, k=3, seed=7)
    assert len(ep.shots) == 3
    assert len(ep.test_positive) == len(ep.test_negative) == 4
    assert set(ep.test_negative) == set(neg)
    assert ep.truncated and len(ep.dropped_positives) == 3
    parts = [set(ep.shots), set(ep.test_positive), set(ep.dropped_positives)]
    assert set().union(*parts) == set(pos)
    assert sum(len(p) for p in parts) == len(pos)  # pairwise disjoint


def test_episode_errors():
    with pytest.raises(ValueError, match="at least 4 positive"):
        make_episode(POS[:3], NEG, k=3, seed=0)
    with pytest.raises(ValueError, match="positive integer"):
        make_episode(POS, NEG, k=0, seed=0)
    with pytest.raises(ValueError, match="duplicate"):
        make_episode(POS + POS[:1], NEG, k=1, seed=0)
    with pytest.raises(ValueError, match="both positive and negative"):
        make_episode(POS, NEG + POS[:1], k=1, seed=0)
    with pytest.raises(ValueError, match="no negative"):
        make_episode(POS, [], k=1, seed=0)


def test_concat_pairs():
    ep = make_episode(POS, NEG, k=5, seed=2)
    pairs = concat_pairs(ep.test_positive, ep.test_negative, seed=2)
    assert [p for p, _ in pairs] == list(ep.test_positive)
    assert sorted(n for _, n in pairs) == sorted(ep.test_negative)  # each negative once
    assert pairs == concat_pairs(ep.test_positive, ep.test_negative, seed=2)
    with pytest.raises(ValueError, match="one distinct negative"):
        concat_pairs(["a", "b"], ["x"], seed=0)


def test_side_by_side_pads_with_fill():
    left = np.ones((2, 2), np.uint16)
    right = np.full((3, 1), 5, np.uint16)
    out = side_by_side(left, right, fill=IGN)
    np.testing.assert_array_equal(out, [[1, 1, 5], [1, 1, 5], [IGN, IGN, 5]])
    assert side_by_side(np.zeros((4, 3, 3)), np.zeros((4, 5, 3))).shape == (4, 8, 3)
    with pytest.raises(ValueError):
        side_by_side(np.zeros((4, 3, 3)), np.zeros((4, 5)))


# ---------------------------------------------------------------- report


def test_markdown_table():
    rows = [
        {"method": "SAN", "k": 1, "iou_per": 41.0812, "miou": 55.68},
        {"method": "ours|v2", "k": 3, "iou_per": float("nan")},
    ]
    table = results_table_markdown(rows, ["method", "k", ("iou_per", "IoU^per"), ("miou", "mIoU")])
    assert table == (
        "| method | k | IoU^per | mIoU |\n"
        "|---|---:|---:|---:|\n"
        "| SAN | 1 | 41.08 | 55.68 |\n"
        "| ours\\|v2 | 3 | n/a |  |\n"
    )
    with pytest.raises(ValueError):
        results_table_markdown(rows, [])


def test_save_json_roundtrip_and_strict(tmp_path):
    path = tmp_path / "sub" / "result.json"
    res = EvalResult(miou=50.0, iou_per=float("nan"), precision=1.0, recall=2.0, images=3)
    save_json(path, {"res": res, "arr": np.arange(3), "x": np.float32(0.5), "t": (1, 2)})
    data = json.loads(path.read_text())  # strict JSON: NaN became null
    assert data == {
        "res": {"miou": 50.0, "iou_per": None, "precision": 1.0, "recall": 2.0, "images": 3},
        "arr": [0, 1, 2],
        "x": 0.5,
        "t": [1, 2],
    }
    assert os.listdir(path.parent) == ["result.json"]  # no temp file left


def test_save_json_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "r.json"
    # unserializable: nothing is written, the file stays absent
    with pytest.raises(TypeError):
        save_json(path, {"bad": object()})
    assert not path.exists() and os.listdir(tmp_path) == []

    save_json(path, {"v": 1})

    # a failure in the middle of the write leaves the previous complete file, no temp file
    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        save_json(path, {"v": 2, "big": list(range(1000))})
    assert json.loads(path.read_text()) == {"v": 1}
    assert os.listdir(tmp_path) == ["r.json"]


def test_plot_vs_k_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    results = {
        "SAN": {k: EvalResult(55.7, 41.1, 80.0, 45.0) for k in (1, 3, 5)},
        "ours": {
            1: EvalResult(56.4, 49.8, 70.0, 60.0),
            3: EvalResult(56.7, 54.1, 72.0, 66.0),
            5: {"miou": 55.9, "iou_per": 56.8},
        },
    }
    path = tmp_path / "vs_k.png"
    plot_vs_k(results, path, title="FSS^per")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert os.listdir(tmp_path) == ["vs_k.png"]
