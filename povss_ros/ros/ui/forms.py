"""What the teach page may send, checked before anything reaches the node.

Each form is parsed from the page's JSON into plain values or refused with a `FormError`
whose message the page shows as is. The rules are the services' own: concept names through
`personal.names` (the rules the node applies), vocabularies through
`vocabulary.parse_vocabulary`, prompt counts through `teaching.requests.coordinate_groups`;
a box or point follows `teaching.shot_masks.check_prompt` (finite, at least a pixel wide,
inside the frame), restated here because that module loads torch, which this process does not
need (test_teach_ui keeps the two in agreement). The node checks everything again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from ...personal.names import canonical_name, display_name
from ...teaching.requests import coordinate_groups
from ...vocabulary import parse_vocabulary

MAX_TEXT = 256  # longest name or base word the page may send (names.MAX_NAME_CHARS)
MAX_WORDS = 2000  # a vocabulary typed on a page; the node itself takes up to 32768


class FormError(ValueError):
    """Input the page sent that the node would refuse, or that is not what a form holds; the
    message is shown on the page."""


@dataclass(frozen=True)
class Mark:
    """A box (x_min, y_min, x_max, y_max) or a point (x, y) in pixels of a frozen frame."""

    kind: str  # "box" | "point"
    values: tuple[float, ...]


@dataclass(frozen=True)
class TeachForm:
    """One teach as the page asks it: a mark on one frozen frame, as the object or (with
    `negative`) as a look-alike that is "not this one"."""

    name: str
    base_class: str
    frame: str  # the frozen frame's stamp, "SEC.NANOSEC"
    mark: Mark
    negative: bool = False
    correct: bool = False
    overwrite: bool = False
    category: bool = False


def _text(data: Mapping, key: str, what: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise FormError(f"{what} must be text")
    if len(value) > MAX_TEXT:
        raise FormError(f"{what} is longer than {MAX_TEXT} characters")
    return value


def _flag(data: Mapping, key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise FormError(f"{key} must be true or false")
    return value


def check_mark(kind: str, values: object, width: int, height: int) -> Mark:
    """A box or point for a `width` x `height` frame, checked as the node checks a prompt
    (`shot_masks.check_prompt`): FormError for the wrong count, a non-finite or non-numeric
    value, a box under a pixel wide or tall, or anything outside the frame."""
    if kind not in ("box", "point"):
        raise FormError("mark the object with a box or a point")
    if not isinstance(values, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        raise FormError(f"the {kind} must be a list of numbers")
    size = 4 if kind == "box" else 2
    try:
        groups = coordinate_groups(values, size, kind)
    except ValueError as exc:
        raise FormError(str(exc)) from None
    if len(groups) != 1:
        raise FormError(f"give one {kind}: {size} numbers")
    (group,) = groups
    if not all(math.isfinite(v) for v in group):
        raise FormError(f"the {kind}'s coordinates must be finite numbers")
    shown = ", ".join(f"{v:g}" for v in group)
    if kind == "box":
        x0, y0, x1, y1 = group
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise FormError(f"box ({shown}) is degenerate: draw it at least a pixel wide and "
                            "tall, from its top-left to its bottom-right corner")
        if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
            raise FormError(f"box ({shown}) is outside the {width}x{height} frame "
                            f"(x in 0..{width}, y in 0..{height})")
    elif not (0 <= group[0] < width and 0 <= group[1] < height):
        raise FormError(f"point ({shown}) is outside the {width}x{height} frame")
    return Mark(kind, tuple(group))


def teach_form(data: object, frame_size: Mapping[str, tuple[int, int]],
               vocabulary: list[str]) -> TeachForm:
    """The page's teach JSON -> a `TeachForm`, or FormError saying what to fix.
    `frame_size`: the frozen frames still held, stamp -> (width, height); `vocabulary`: the
    node's words (empty when not known yet: the node then judges the base word)."""
    if not isinstance(data, Mapping):
        raise FormError("the teach form must be a JSON object")
    try:
        name = display_name(_text(data, "name", "the name"))
    except ValueError as exc:
        raise FormError(str(exc)) from None
    base = _text(data, "base_class", "the base class").strip()
    if not base:
        raise FormError("pick the base class: the vocabulary word the object is a kind of")
    if vocabulary and base not in vocabulary:
        raise FormError(f"{base!r} is not a word of the node's vocabulary; pick one of its "
                        "words, or add it to the vocabulary first")
    frame = _text(data, "frame", "the frame")
    if frame not in frame_size:
        raise FormError("freeze a frame first (a frozen frame is kept for a while: freeze "
                        "again if it is gone)")
    mark = data.get("mark")
    if not isinstance(mark, Mapping):
        raise FormError("draw a box around the object or click a point on it")
    width, height = frame_size[frame]
    checked = check_mark(mark.get("kind"), mark.get("values"), width, height)
    form = TeachForm(name, base, frame, checked, negative=_flag(data, "negative"),
                     correct=_flag(data, "correct"), overwrite=_flag(data, "overwrite"),
                     category=_flag(data, "category"))
    if form.correct and form.overwrite:
        raise FormError("correct adds to the stored concept, overwrite replaces it: pick one")
    if form.negative and not form.correct:
        raise FormError('"not this one" corrects a taught concept: it needs correct')
    return form


def forget_form(data: object) -> str:
    """The name or concept id to forget, or FormError."""
    if not isinstance(data, Mapping):
        raise FormError("the forget form must be a JSON object")
    name = _text(data, "name", "the name")
    try:
        canonical_name(name, strict=False)  # as stored names are looked up
    except ValueError as exc:
        raise FormError(str(exc)) from None
    return name


def vocabulary_form(data: object) -> list[str]:
    """The new vocabulary's words (a comma-separated text or a list), or FormError."""
    if not isinstance(data, Mapping):
        raise FormError("the vocabulary form must be a JSON object")
    words = data.get("words")
    if isinstance(words, str):
        words = words.split(",")
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise FormError("the vocabulary is a list of words, separated by commas")
    if len(words) > MAX_WORDS:
        raise FormError(f"more than {MAX_WORDS} words: set a vocabulary this long with "
                        "`ros2 param set`")
    if any(len(w) > MAX_TEXT for w in words):
        raise FormError(f"a vocabulary word is longer than {MAX_TEXT} characters")
    try:
        return parse_vocabulary([w for w in words])
    except ValueError as exc:
        raise FormError(str(exc)) from None
