"""A ring buffer of recently seen camera frames, and the teach masks that match them by stamp.

`/teach_concept` without explicit images teaches from the last N frames. A user (or a UI)
may publish a mask for a frame on `teach_mask` with the frame's header stamp; the buffer
pairs them. Thread-safe: the image callback adds while a teach request reads. No ROS here:
stamps are plain integers (nanoseconds).

Bounded twice: at most `capacity` frames and at most `max_bytes` of frame pixels, the oldest
frames dropped first. The newest frame is always kept, even alone above the byte bound (a
teach from captured frames then still has the frame the camera sent last; the node holds it
anyway while it segments it). Masks are bounded alike: `capacity * 4` of them and
`max_bytes` of mask pixels, the oldest dropped first, the newest always kept; a mask is
checked against its frame when a teach uses it (`teaching.shot_masks.mask_problem`).

Each frame the model segmented may keep its encoding (SAN's frozen features: what teaching
and the automatic masks need), within `max_encoding_bytes` (0: none kept), the oldest dropped
first; a teach from captured frames then skips the model's forward for those frames. An
encoding belongs to one frame, not to its stamp: a camera that stamps every frame alike (0,
or a repeated stamp) must not have one frame's features taught with another's pixels.
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
    encoding: object | None = None  # SAN's features of this frame, if the node kept them


class CaptureBuffer:
    """The newest `capacity` frames within `max_bytes` (None: no byte bound), and up to
    `capacity * 4` masks within `max_bytes`, keyed by stamp."""

    def __init__(self, capacity: int, max_bytes: int | None = None,
                 max_encoding_bytes: int = 0) -> None:
        _check(capacity, max_bytes)
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_encoding_bytes = max(0, max_encoding_bytes)
        self._frames: deque[tuple[int, int, np.ndarray]] = deque()  # (number, stamp, rgb)
        self._added = 0  # frames added so far: each frame's number, whatever its stamp
        self._masks: OrderedDict[int, np.ndarray] = OrderedDict()  # by stamp
        self._encodings: OrderedDict[int, tuple[object, int]] = OrderedDict()  # by number
        self._frame_bytes = 0
        self._mask_bytes = 0
        self._encoding_bytes = 0
        self._lock = threading.Lock()

    def resize(self, capacity: int, max_bytes: int | None = None,
               max_encoding_bytes: int | None = None) -> None:
        """Keep at most `capacity` frames (and `max_bytes`, `max_encoding_bytes`, when given)
        from now on; the newest ones stay."""
        _check(capacity, max_bytes)
        with self._lock:
            self.capacity = capacity
            if max_bytes is not None:
                self.max_bytes = max_bytes
            if max_encoding_bytes is not None:
                self.max_encoding_bytes = max(0, max_encoding_bytes)
            self._trim()

    def add_encoding(self, stamp_ns: int, encoding: object, nbytes: int,
                     rgb: np.ndarray | None = None) -> None:
        """Keep SAN's features (`nbytes` of tensors) of the held frame stamped `stamp_ns`
        whose pixels are `rgb` (the array itself or an equal copy; None: the one frame held
        with that stamp) within the encoding budget; ignored when no such frame is held, when
        `rgb` is None and several held frames share the stamp, or when the budget is 0."""
        with self._lock:
            if nbytes > self.max_encoding_bytes:
                return
            stamped = [(n, img) for n, s, img in self._frames if s == stamp_ns]
            if rgb is None:
                mine = [n for n, _ in stamped]
            else:  # the array itself (the node's case), else the newest equal copy
                mine = [n for n, img in stamped if img is rgb] or [
                    n for n, img in stamped
                    if img.shape == rgb.shape and np.array_equal(img, rgb)][-1:]
            if len(mine) != 1:
                return
            old = self._encodings.pop(mine[0], None)
            self._encoding_bytes += nbytes - (old[1] if old else 0)
            self._encodings[mine[0]] = (encoding, nbytes)
            self._trim()

    def add_frame(self, stamp_ns: int, rgb: np.ndarray) -> None:
        with self._lock:
            self._added += 1
            self._frames.append((self._added, stamp_ns, rgb))
            self._frame_bytes += rgb.nbytes
            self._trim()

    def add_mask(self, stamp_ns: int, mask: np.ndarray) -> None:
        """Store a mask for a stamp; the oldest masks are forgotten beyond the bounds."""
        with self._lock:
            old = self._masks.pop(stamp_ns, None)
            if old is not None:
                self._mask_bytes -= old.nbytes
            self._masks[stamp_ns] = mask
            self._mask_bytes += mask.nbytes
            self._trim()

    def recent(self, count: int) -> list[CapturedFrame]:
        """The newest `count` frames (all if fewer), oldest first, with their masks if any."""
        with self._lock:
            frames = list(self._frames)[-count:] if count > 0 else []
            return [CapturedFrame(s, rgb, self._masks.get(s),
                                  self._encodings.get(n, (None, 0))[0]) for n, s, rgb in frames]

    @property
    def nbytes(self) -> int:
        """Bytes of the frames held (masks not counted)."""
        with self._lock:
            return self._frame_bytes

    @property
    def encoding_nbytes(self) -> int:
        """Bytes of the encodings held."""
        with self._lock:
            return self._encoding_bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)

    def _trim(self) -> None:
        """Drop the oldest frames and masks beyond the bounds (the newest of each stays)."""
        limit = self.max_bytes
        while len(self._frames) > self.capacity or (
                limit is not None and len(self._frames) > 1 and self._frame_bytes > limit):
            self._frame_bytes -= self._frames.popleft()[2].nbytes
        while len(self._masks) > self.capacity * 4 or (
                limit is not None and len(self._masks) > 1 and self._mask_bytes > limit):
            self._mask_bytes -= self._masks.popitem(last=False)[1].nbytes
        held = {number for number, _, _ in self._frames}
        for number in [n for n in self._encodings if n not in held]:
            self._encoding_bytes -= self._encodings.pop(number)[1]
        while self._encodings and self._encoding_bytes > self.max_encoding_bytes:
            self._encoding_bytes -= self._encodings.popitem(last=False)[1][1]


def _check(capacity: int, max_bytes: int | None) -> None:
    if capacity < 1:
        raise ValueError("capture buffer capacity must be at least 1")
    if max_bytes is not None and max_bytes < 1:
        raise ValueError("capture buffer byte bound must be at least 1 byte")
