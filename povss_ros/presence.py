"""Whether a personal concept is in view, steadied over frames.

Each frame decides on its own whether the concept has a region (identity, then the area and
score gates of `objects.find_objects`); one frame's decision flickers where the object is
small, half hidden or seen from an odd side, and a look-alike may pass for one frame. A
grasp planner wants the object's state, not each frame's vote: the concept becomes present
after it was seen in `enter` of the last `enter_window` frames, and absent again after it
was missed in `leave` of the last `leave_window` frames. While present it may miss a frame
(a brief occlusion): it stays present, without a region in that frame. While absent, a frame
that sees it is not shown yet: its region goes back to the base word.

A concept taught again, corrected or forgotten is another concept under the same id: its
history belongs to the version it was recorded for (`update`'s `version`), and a new version
starts afresh, so a decision of the replaced concept never outlives it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class PresenceFilter:
    """Per-concept hysteresis over the frames' own presence decisions."""

    enter: int = 1
    enter_window: int = 1
    leave: int = 1
    leave_window: int = 1
    _seen: dict[str, deque[bool]] = field(default_factory=dict, repr=False)
    _present: dict[str, bool] = field(default_factory=dict, repr=False)
    _version: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for count, window, what in ((self.enter, self.enter_window, "enter"),
                                    (self.leave, self.leave_window, "leave")):
            if not 1 <= count <= window:
                raise ValueError(f"presence {what}: {count} of {window} frames; need 1 <= "
                                 f"{what} <= {what}_window")

    def update(self, concept_id: str, seen: bool, version: int = 0) -> bool:
        """Record this frame's decision for `concept_id`; whether it counts as present now.
        A `version` other than the one its history was recorded for starts it afresh."""
        if self._version.get(concept_id, version) != version:
            self.reset(concept_id)
        self._version[concept_id] = version
        history = self._seen.setdefault(
            concept_id, deque(maxlen=max(self.enter_window, self.leave_window)))
        history.append(seen)
        recent = list(history)
        if self._present.get(concept_id, False):
            missed = recent[-self.leave_window:].count(False)
            self._present[concept_id] = missed < self.leave
        else:
            self._present[concept_id] = recent[-self.enter_window:].count(True) >= self.enter
        return self._present[concept_id]

    def present(self, concept_id: str, version: int = 0) -> bool:
        """Whether `concept_id` in `version` counts as present now, recording nothing (a
        version with no frames yet: absent)."""
        if self._version.get(concept_id) != version:
            return False
        return self._present.get(concept_id, False)

    def reset(self, concept_id: str) -> None:
        """Forget one concept's history: its next frame starts afresh."""
        self._seen.pop(concept_id, None)
        self._present.pop(concept_id, None)
        self._version.pop(concept_id, None)

    def keep_only(self, concept_ids: set[str]) -> None:
        """Forget the state of concepts that are no longer taught."""
        for cid in [c for c in self._seen if c not in concept_ids]:
            self.reset(cid)
