"""What a caller asks of teaching and what it gets back: plain data, no behaviour.

A leaf module (numpy only), so that every layer that speaks of teaching (the engine, the ROS
services, the CLI, the lab) can name these types without importing the code that teaches.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

Box = tuple[float, float, float, float]  # x_min, y_min, x_max, y_max in pixels
Point = tuple[float, float]  # x, y in pixels


def add_teach_mode_flags(parser: argparse.ArgumentParser, look_alike_flags: str) -> None:
    """--overwrite, --correct and --category: how a teach treats what is stored, said once for
    both command lines (`povss teach` and `povss node teach`), which map them onto
    `TeachRequest`'s overwrite, correct and unique; `look_alike_flags` names the command
    line's own look-alike flags."""
    parser.add_argument("--overwrite", action="store_true",
                        help="replace a concept of this name (its shots; its look-alikes are "
                        f"kept unless {look_alike_flags} are given)")
    parser.add_argument("--correct", action="store_true",
                        help="add these shots and look-alikes to the stored concept and fit it "
                        "again (same concept id and class id); with none, fit a concept "
                        "taught for other weights again for these")
    parser.add_argument("--category", action="store_true",
                        help="the concept is a small category (several objects), not one "
                        "object")


@dataclass
class TeachRequest:
    """Teach (or re-teach, with `overwrite`) the concept `name`, a kind of `base_class`.

    Shots come from explicit `images` (each with its mask in `masks`, or none for automatic
    masks), else from the newest `num_frames` captured camera frames (0: the configured
    default). Operator prompts mark the object: one box or point per shot (oldest first), or
    exactly one, which marks the newest shot. `unique`: the concept is one object, and each
    frame shows it on at most one region (`personal.identity`); false for a small category
    ("my kids' toys"); None (the default): one object for a new concept, and what the stored
    concept is for a correction.

    "Not this one": negative exemplars mark a look-alike on the same frames, by box, point
    (one per frame or one for the newest, as for the positives) or mask (one per explicit
    image, all zero where an image has none). A frame with a negative and no positive prompt
    or mask (or an all-zero one) gives only the negative. `correct` adds this request's
    positives and negatives to the stored concept of that name and fits it again from
    everything stored, keeping its id and class id; it reads only what this request marks
    (a captured frame's `teach_mask` from an earlier teach is not a new shot). A concept
    stored for other weights is corrected the same way, for these weights; marking nothing
    then fits it from what is stored alone. `overwrite` teaches the concept anew from this
    request's shots and keeps its stored look-alikes, unless the request gives its own
    (they replace them) or another base class (they are dropped).
    """

    name: str
    base_class: str
    images: list[np.ndarray] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    num_frames: int = 0
    overwrite: bool = False
    boxes: list[Box] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    unique: bool | None = None
    negative_masks: list[np.ndarray] = field(default_factory=list)
    negative_boxes: list[Box] = field(default_factory=list)
    negative_points: list[Point] = field(default_factory=list)
    correct: bool = False
    # Whose captured frames a teach without `images` reads ("": the first camera); a camera
    # the engine does not have fails the teach (`PerceptionEngine.camera`).
    camera: str = ""

    @property
    def has_negatives(self) -> bool:
        return bool(self.negative_masks or self.negative_boxes or self.negative_points)


@dataclass
class TeachOutcome:
    """The answer to a `TeachRequest`; on failure only `success`, `message` and, when frames
    were looked at, the rejected frames and the review picture are set."""

    success: bool
    message: str
    concept_id: str = ""
    class_id: int = 0
    shots_used: int = 0
    negatives_used: int = 0
    frames_rejected: int = 0
    training_seconds: float = 0.0
    fit_iou: float = 0.0
    rejected_frames: list[str] = field(default_factory=list)  # "<frame>: <reason>" each
    review: np.ndarray | None = None  # RGB: every teach frame, its mask or why it was rejected


class TeachRefused(ValueError):
    """A teach that cannot go on, with the frames it rejected and the review picture that
    shows why (both empty when it stopped before looking at any frame)."""

    def __init__(self, message: str, rejected: Iterable[str] = (),
                 review: np.ndarray | None = None) -> None:
        super().__init__(message)
        self.rejected = list(rejected)
        self.review = review

    def outcome(self) -> TeachOutcome:
        return TeachOutcome(False, str(self), frames_rejected=len(self.rejected),
                            rejected_frames=self.rejected, review=self.review)


def coordinate_groups(values: Iterable[float], size: int, what: str) -> list[tuple[float, ...]]:
    """A flat list of numbers (as a ROS message or a command line carries them) -> tuples of
    `size`: 4 per box, 2 per point. ValueError when the count does not divide."""
    flat = [float(v) for v in values]
    if len(flat) % size:
        raise ValueError(f"{what} holds {len(flat)} numbers: give {size} per entry")
    return [tuple(flat[i : i + size]) for i in range(0, len(flat), size)]
