"""Paired comparison of two saved reports: the arithmetic and the refusals."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from povss_lab.eval.compare import ReportError, load_records, main, paired_difference
from povss_lab.eval.report import save_json

COLUMNS = ["concept", "method", "k", "seed", "iou_per"]


def write_report(path: Path, scores: dict[str, list[float]], method: str = "all") -> Path:
    """A report in the layout `eval.cli.write_reports` saves: one row per (concept, seed)."""
    rows = [
        [concept, method, 5, seed, score]
        for concept, per_seed in scores.items()
        for seed, score in enumerate(per_seed)
    ]
    save_json(path, {"meta": {}, "run": {"records": {"columns": COLUMNS, "rows": rows}}})
    return path


def test_pairs_concepts_by_their_seed_means(tmp_path: Path) -> None:
    old = write_report(tmp_path / "old.json", {"a": [10, 20], "b": [30, 30], "c": [50, 40]})
    new = write_report(tmp_path / "new.json", {"a": [20, 30], "b": [30, 34], "c": [35, 25]})
    r = paired_difference(load_records(old), load_records(new), "all", 5)
    # seed means: old a 15, b 30, c 45; new a 25, b 32, c 30 -> diffs +10, +2, -15
    assert r.concepts == 3
    assert r.old_mean == pytest.approx(30.0) and r.new_mean == pytest.approx(29.0)
    assert r.mean_diff == pytest.approx(-1.0)
    sd = math.sqrt(((10 + 1) ** 2 + (2 + 1) ** 2 + (-15 + 1) ** 2) / 2)
    assert r.std_error == pytest.approx(sd / math.sqrt(3))
    assert r.z == pytest.approx(-1.0 / r.std_error)
    assert r.worst[0] == ("c", pytest.approx(-15.0))
    assert r.best[0] == ("a", pytest.approx(10.0))


def test_refuses_reports_on_different_concepts(tmp_path: Path) -> None:
    old = load_records(write_report(tmp_path / "old.json", {"a": [1.0], "b": [2.0]}))
    new = load_records(write_report(tmp_path / "new.json", {"a": [1.0], "z": [2.0]}))
    with pytest.raises(ReportError, match="different concepts"):
        paired_difference(old, new, "all", 5)


def test_refuses_a_method_the_report_lacks(tmp_path: Path) -> None:
    recs = load_records(write_report(tmp_path / "r.json", {"a": [1.0], "b": [2.0]}))
    with pytest.raises(ReportError, match="no records for method 'none'"):
        paired_difference(recs, recs, "none", 5)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not a JSON report"),
        (b'{"run": {}}', "no run.records"),
        (b"\xff\xfe", "not a JSON"),
    ],
)
def test_corrupt_report_is_a_clear_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(ReportError, match=message):
        load_records(path)


def test_cli_prints_a_table_and_exits_2_on_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = write_report(tmp_path / "old.json", {"a": [10.0], "b": [20.0]})
    new = write_report(tmp_path / "new.json", {"a": [12.0], "b": [26.0]})
    assert main([str(old), str(new), "--methods", "all"]) == 0
    out = capsys.readouterr().out
    assert "| all | 5 | 2 | 15.00 | 19.00 | +4.00 ± 2.00 | +2.0 |" in out
    assert main([str(old), str(tmp_path / "missing.json")]) == 2
    assert "no such report" in capsys.readouterr().err
