"""The capture buffer pairs frames with teach masks by stamp and never grows unbounded."""

import threading

import numpy as np
import pytest

from povss_ros.capture import CaptureBuffer


def test_keeps_the_newest_frames_oldest_first():
    buf = CaptureBuffer(3)
    for stamp in range(5):
        buf.add_frame(stamp, np.full((2, 2, 3), stamp, np.uint8))
    assert [f.stamp_ns for f in buf.recent(10)] == [2, 3, 4]
    assert [f.stamp_ns for f in buf.recent(2)] == [3, 4]
    assert buf.recent(0) == [] and len(buf) == 3


def test_masks_match_frames_by_exact_stamp():
    buf = CaptureBuffer(4)
    buf.add_frame(10, np.zeros((2, 2, 3), np.uint8))
    buf.add_frame(20, np.zeros((2, 2, 3), np.uint8))
    mask = np.ones((2, 2), bool)
    buf.add_mask(20, mask)
    buf.add_mask(15, ~mask)  # no frame with this stamp: never paired
    frames = buf.recent(2)
    assert frames[0].mask is None and frames[1].mask is mask


def test_mask_store_is_bounded():
    buf = CaptureBuffer(2)
    for stamp in range(100):
        buf.add_mask(stamp, np.zeros((1, 1), bool))
    assert len(buf._masks) == 8 and 99 in buf._masks and 0 not in buf._masks


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        CaptureBuffer(0)


def test_concurrent_writers_and_readers():
    buf = CaptureBuffer(16)
    frame = np.zeros((1, 1, 3), np.uint8)

    def write(base: int) -> None:
        for i in range(2000):
            buf.add_frame(base + i, frame)

    threads = [threading.Thread(target=write, args=(k * 10000,)) for k in range(3)]
    for t in threads:
        t.start()
    for _ in range(200):
        assert len(buf.recent(16)) <= 16
    for t in threads:
        t.join()
    assert len(buf) == 16


def _frame(stamp: int, side: int = 10) -> np.ndarray:
    return np.full((side, side, 3), stamp % 256, np.uint8)  # side*side*3 bytes


def test_byte_bound_drops_the_oldest_frames_first():
    buf = CaptureBuffer(30, max_bytes=1000)  # 300-byte frames: three fit
    for stamp in range(6):
        buf.add_frame(stamp, _frame(stamp))
    assert [f.stamp_ns for f in buf.recent(30)] == [3, 4, 5]
    assert buf.nbytes == 900 and len(buf) == 3


def test_a_frame_above_the_byte_bound_is_kept_alone():
    buf = CaptureBuffer(30, max_bytes=1000)
    buf.add_frame(1, _frame(1))
    buf.add_frame(2, _frame(2, side=40))  # 4800 bytes: more than the whole bound
    assert [f.stamp_ns for f in buf.recent(30)] == [2] and buf.nbytes == 4800
    buf.add_frame(3, _frame(3))  # the next frame pushes it out
    assert [f.stamp_ns for f in buf.recent(30)] == [3] and buf.nbytes == 300


def test_resize_applies_a_new_byte_bound_and_keeps_the_old_one_when_none_is_given():
    buf = CaptureBuffer(30, max_bytes=10_000)
    for stamp in range(10):
        buf.add_frame(stamp, _frame(stamp))
    assert len(buf) == 10
    buf.resize(30, max_bytes=650)
    assert [f.stamp_ns for f in buf.recent(30)] == [8, 9]
    buf.resize(5)  # the byte bound stays 650
    for stamp in range(10, 14):
        buf.add_frame(stamp, _frame(stamp))
    assert [f.stamp_ns for f in buf.recent(30)] == [12, 13]
    with pytest.raises(ValueError, match="at least 1 byte"):
        buf.resize(5, max_bytes=0)


def test_masks_are_bounded_in_bytes_too():
    buf = CaptureBuffer(30, max_bytes=250)  # 100-byte masks: two fit
    for stamp in range(5):
        buf.add_mask(stamp, np.zeros((10, 10), bool))
    assert list(buf._masks) == [3, 4]
    buf.add_mask(4, np.zeros((10, 10), bool))  # the same stamp again replaces, not adds
    assert list(buf._masks) == [3, 4]
