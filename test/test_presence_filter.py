"""The presence filter (`presence.PresenceFilter`): in after n of the last m frames, out
after n' of the last m'; per concept; its counts checked; and the engine applying it so that
labels, masks and objects agree."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from povss_ros.objects import ObjectConfig
from povss_ros.presence import PresenceFilter


def _run(f: PresenceFilter, seen: str, cid: str = "my_mug") -> str:
    return "".join("P" if f.update(cid, s == "1") else "." for s in seen)


def test_enters_after_n_of_m_and_leaves_after_n_prime_of_m_prime():
    f = PresenceFilter(enter=2, enter_window=3, leave=3, leave_window=5)
    assert _run(f, "1011") == "..PP"  # one sighting is not enough; two of three are
    assert _run(f, "0101") == "PPPP"  # misses below three of five: held
    assert _run(f, "00") == ".."  # 0,1,0,1,0 from the last five: three missed
    assert _run(f, "1") == "."  # one of three again


def test_a_single_false_sighting_never_shows():
    f = PresenceFilter(enter=2, enter_window=3, leave=1, leave_window=1)
    assert _run(f, "100100100") == "........."
    assert _run(f, "110") == ".P."  # leave after one miss


def test_one_of_one_is_no_filter_and_concepts_are_independent():
    f = PresenceFilter()
    assert _run(f, "1010") == "P.P."
    g = PresenceFilter(enter=2, enter_window=2, leave=2, leave_window=2)
    assert _run(g, "11", "a") == ".P" and _run(g, "1", "b") == "."
    g.keep_only({"b"})
    assert _run(g, "1", "a") == "."  # forgotten: starts afresh


def test_a_new_version_of_a_concept_starts_afresh_and_reading_records_nothing():
    f = PresenceFilter(enter=2, enter_window=3, leave=3, leave_window=5)
    assert "".join("P" if f.update("a", True, 1) else "." for _ in range(2)) == ".P"
    assert f.update("b", True) is False  # another concept keeps its own history
    assert f.present("a", 1) and not f.present("a", 2)  # version 2 has seen no frame yet
    assert f.present("a", 1)  # reading recorded nothing
    assert f.update("a", False, 2) is False  # afresh: version 1's sightings are gone
    assert f.update("a", True, 2) is False and f.update("a", True, 2) is True
    assert f.update("b", True) is True
    f.reset("a")
    assert not f.present("a", 2) and f.update("a", True, 2) is False


@pytest.mark.parametrize("fields", [dict(presence_enter=4, presence_enter_window=3),
                                    dict(presence_leave=6, presence_leave_window=5)])
def test_a_count_over_its_window_is_refused(fields):
    with pytest.raises(ValueError, match="presence"):
        ObjectConfig(**fields)


def test_the_node_defaults_come_from_the_object_settings():
    f = ObjectConfig().presence_filter()
    assert (f.enter, f.enter_window, f.leave, f.leave_window) == (1, 1, 1, 1)


def test_the_node_default_is_the_filter_the_identity_eval_chose_on_world_0():
    """docs/results/identity.md names the filter its rule chose on world 0; the node's default
    is that filter (chosen on world 0, the trained identities; reported on world 1)."""
    text = (Path(__file__).resolve().parents[1] / "docs/results/identity.md").read_text()
    chosen = re.search(r"chosen on world 0 with \d+ marked: \*\*(\([\d, ]+\))\*\*", text)
    assert chosen, "docs/results/identity.md names no chosen filter"
    f = ObjectConfig().presence_filter()
    assert (f.enter, f.enter_window, f.leave, f.leave_window) == ast.literal_eval(chosen[1])
