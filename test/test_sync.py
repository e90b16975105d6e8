"""Colour/depth pairing by stamp (povss_ros.ros.sync): exact, nearest, late, refused, silent."""

from __future__ import annotations

from povss_ros.ros.sync import REFUSED, WAITING, StampPairing

MS = 1_000_000


class Clock:
    """A hand-moved monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pairing(slop: float = 0.0, **kw: object) -> tuple[StampPairing, Clock]:
    clock = Clock()
    p = StampPairing(slop, clock=clock, **kw)
    p.add_depth(0, "d0")  # the depth stream is alive
    return p, clock


def test_equal_stamps_pair_whichever_arrives_first():
    p, _ = pairing()
    assert p.add_colour(100 * MS, "c100") is None  # waits for its depth
    out = p.add_depth(100 * MS, "d100")
    assert (out.colour, out.depth, out.problem, out.dropped) == ("c100", "d100", "", 0)
    assert p.add_depth(133 * MS, "d133") is None
    out = p.add_colour(133 * MS, "c133")  # depth came first
    assert (out.colour, out.depth) == ("c133", "d133")


def test_approximate_pairing_waits_for_the_nearest_depth():
    p, _ = pairing(0.030)
    p.add_depth(75 * MS, "d75")
    assert p.add_colour(100 * MS, "c100") is None  # d75 is within the slop: a nearer may come
    out = p.add_depth(108 * MS, "d108")
    assert out.depth == "d108"  # 8 ms beats 25 ms
    p.add_depth(195 * MS, "d195")
    p.add_depth(203 * MS, "d203")
    assert p.add_colour(200 * MS, "c200").depth == "d203"  # settled: a later depth is there


def test_equal_stamps_on_a_tie_take_the_newest_depth():
    p, _ = pairing(0.010)
    for i in range(4):
        p.add_depth(50 * MS, f"d{i}")  # a driver that never moves its stamps
    assert p.add_colour(50 * MS, "c").depth == "d3"


def test_a_frame_the_depth_stream_passed_leaves_without_depth_with_the_gap():
    p, _ = pairing(0.005)
    assert p.add_colour(100 * MS, "c100") is None
    out = p.add_depth(120 * MS, "d120")  # depth moved past 100 ms + slop: none will match
    assert out.colour == "c100" and out.depth is None
    assert "sync_slop (5 ms)" in out.problem and "+20.0 ms" in out.problem


def test_a_refused_depth_releases_its_frame_at_once():
    p, _ = pairing()
    assert p.add_colour(100 * MS, "c100") is None
    out = p.depth_refused(100 * MS)
    assert (out.colour, out.depth, out.problem) == ("c100", None, REFUSED)


def test_a_silent_depth_stream_costs_3d_not_latency():
    p, clock = pairing(pending=10)
    assert p.add_colour(1 * MS, "c1") is None  # the stream was alive a moment ago
    for _ in range(5):  # colour frames keep coming, no depth among them
        clock.now += 0.1
        p.add_colour(1 * MS, "c1")
    clock.now += 0.1  # colour for 0.6 s with no depth: silent
    out = p.add_colour(2 * MS, "c2")
    assert (out.colour, out.depth, out.dropped) == ("c2", None, 6)
    assert "no depth image within sync_slop" in out.problem
    assert p.add_colour(3 * MS, "c3").colour == "c3"  # every new frame goes at once
    fresh_clock = Clock()
    fresh = StampPairing(0.0, clock=fresh_clock)  # nothing ever received: frames go at once
    assert fresh.add_colour(5 * MS, "c5").problem == WAITING  # as at any start
    fresh_clock.now = 0.6
    assert "no depth image received" in fresh.add_colour(6 * MS, "c6").problem
    p.add_depth(4 * MS, "d4")  # the stream is back: frames wait for their depth again
    assert p.add_colour(5 * MS, "c5") is None


def test_a_pause_of_both_streams_is_not_silence():
    """A stalled camera driver or a starved machine delivers nothing for a while, then a
    colour frame just before its depth: the frame waits for it, and keeps its 3D."""
    p, clock = pairing()
    clock.now = 2.0  # nothing at all for 2 s
    assert p.add_colour(1 * MS, "c1") is None
    clock.now = 2.001
    out = p.add_depth(1 * MS, "d1")
    assert (out.colour, out.depth) == ("c1", "d1")
    clock.now = 2.4  # then colour frames come for 0.6 s with no depth: that is silence
    assert p.add_colour(2 * MS, "c2") is None
    clock.now = 2.8
    assert p.add_colour(3 * MS, "c3") is None
    clock.now = 3.1
    assert p.add_colour(4 * MS, "c4").depth is None


def test_a_pause_after_a_frame_that_left_is_not_silence_either():
    """Depth first, then its frame (it leaves at once), then both streams pause: the frame
    after the pause waits for its depth too."""
    p, clock = pairing()
    for i in range(1, 4):
        clock.now = i * 0.033
        p.add_depth(i * 33 * MS, f"d{i}")
        assert p.add_colour(i * 33 * MS, f"c{i}").depth == f"d{i}"
    clock.now = 3.0
    assert p.add_colour(132 * MS, "c4") is None
    clock.now = 3.001
    assert p.add_depth(132 * MS, "d4").depth == "d4"


def test_newest_match_drops_the_older_waiting_frames():
    p, _ = pairing()
    p.add_colour(1 * MS, "c1")
    p.add_colour(2 * MS, "c2")
    out = p.add_depth(2 * MS, "d2")
    assert (out.colour, out.dropped) == ("c2", 1)
    assert p.add_depth(1 * MS, "d1") is None  # c1 is gone


def test_pending_frames_are_bounded():
    p, _ = pairing(pending=2)
    assert p.add_colour(1 * MS, "c1") is None
    assert p.add_colour(2 * MS, "c2") is None
    out = p.add_colour(3 * MS, "c3")  # one too many waiting: the oldest goes, without depth
    assert out.colour == "c1" and out.depth is None


def test_clear_and_set_slop():
    p, _ = pairing()
    p.add_colour(10 * MS, "c")
    p.clear()
    p.add_depth(0, "alive")
    p.add_depth(10 * MS, "d")
    p.set_slop(0.02)
    assert p.add_colour(25 * MS, "c25") is None  # d (15 ms away) qualifies; a nearer may come
    assert p.add_depth(27 * MS, "d27").depth == "d27"


def test_frames_before_the_first_depth_are_expected_then_reported_missing():
    """At start the colour stream often leads the depth stream: its first `silence` seconds
    of frames leave without depth as WAITING (no fault); after that, as missing depth."""
    clock = Clock()
    p = StampPairing(0.0, clock=clock)
    assert p.add_colour(0, "c0").problem == WAITING
    clock.now = 0.4
    assert p.add_colour(400 * MS, "c400").problem == WAITING
    clock.now = 0.6
    assert p.add_colour(600 * MS, "c600").problem.startswith("no depth image received")
    p.clear()  # a new start (the node reactivated): expected again
    clock.now = 5.0
    assert p.add_colour(5000 * MS, "c5000").problem == WAITING
