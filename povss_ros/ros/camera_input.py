"""One camera of the povss node: its topics, and what the node holds of its stream.

A node segments several cameras with one model (`cameras` parameter); each camera keeps its
own colour/depth pairing, its newest camera_info, the newest frame waiting for the frame
worker and its frame numbers for /diagnostics, so one camera's stream (a refused frame, a
missing depth) never touches another's. No subscriptions here: the node makes them, with
`topic` names.
"""

from __future__ import annotations

import time

from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from sensor_msgs.msg import CameraInfo

from ..cameras import topic_prefix
from .diagnostics import FrameStats
from .sync import Paired, StampPairing


class CameraInput:
    """One camera's input state; the node's frame lock guards `waiting` and `waiting_since`."""

    def __init__(self, name: str, sync_slop: float) -> None:
        self.name = name
        self.pairing = StampPairing(sync_slop)
        self.camera_info: CameraInfo | None = None
        self.depth_refused = ""  # why the newest depth image was refused ("" if it was not)
        self.waiting: Paired | None = None  # the newest frame not yet processed
        self.waiting_since = 0.0  # monotonic time since when a frame of this camera waits
        self.stats = FrameStats()
        self.subscriptions: list = []
        # Its callbacks run one at a time, beside other cameras' (decoding a compressed frame
        # of one camera never waits for another's).
        self.group = MutuallyExclusiveCallbackGroup()

    def topic(self, name: str) -> str:
        """The relative name of one of its inputs: "image" -> "image" or "head/image"."""
        return topic_prefix(self.name) + name

    def where(self) -> str:
        """For log lines: " on camera head", or "" for the unnamed camera."""
        return f" on camera {self.name}" if self.name else ""

    def offer(self, paired: Paired) -> int:
        """Make `paired` the waiting frame (call under the node's frame lock); returns the
        frames dropped with it (older ones the pairing skipped, and a frame it replaces)."""
        dropped = paired.dropped + (self.waiting is not None)
        if self.waiting is None:
            self.waiting_since = time.monotonic()
        self.waiting = paired
        return dropped

    def take(self) -> Paired | None:
        """The waiting frame, leaving none (call under the node's frame lock)."""
        paired, self.waiting = self.waiting, None
        return paired

    def clear(self) -> None:
        """Forget pending frames and depth images (the node pauses or resubscribes)."""
        self.pairing.clear()
        self.waiting = None
