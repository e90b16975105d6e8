"""The node's frame statistics tell the truth over time: the rate falls to 0 once frames stop,
and an expected gap in depth is counted without raising an error."""

from __future__ import annotations

import pytest

from povss_ros.ros.diagnostics import RATE_WINDOW_S, FrameStats


def _finish(stats: FrameStats, times: list[float]) -> None:
    for t in times:
        stats.done.append(t)


def test_the_rate_counts_recent_frames_and_decays_when_they_stop():
    stats = FrameStats()
    _finish(stats, [100.0 + 0.2 * i for i in range(26)])  # 5 Hz for 5 s, ends at t=105
    assert stats.rate(now=105.0) == pytest.approx(5.0)
    assert stats.rate(now=105.0 + RATE_WINDOW_S / 2) == pytest.approx(5.0)
    assert stats.rate(now=105.0 + RATE_WINDOW_S + 0.1) == 0.0  # stopped: 0, not 5
    _finish(stats, [200.0, 201.0, 202.0])  # resumes at 1 Hz
    assert stats.rate(now=202.0) == pytest.approx(1.0)


def test_an_expected_depth_gap_is_counted_but_is_no_error():
    stats = FrameStats()
    stats.depth_frame("the first depth image has not come yet", is_error=False)
    assert (stats.frames_no_3d, stats.errors, stats.last_error) == (1, 0, "")
    stats.depth_frame("no depth image received")
    assert (stats.frames_no_3d, stats.errors) == (2, 1)
    assert stats.last_error == "3D skipped: no depth image received"
    stats.depth_frame("")
    assert stats.frames_3d == 1
