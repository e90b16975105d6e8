"""Colour/depth pairing by stamp (povss_ros.ros.sync): exact, approximate, late and missing."""

from __future__ import annotations

from povss_ros.ros.sync import StampPairing

MS = 1_000_000


def test_equal_stamps_pair_whichever_arrives_first():
    p = StampPairing(0.0)
    assert p.add_colour(100 * MS, "c100") is None  # waits for its depth
    out = p.add_depth(100 * MS, "d100")
    assert (out.colour, out.depth, out.problem, out.dropped) == ("c100", "d100", "", 0)
    assert p.add_depth(133 * MS, "d133") is None
    out = p.add_colour(133 * MS, "c133")  # depth came first
    assert (out.colour, out.depth) == ("c133", "d133")


def test_approximate_within_slop_takes_the_nearest_depth():
    p = StampPairing(0.010)
    p.add_depth(95 * MS, "d95")
    p.add_depth(103 * MS, "d103")
    out = p.add_colour(100 * MS, "c100")
    assert out.depth == "d103"
    assert StampPairing(0.0).add_depth(1, "x") is None


def test_a_frame_the_depth_stream_passed_leaves_without_depth_with_the_gap():
    p = StampPairing(0.005)
    assert p.add_colour(100 * MS, "c100") is None
    out = p.add_depth(120 * MS, "d120")  # depth moved past 100 ms + slop: none will match
    assert out.colour == "c100" and out.depth is None
    assert "sync_slop (5 ms)" in out.problem and "+20.0 ms" in out.problem


def test_no_depth_at_all_still_lets_frames_through_after_the_pending_limit():
    p = StampPairing(0.0, pending=2)
    assert p.add_colour(1 * MS, "c1") is None
    assert p.add_colour(2 * MS, "c2") is None
    out = p.add_colour(3 * MS, "c3")
    assert out.colour == "c1" and out.depth is None and "no depth image received" in out.problem


def test_newest_match_drops_the_older_waiting_frames():
    p = StampPairing(0.0)
    p.add_colour(1 * MS, "c1")
    p.add_colour(2 * MS, "c2")
    out = p.add_depth(2 * MS, "d2")
    assert (out.colour, out.dropped) == ("c2", 1)
    assert p.add_depth(1 * MS, "d1") is None  # c1 is gone


def test_clear_and_set_slop():
    p = StampPairing(0.0)
    p.add_colour(10 * MS, "c")
    p.clear()
    assert p.add_depth(10 * MS, "d") is None
    p.set_slop(0.02)
    assert p.add_colour(25 * MS, "c25").depth == "d"
