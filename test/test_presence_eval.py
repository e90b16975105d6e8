"""The presence-gate evaluation (`povss_lab.eval.presence`): its pure parts on hand-made
statistics, its agreement with the node's `find_objects`, and a tiny end-to-end run."""

from pathlib import Path

import numpy as np
import pytest

from povss_lab.eval import presence
from povss_lab.eval.presence import FrameStat, choose_gate, frame_stat, gate_rates, passes
from povss_ros.objects import ClassInfo, ObjectConfig, find_objects

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "models" / "syn_small.safetensors"


def _stat(positive: bool, area_px: int, score: float, iou: float = 0.0) -> FrameStat:
    return FrameStat(0, "my mug", 0, "c00/x", positive, False, 10_000, area_px, area_px, score,
                     iou=iou)


def test_rates_count_false_positives_hits_and_wrong_regions():
    stats = [_stat(False, 0, 0.0), _stat(False, 50, 0.2), _stat(False, 300, 0.9),
             _stat(True, 400, 1.0, iou=0.8), _stat(True, 400, 0.9, iou=0.1),
             _stat(True, 0, 0.0)]
    before = gate_rates(stats, 0.0, 0.0)
    assert before["fp"] == pytest.approx(2 / 3)
    assert before["recall"] == pytest.approx(1 / 3) and before["wrong"] == pytest.approx(1 / 3)
    after = gate_rates(stats, 0.01, 0.95)  # 100 px and score 0.95
    assert after["fp"] == 0.0 and after["recall"] == pytest.approx(1 / 3)
    assert after["wrong"] == 0.0


def test_choice_is_the_lowest_fp_that_keeps_the_hits():
    # Negatives: small, or low-scoring; hits: large and high-scoring but for two weak ones.
    neg = [_stat(False, 30, 0.3), _stat(False, 200, 0.4), _stat(False, 40, 0.9)]
    hits = [_stat(True, 500, 1.0, iou=0.9) for _ in range(18)]
    hits += [_stat(True, 500, 0.45, iou=0.9) for _ in range(2)]
    areas, scores = (0.0, 0.005, 0.01), (0.0, 0.35, 0.5)
    # 0.005 (50 px) drops two negatives; score 0.5 would drop the third but lose 2 of the 20
    # hits (10% > 5%); 0.35 drops nothing more, so the tie goes to the lower score.
    gate = choose_gate(neg + hits, areas, scores)
    assert (gate["area"], gate["score"]) == (0.005, 0.0)
    assert gate["fp"] == pytest.approx(1 / 3) and gate["recall"] == 1.0
    loose = choose_gate(neg + hits, areas, scores, max_loss=0.1)
    assert (loose["area"], loose["score"], loose["fp"]) == (0.005, 0.5, 0.0)
    assert loose["recall"] == pytest.approx(0.9)
    nothing = choose_gate(hits, areas, scores)  # no negatives: no reason to gate
    assert (nothing["area"], nothing["score"]) == (0.0, 0.0)


def test_auc_is_one_for_separated_values_and_half_for_equal_ones():
    assert presence.auc([0.1, 0.2], [0.3, 0.4]) == 1.0
    assert presence.auc([0.5, 0.5], [0.5]) == 0.5
    assert np.isnan(presence.auc([], [0.3]))


def test_frame_stat_measures_the_region_the_node_reports():
    labels = np.zeros((40, 50), np.uint16)
    labels[5:15, 5:15] = 3  # the concept's largest region (100 px) ...
    labels[30:32, 40:42] = 3  # ... and a small one elsewhere
    labels[5:15, 15:25] = 1  # the base class continues the blob to the right
    score = np.full(labels.shape, 0.2, np.float32)
    score[5:15, 5:15] = np.linspace(0.5, 1.5, 100).reshape(10, 10)
    truth = np.zeros(labels.shape, bool)
    truth[5:15, 5:20] = True
    s = frame_stat(labels, score, 3, 1, truth, world=1, concept="my mug", seed=0,
                   sample_id="c00/p00", positive=True, twin=False)
    assert (s.pixels, s.area_px, s.frame_px) == (104, 100, 2000)
    assert s.score == pytest.approx(1.0) and s.max_score == pytest.approx(1.5)
    assert s.share == pytest.approx(0.5) and s.iou == pytest.approx(100 / 150) and s.hit
    # The offline gate is find_objects' own presence decision, at and around the edges.
    for area, min_score in ((0.05, 1.0), (0.0501, 1.0), (0.05, 1.0001), (0.002, 0.0)):
        cfg = ObjectConfig(presence_min_area=area, presence_min_score=min_score)
        classes = [ClassInfo(i, str(i), "", True) for i in range(3)] + [ClassInfo(3, "c", "c")]
        obj = find_objects(labels, score, classes, cfg)[-1]
        assert passes(s, area, min_score) == obj.present
    none = frame_stat(np.zeros((4, 4), np.uint16), np.zeros((4, 4), np.float32), 3, 1,
                      np.zeros((4, 4), bool), world=0, concept="c", seed=0, sample_id="n",
                      positive=False, twin=True)
    assert none.area_px == 0 and not passes(none, 0.0, 0.0)


@pytest.mark.skipif(not WEIGHTS.exists(), reason="needs models/syn_small.safetensors")
def test_tiny_run_writes_the_report(tmp_path):
    stats_file = tmp_path / "stats.json"
    argv = ["--weights", str(WEIGHTS), "--out", str(tmp_path), "--world-seed", "0",
            "--concepts", "1", "--seeds", "0", "--positives", "7", "--negatives", "2",
            "--save-stats", str(stats_file)]
    assert presence.main(argv) == 0
    md = (tmp_path / "presence.md").read_text()
    assert "Chosen defaults" in md and "| 0 | 2 / 2 |" in md
    assert (tmp_path / "presence.png").stat().st_size > 1000
    # A hand-written notes section survives a rebuild from the saved statistics.
    (tmp_path / "presence.md").write_text(md + "\n## Notes\n\nkept\n")
    assert presence.main(["--load-stats", str(stats_file), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "presence.md").read_text().endswith("## Notes\n\nkept\n")
