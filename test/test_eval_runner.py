"""The K-shot evaluation runner, SYN^per and the report, on a TINY random SAN (seconds).

Nothing here judges accuracy (random weights); these tests pin the protocol: every method is
scored, "none" trains nothing, runs reproduce, the paper's ground-truth rule for datasets
without open-vocabulary labels is applied, and each image is encoded once per episode.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from povss_lab.eval.benchmark import ConceptSpec, Sample
from povss_lab.eval.cli import INTERFERENCE_METHOD, LABELS, write_reports
from povss_lab.eval.datasets.synper import SynPer
from povss_lab.eval.interference import distinct_class_concepts, interference
from povss_lab.eval.protocol import make_episode
from povss_lab.eval.runner import METRICS, ablation_methods, evaluate, make_concept, seeded
from povss_ros.personal.teach import TeachConfig
from povss_ros.san.config import TINY
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmenter

FAST = TeachConfig(iterations=5, num_points=256)
KW = {"ks": (1,), "seeds": (0,), "progress": None}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def bench():
    return SynPer(world_seed=0, n_concepts=2, n_positive=3, n_negative=2, size=(96, 72))


@pytest.fixture(scope="module")
def seg(bench):
    return Segmenter(build_san(TINY), vocabulary=bench.vocabulary, device="cpu")


@pytest.fixture(scope="module")
def run(bench, seg):
    return evaluate(bench, seg, ablation_methods(FAST), **KW)


def _scores(records):
    return [
        (r["concept"], r["method"], r["k"], r["seed"], *(r[m] for m in METRICS)) for r in records
    ]


def test_every_method_is_scored_in_range(run, bench):
    assert len(run.records) == 2 * len(ablation_methods())  # 2 concepts, the paper's 5 + ours
    assert {r["method"] for r in run.records} == set(ablation_methods())
    for r in run.records:
        for m in METRICS:
            assert 0.0 <= r[m] <= 100.0, (r["method"], m, r[m])
        assert r["images"] == 2 * (3 - 1)  # test positives + as many negatives
    summ = run.summary()
    assert set(summ) == set(ablation_methods()) and all(set(v) == {1} for v in summ.values())
    assert all(0.0 <= summ[m][1]["iou_per"] <= 100.0 for m in summ)


def test_none_trains_nothing_and_ignores_the_teach_seed(bench, seg, run):
    other = {"none": None, "all": dataclasses.replace(FAST, seed=1234)}
    again = evaluate(bench, seg, other, **KW)
    first = [r for r in _scores(run.records) if r[1] == "none"]
    assert first == [r for r in _scores(again.records) if r[1] == "none"]
    spec = bench.concepts()[0]
    ep = make_episode(spec.positive_ids, spec.negative_ids, 1, 0)
    shots = [bench.sample(s) for s in ep.shots]
    concept, _ = make_concept(seg, spec, shots, [seg.encode(s.image) for s in shots], None)
    base = seg.vocabulary.index(spec.base_class)
    assert concept.inert and not concept.trainable()
    assert torch.equal(concept.row(), seg.text_rows[base : base + 1])


def test_none_is_the_base_class_prediction(bench, seg, run):
    """IoU^per of "none" = the frozen model's base-class pixels against the personal masks."""
    spec = bench.concepts()[0]
    ep = make_episode(spec.positive_ids, spec.negative_ids, 1, 0)
    base = seg.vocabulary.index(spec.base_class)
    tp = fp = fn = 0
    for sid in ep.test_ids:
        s = bench.sample(sid)
        pred = seg.segment(s.image).labels == base
        tp += int((pred & s.personal_mask).sum())
        fp += int((pred & ~s.personal_mask).sum())
        fn += int((~pred & s.personal_mask).sum())
    rec = next(r for r in run.records if r["method"] == "none" and r["concept"] == spec.name)
    assert (rec["tp"], rec["fp"], rec["fn"]) == (tp, fp, fn)


