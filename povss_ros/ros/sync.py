"""Pairs colour frames with depth images by stamp (message_filters is not installable here).

A colour frame waits, among at most `pending` others, for the depth image whose stamp is
nearest to its own within `slop` seconds (0: equal stamps only). It leaves with its depth as
soon as one arrives; without one when the depth stream has moved past it (a later depth came
and none matched) or when newer frames push it out. Only the newest frame that leaves is
returned: the node processes newest-first and counts the rest as dropped. Plain Python, no
rclpy: the node feeds it from its callbacks under one lock.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass


@dataclass
class Paired:
    """A colour frame ready for processing, with its depth or why it has none."""

    stamp_ns: int
    colour: object
    depth: object | None
    problem: str = ""  # why `depth` is None ("" when it is not)
    dropped: int = 0  # older colour frames that left unprocessed with this one


class StampPairing:
    """Approximate-time pairing of one colour stream with one depth stream."""

    def __init__(self, slop: float, pending: int = 3, depth_kept: int = 8) -> None:
        self.slop_ns = round(slop * 1e9)
        self._colour: deque[tuple[int, object]] = deque()
        self._depth: deque[tuple[int, object]] = deque(maxlen=depth_kept)
        self._pending = pending
        self._lock = threading.Lock()

    def set_slop(self, slop: float) -> None:
        with self._lock:
            self.slop_ns = round(slop * 1e9)

    def add_colour(self, stamp_ns: int, msg: object) -> Paired | None:
        with self._lock:
            self._colour.append((stamp_ns, msg))
            return self._release()

    def add_depth(self, stamp_ns: int, msg: object) -> Paired | None:
        with self._lock:
            self._depth.append((stamp_ns, msg))
            return self._release()

    def clear(self) -> None:
        with self._lock:
            self._colour.clear()
            self._depth.clear()

    def _nearest(self, stamp_ns: int) -> tuple[int, object] | None:
        """The kept depth nearest in time to `stamp_ns` (None: none kept)."""
        return min(self._depth, key=lambda d: abs(d[0] - stamp_ns), default=None)

    def _release(self) -> Paired | None:
        """The newest colour frame that can leave now, older pending ones dropped with it."""
        for i in range(len(self._colour) - 1, -1, -1):
            stamp, msg = self._colour[i]
            near = self._nearest(stamp)
            if near is not None and abs(near[0] - stamp) <= self.slop_ns:
                return self._leave(i, Paired(stamp, msg, near[1]))
            newest_depth = self._depth[-1][0] if self._depth else None
            passed = newest_depth is not None and newest_depth > stamp + self.slop_ns
            if passed or (i == 0 and len(self._colour) > self._pending):
                return self._leave(i, Paired(stamp, msg, None, self._why_none(stamp, near)))
        return None

    def _why_none(self, stamp: int, near: tuple[int, object] | None) -> str:
        if near is None:
            return "no depth image received (is the depth topic remapped to the camera's?)"
        gap = (near[0] - stamp) / 1e6
        return (f"no depth image within sync_slop ({self.slop_ns / 1e6:g} ms) of the colour "
                f"frame: the nearest is {gap:+.1f} ms away")

    def _leave(self, i: int, paired: Paired) -> Paired:
        paired.dropped = i
        for _ in range(i + 1):
            self._colour.popleft()
        return paired
