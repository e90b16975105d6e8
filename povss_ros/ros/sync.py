"""Pairs colour frames with depth images by stamp (message_filters is not installable here).

A colour frame waits, among at most `pending` others, for the depth image nearest to its stamp
within `slop` seconds (0: equal stamps only): it leaves with it once no nearer one can come
(equal stamps, or a depth at or after its own stamp has arrived; ties go to the newest). It
leaves without depth when the depth stream has passed it (a depth later than its stamp plus
the slop arrived and none matched), when its depth was refused, when newer frames push it
out, or at once while the depth stream is silent (colour frames have come for `silence`
seconds with no depth, good or refused, among them): a missing depth costs 3D, never latency.
A pause of both streams (a stalled camera driver, a starved machine: no colour frame for
`silence` seconds) is not silence: the first frame after it still waits for its depth. Before
any depth has come (at start, after `clear`), frames leave at once; in the stream's first
`silence` seconds that is expected (`WAITING`), later it is reported as missing depth. Only
the newest frame that leaves is returned: the node processes newest-first and counts the rest
as dropped. Plain Python, no rclpy: the node feeds it from its callbacks.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# Seconds of colour frames without any depth image after which frames stop waiting for one.
DEPTH_SILENCE_S = 0.5
# Depth images kept to pair from (the node's depth subscription queues as many).
DEPTH_KEPT = 8
REFUSED = "its depth image was refused"
# Why a frame has no depth in the first `silence` seconds of the colour stream, before any
# depth image came: expected (the depth driver starts a little later), not a fault.
WAITING = "the first depth image has not come yet"


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

    def __init__(self, slop: float, pending: int = 3, depth_kept: int = DEPTH_KEPT,
                 silence: float = DEPTH_SILENCE_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.slop_ns = round(slop * 1e9)
        self._colour: deque[tuple[int, object]] = deque()
        self._depth: deque[tuple[int, object | None]] = deque(maxlen=depth_kept)  # None: refused
        self._pending, self._silence, self._clock = pending, silence, clock
        self._depth_seen = False  # any depth, good or refused, since start or `clear`
        # Since when colour frames have been coming with no depth among them (None: a depth
        # came last); a gap of `silence` between colour frames is a pause and restarts it.
        self._colour_since: float | None = None
        self._last_colour_at: float | None = None
        self._first_colour_at: float | None = None  # since start or `clear`
        self._lock = threading.Lock()

    def set_slop(self, slop: float) -> None:
        with self._lock:
            self.slop_ns = round(slop * 1e9)

    def add_colour(self, stamp_ns: int, msg: object) -> Paired | None:
        with self._lock:
            self._colour.append((stamp_ns, msg))
            now, last = self._clock(), self._last_colour_at
            if self._colour_since is None or last is None or now - last > self._silence:
                self._colour_since = now
            self._last_colour_at = now
            if self._first_colour_at is None:
                self._first_colour_at = now
            return self._release()

    def add_depth(self, stamp_ns: int, msg: object) -> Paired | None:
        return self._depth_arrived(stamp_ns, msg)

    def depth_refused(self, stamp_ns: int) -> Paired | None:
        """A depth image came with this stamp but could not be used."""
        return self._depth_arrived(stamp_ns, None)

    def clear(self) -> None:
        with self._lock:
            self._colour.clear()
            self._depth.clear()
            self._depth_seen = False
            self._colour_since = self._last_colour_at = self._first_colour_at = None

    def _depth_arrived(self, stamp_ns: int, msg: object | None) -> Paired | None:
        with self._lock:
            self._depth.append((stamp_ns, msg))
            self._depth_seen, self._colour_since = True, None
            return self._release()

    def _nearest(self, stamp_ns: int) -> tuple[int, object | None] | None:
        """The kept depth nearest in time to `stamp_ns`, the newest on a tie."""
        return min(reversed(self._depth), key=lambda d: abs(d[0] - stamp_ns), default=None)

    def _release(self) -> Paired | None:
        """The newest colour frame that can leave now, older pending ones dropped with it."""
        since = self._colour_since
        silent = not self._depth_seen or (
            since is not None and self._clock() - since > self._silence)
        newest = max((d[0] for d in self._depth), default=None)
        for i in range(len(self._colour) - 1, -1, -1):
            stamp, msg = self._colour[i]
            near = self._nearest(stamp)
            if near is not None and abs(near[0] - stamp) <= self.slop_ns:
                if self.slop_ns == 0 or near[0] == stamp or newest >= stamp or silent:
                    problem = "" if near[1] is not None else REFUSED
                    return self._leave(i, Paired(stamp, msg, near[1], problem))
                continue  # a nearer depth may still come
            passed = newest is not None and newest > stamp + self.slop_ns
            if passed or silent or (i == 0 and len(self._colour) > self._pending):
                return self._leave(i, Paired(stamp, msg, None, self._why_none(stamp, near)))
        return None

    def _why_none(self, stamp: int, near: tuple[int, object | None] | None) -> str:
        if near is None:
            first = self._first_colour_at
            if not self._depth_seen and first is not None and (
                    self._clock() - first <= self._silence):
                return WAITING
            return "no depth image received (is the depth topic remapped to the camera's?)"
        gap = (near[0] - stamp) / 1e6
        return (f"no depth image within sync_slop ({self.slop_ns / 1e6:g} ms) of the colour "
                f"frame: the nearest is {gap:+.1f} ms away")

    def _leave(self, i: int, paired: Paired) -> Paired:
        paired.dropped = i
        for _ in range(i + 1):
            self._colour.popleft()
        return paired