def test_false_positives_on_the_base_class_are_counted_apart(bench, seg, run):
    """The "all" record's false positives on other instances of the class, by hand."""
    spec, v = bench.concepts()[0], len(seg.vocabulary)
    base = seg.vocabulary.index(spec.base_class)
    ep = make_episode(spec.positive_ids, spec.negative_ids, 1, 0)
    shots = [bench.sample(s) for s in ep.shots]
    cfg = seeded(ablation_methods(FAST)["all"], 0, 1, 0)
    concept, _ = make_concept(seg, spec, shots, [seg.encode(s.image) for s in shots], cfg)
    seg.set_concepts([concept])
    fp = same = 0
    try:
        for sid in ep.test_ids:
            s = bench.sample(sid)
            labels = seg.decode(seg.encode(s.image), identity=False).labels  # the paper's rule
            wrong = (labels == v) & ~s.personal_mask
            fp += int(wrong.sum())
            same += int((wrong & (s.semantic == base)).sum())  # another mug than mine
    finally:
        seg.set_concepts([])
    rec = next(r for r in run.records if r["method"] == "all" and r["concept"] == spec.name)
    assert (rec["fp"], rec["fp_same_class"]) == (fp, same)
    assert 0 < same < fp  # both kinds occur here, so the split is really tested
    recs = [r for r in run.records if r["method"] == "all"]
    share = 100.0 * sum(r["fp_same_class"] for r in recs) / sum(r["fp"] for r in recs)
    assert run.summary()["all"][1]["same_class_fp"] == pytest.approx(share)


def test_results_are_deterministic(bench, seg, run):
    assert _scores(evaluate(bench, seg, ablation_methods(FAST), **KW).records) == _scores(
        run.records
    )


class ModelTruth:
    """Scenes whose personal mask is exactly what the frozen model calls `base` (positives)
    and whose negatives hold no `base` pixel in its prediction; semantic is None or real."""

    name = "model-truth"

    def __init__(self, source: SynPer, seg: Segmenter, with_semantic: bool) -> None:
        self.vocabulary = source.vocabulary
        ids = [s for c in source.concepts() for s in c.positive_ids + c.negative_ids]
        scenes = {s: source.sample(s) for s in ids}
        labels = {s: seg.segment(x.image).labels for s, x in scenes.items()}
        counts = {c: sum(bool((lab == c).any()) for lab in labels.values()) for c in range(17)}
        self.base = max((c for c in counts if counts[c] < len(ids)), key=counts.get)
        pos = [s for s in ids if (labels[s] == self.base).any()]
        neg = [s for s in ids if s not in pos]
        assert len(pos) >= 2 and neg, "the random model must predict the base class somewhere"
        self.samples = {
            s: Sample(
                s,
                scenes[s].image,
                labels[s] == self.base,
                scenes[s].semantic if with_semantic else None,
            )
            for s in ids
        }
        self.spec = ConceptSpec("mine", self.vocabulary[self.base], tuple(pos), tuple(neg))

    def concepts(self):
        return [self.spec]

    def sample(self, sample_id):
        return self.samples[sample_id]


def test_ground_truth_is_the_frozen_prediction_when_semantic_is_none(bench, seg):
    """With the mask = the frozen model's base pixels, "none" matches its own pseudo ground
    truth exactly: mIoU and IoU^per are 100. A wrong ground truth (zeros, the scene's real
    labels, no pasted mask, or a prediction made with the concept already set on the
    segmenter, as here) breaks one of the two."""
    truth = ModelTruth(bench, seg, with_semantic=False)
    spec = truth.spec
    shot = truth.sample(spec.positive_ids[0])
    cfg = dataclasses.replace(FAST, use_negative=False)
    stray, _ = make_concept(seg, spec, [shot], [seg.encode(shot.image)], cfg)
    seg.set_concepts([stray])
    v = len(seg.vocabulary)
    assert any((seg.segment(x.image).labels == v).any() for x in truth.samples.values())
    try:
        run = evaluate(truth, seg, {"none": None, "all": FAST}, **KW)
        assert seg.concepts[0] is not None and len(seg.concepts) == 1  # restored
    finally:
        seg.set_concepts([])
    none = next(r for r in run.records if r["method"] == "none")
    assert none["miou"] == pytest.approx(100.0) and none["iou_per"] == pytest.approx(100.0)
    real = evaluate(ModelTruth(bench, seg, with_semantic=True), seg, {"none": None}, **KW)
    assert real.records[0]["iou_per"] == pytest.approx(100.0) and real.records[0]["miou"] < 50


