"""The store's record of forgotten concepts (`personal.store.forgotten`): real files on disk;
kept across a new store object, bounded, replaced atomically, and a damaged record is a
problem line, never an error, and never mistaken for a concept."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone

import pytest

from povss_ros.personal.store import ConceptStore, StoreNotWritable
from povss_ros.personal.store.forgotten import FORGOTTEN_FILE, MAX_FORGOTTEN, write_forgotten

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=timezone.utc)


def test_a_forget_is_remembered_by_the_next_store_object_and_a_later_one_wins(tmp_path):
    ConceptStore(tmp_path).remember_forgotten("my_mug", T0, "robot-a/povss")
    again = ConceptStore(tmp_path)
    assert again.forgotten() == {"my_mug": (T0, "robot-a/povss")}
    again.remember_forgotten("my_mug", T0 - timedelta(hours=1), "robot-b/povss")  # older
    assert again.forgotten()["my_mug"] == (T0, "robot-a/povss")
    again.remember_forgotten("my_mug", T0 + timedelta(hours=1), "robot-b/povss")
    assert again.forgotten()["my_mug"] == (T0 + timedelta(hours=1), "robot-b/povss")
    assert sorted(p.name for p in tmp_path.iterdir()) == [FORGOTTEN_FILE]  # no temp left
    view = again.scan()
    assert not view.metas and not view.problems  # the record is no concept


def test_the_record_keeps_the_newest_entries(tmp_path):
    many = {f"c{i:05d}": (T0 + timedelta(seconds=i), "n") for i in range(MAX_FORGOTTEN + 5)}
    write_forgotten(tmp_path, many)
    kept = ConceptStore(tmp_path).forgotten()
    assert len(kept) == MAX_FORGOTTEN
    assert "c00000" not in kept and f"c{MAX_FORGOTTEN + 4:05d}" in kept


@pytest.mark.parametrize("content, kept", [
    (b"\xff not json", {}),
    (b"[]", {}),
    (json.dumps({"version": 99, "forgotten": {}}).encode(), {}),
    (json.dumps({"version": 1, "forgotten": {
        "my_mug": {"stamp": T0.isoformat(), "by": "a"},
        "../etc": {"stamp": T0.isoformat(), "by": "a"},
        "my_cup": {"stamp": "yesterday", "by": "a"},
        "my_pen": {"stamp": "2026-12-07T12:00:00", "by": "a"},
        "my_box": {"stamp": T0.isoformat(), "by": 7}}}).encode(),
     {"my_mug": (T0, "a")}),
])
def test_a_damaged_record_is_a_problem_line_and_drops_only_what_is_bad(tmp_path, content, kept):
    (tmp_path / FORGOTTEN_FILE).write_bytes(content)
    problems: list[str] = []
    assert ConceptStore(tmp_path).forgotten(problems) == kept
    assert len(problems) == 1 and "forgotten" in problems[0]


def test_a_record_that_is_a_link_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"version": 1, "forgotten": {
        "my_mug": {"stamp": T0.isoformat(), "by": "a"}}}))
    store = tmp_path / "store"
    store.mkdir()
    os.symlink(target, store / FORGOTTEN_FILE)
    problems: list[str] = []
    assert ConceptStore(store).forgotten(problems) == {}
    assert problems


def test_a_store_that_cannot_be_written_refuses_to_record(tmp_path):
    (tmp_path / "a_file").write_text("x")
    store = ConceptStore(tmp_path / "a_file" / "concepts")
    with pytest.raises(StoreNotWritable, match="parameter concept_store"):
        store.remember_forgotten("my_mug", T0, "a")
    assert store.forgotten() == {}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]



def test_a_damaged_record_is_moved_aside_before_a_forget_is_recorded(tmp_path):
    good = {"stamp": T0.isoformat(), "by": "a"}
    damaged = json.dumps({"version": 1, "forgotten": {"my_mug": good,
                                                      "my_cup": {"stamp": "never"}}}).encode()
    (tmp_path / FORGOTTEN_FILE).write_bytes(damaged)
    store = ConceptStore(tmp_path)
    store.remember_forgotten("my_pen", T0, "b")
    assert store.forgotten() == {"my_mug": (T0, "a"), "my_pen": (T0, "b")}
    aside = list(tmp_path.glob(f"{FORGOTTEN_FILE}.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept as it was
    assert not store.scan().problems


def test_equal_times_are_decided_by_the_larger_node_id_as_between_nodes(tmp_path):
    store = ConceptStore(tmp_path)
    store.remember_forgotten("my_mug", T0, "robot-b")
    store.remember_forgotten("my_mug", T0, "robot-a")  # loses the tie
    assert store.forgotten()["my_mug"] == (T0, "robot-b")
    store.remember_forgotten("my_mug", T0, "robot-c")
    assert store.forgotten()["my_mug"] == (T0, "robot-c")


def test_the_operator_docs_state_the_records_bounds_as_the_code_has_them():
    from pathlib import Path

    from povss_ros.personal.store import shared

    text = " ".join((Path(__file__).resolve().parents[1] / "docs" / "ros.md").read_text()
                    .split())
    assert f"the newest {MAX_FORGOTTEN})" in text
    assert shared.MAX_CLOCK_AHEAD == timedelta(hours=1) and "more than an hour ahead" in text
