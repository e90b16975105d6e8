"""The cameras one perception engine serves: their names, and what it keeps of each.

One engine holds one model and one concept store for every camera of a robot; per camera it
keeps only what belongs to that camera's stream: the recent frames a teach may use (its
`CaptureBuffer`) and its concepts' presence history (my mug seen by the head camera is not
thereby in view of the wrist camera). A camera is named by a ROS name token ("head",
"wrist"); the one unnamed camera "" is a node's single camera on its plain topics. No ROS
here: the node maps names to topics.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from .capture import CaptureBuffer
from .presence import PresenceFilter

# At most this many cameras in one engine: each costs a capture buffer (up to
# capture_buffer_mib) and a forward per frame; more is more likely a mistake than a robot.
MAX_CAMERAS = 16
# A ROS name token: what a topic name's part may be, so "<camera>/image" is a valid name.
_TOKEN = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")
# The one camera of a node that names none: its inputs and outputs have no camera prefix.
UNNAMED = ""


class UnknownCamera(ValueError):
    """A request named a camera the engine does not have."""


def cameras_problem(names: object) -> str | None:
    """Why `names` is not a valid list of cameras, or None: one to `MAX_CAMERAS` distinct
    ROS name tokens (letters, digits, underscores, starting with a letter), or the single
    unnamed camera [""] alone."""
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        return f"must be a list of camera names, got {names!r}"
    if list(names) == [UNNAMED]:
        return None
    if not names:
        return 'holds no camera: give [""] for one camera on the plain topics, or names'
    if len(names) > MAX_CAMERAS:
        return f"holds {len(names)} cameras; at most {MAX_CAMERAS}"
    for name in names:
        if not _TOKEN.match(name):
            return (f"holds {name!r}, not a camera name: letters, digits and underscores, "
                    'starting with a letter (the unnamed camera "" only alone)')
    doubled = sorted({n for n in names if list(names).count(n) > 1})
    if doubled:
        return f"names {', '.join(doubled)} twice"
    return None


def topic_prefix(camera: str) -> str:
    """What the camera's topics start with: "" for the unnamed camera, else "<camera>/"."""
    return f"{camera}/" if camera else ""


@dataclass
class CameraMemory:
    """What the engine keeps of one camera: its recent frames (and their teach masks and
    encodings) for a teach from captured frames, and its concepts' presence history."""

    capture: CaptureBuffer
    presence: PresenceFilter


def describe_cameras(names: Sequence[str]) -> str:
    """The cameras in words, for messages and diagnostics: 'head, wrist', or '"" (unnamed)'
    for a node's one unnamed camera."""
    return ", ".join(n or '"" (unnamed)' for n in names)