def test_each_image_is_encoded_once_per_episode(bench, seg):
    calls = []
    encode = seg.encode

    def counting(image):
        calls.append(image.tobytes())
        return encode(image)

    seg.encode = counting
    try:
        run = evaluate(bench, seg, ablation_methods(FAST), **KW)
    finally:
        del seg.encode
    expected = 0
    for spec in bench.concepts():
        ep = make_episode(spec.positive_ids, spec.negative_ids, 1, 0)
        expected += len(ep.shots) + len(ep.test_ids)
    assert len(calls) == expected == run.encodes  # 5 methods, yet one forward per image
    assert len(set(calls)) == len(calls)


def test_concat_scores_one_pair_per_test_positive(bench, seg):
    run = evaluate(bench, seg, {"none": None, "all": FAST}, concat=True, **KW)
    assert run.concat and all(r["images"] == 3 - 1 for r in run.records)
    assert all(0.0 <= r["iou_per"] <= 100.0 for r in run.records)


def test_synper_samples_follow_the_protocol(bench):
    a, b = bench.sample("c00/p01"), bench.sample("c00/p01")
    assert np.array_equal(a.image, b.image) and np.array_equal(a.personal_mask, b.personal_mask)
    spec = bench.concepts()[0]
    base = bench.vocabulary.index(spec.base_class)
    assert spec.name == "my mug 3" and spec.base_class == "mug"
    for sid in spec.positive_ids:
        s = bench.sample(sid)
        assert s.personal_mask.any() and (s.semantic[s.personal_mask] == base).all()
    for sid in spec.negative_ids:
        s = bench.sample(sid)
        assert not s.personal_mask.any() and (s.semantic == base).any()  # another mug
    with pytest.raises(KeyError):
        bench.sample("c00/p99")
    assert distinct_class_concepts(bench, 5) == [0, 1]


def test_interference_alone_equals_the_evaluated_record(bench, seg, run, tmp_path):
    method = INTERFERENCE_METHOD  # what the node teaches
    inter = interference(
        bench, seg, ablation_methods(FAST)[method], [0, 1], k=1, seeds=(0,), progress=None
    )
    inter["method"] = method
    for rec in inter["records"]:
        ev = next(r for r in run.records
                  if r["method"] == method and r["concept"] == rec["concept"])
        assert rec["alone_iou_per"] == pytest.approx(ev["iou_per"])
        assert 0.0 <= rec["together_iou_per"] <= 100.0 and 0.0 <= rec["joint_iou_per"] <= 100.0
    assert seg.concepts == ()  # the segmenter's own concepts are put back
    meta = {"command": "test", "weights": "RANDOM", "weights_sha256": None, "model": "tiny",
            "threads": 1, "total_seconds": 1.0, "benchmark": bench.describe()}
    write_reports(run, inter, meta, tmp_path, "synper")
    text = (tmp_path / "synper.md").read_text()
    assert "## Interference: 2 concepts" in text and "Δ fused" in text and "Δ joint" in text
    assert f"({LABELS[method]}, K=1" in text
    saved = json.loads((tmp_path / "synper.json").read_text())["interference"]
    assert saved["per_concept"] == inter["per_concept"]  # report cells never leak into data


def test_reports_are_written(tmp_path, run, bench):
    meta = {
        "command": "test",
        "weights": "RANDOM",
        "weights_sha256": None,
        "model": "tiny",
        "threads": 1,
        "total_seconds": 1.0,
        "benchmark": bench.describe(),
    }
    write_reports(run, None, meta, tmp_path, "synper")
    text = (tmp_path / "synper.md").read_text()
    assert "## Ablation at K=1" in text and "all three" in text
    assert "| ✓ | ✓ evened (ours) | ✓ |" in text  # ours, its own row beside the paper's
    data = json.loads((tmp_path / "synper.json").read_text())
    records = data["run"]["records"]
    assert len(records["rows"]) == 2 * len(LABELS) and "iou_per" in records["columns"]
    assert "summary" in data["run"]
    assert (tmp_path / "synper_vs_k.png").stat().st_size > 1000
    assert not math.isnan(data["run"]["summary"]["all"]["1"]["iou_per"])
