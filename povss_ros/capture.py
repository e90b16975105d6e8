"""A ring buffer of recently seen camera frames, and the teach masks that match them by stamp.

`/teach_concept` without explicit images teaches from the last N frames. A user (or a UI)
may publish a mask for a frame on `teach_mask` with the frame's header stamp; the buffer
pairs them. Thread-safe: the image callback adds while a teach request reads. No ROS here:
stamps are plain integers (nanoseconds).
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class CapturedFrame:
    stamp_ns: int
    rgb: np.ndarray
    mask: np.ndarray | None  # the teach mask received for this exact stamp, if any


class CaptureBuffer:
    """Keeps the newest `capacity` frames and up to `capacity * 4` masks keyed by stamp."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capture buffer capacity must be at least 1")
        self.capacity = capacity
        self._frames: deque[tuple[int, np.ndarray]] = deque(maxlen=capacity)
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def resize(self, capacity: int) -> None:
        """Keep at most `capacity` frames from now on (the newest ones stay)."""
        if capacity < 1:
            raise ValueError("capture buffer capacity must be at least 1")
        with self._lock:
            self.capacity = capacity
            self._frames = deque(self._frames, maxlen=capacity)
            while len(self._masks) > capacity * 4:
                self._masks.popitem(last=False)

    def add_frame(self, stamp_ns: int, rgb: np.ndarray) -> None:
        with self._lock:
            self._frames.append((stamp_ns, rgb))

    def add_mask(self, stamp_ns: int, mask: np.ndarray) -> None:
        """Store a mask for a stamp; the oldest masks are forgotten beyond the bound."""
        with self._lock:
            self._masks[stamp_ns] = mask
            self._masks.move_to_end(stamp_ns)
            while len(self._masks) > self.capacity * 4:
                self._masks.popitem(last=False)

    def recent(self, count: int) -> list[CapturedFrame]:
        """The newest `count` frames (all if fewer), oldest first, with their masks if any."""
        with self._lock:
            frames = list(self._frames)[-count:] if count > 0 else []
            return [CapturedFrame(s, rgb, self._masks.get(s)) for s, rgb in frames]

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)
