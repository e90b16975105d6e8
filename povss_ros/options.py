"""User-facing settings fields: a default, its help, its valid values and when it is read.

A settings dataclass marks the fields users may set with `option(default, help, ...)`; the
node declares one parameter per such field (help, range and choices become its descriptor)
and `povss` one flag, so a default, its explanation and its limits are written once, beside
the field. `check` is the one validation of a value, used by the node's parameter callback,
at start-up, by the CLI and by `validate`, which settings dataclasses call on construction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

# When a setting is read. RUN: it takes effect while the node runs (the next frame or teach).
# CONFIGURE: it is read when the model is loaded (the node's configure transition).
# START: it is read once, when the process starts (a read-only parameter).
RUN = "run"
CONFIGURE = "configure"
START = "start"


def option(
    default: object,
    help: str,  # noqa: A002 - argparse's word
    *,
    low: float | None = None,
    high: float | None = None,
    choices: tuple[str, ...] | None = None,
    odd: bool = False,
    positive: bool = False,
    read: str = RUN,
    rule: Callable[[object], str | None] | None = None,
) -> dataclasses.Field:
    """A user-facing dataclass field: default, one-line help, valid values, when it is read.

    `low`/`high` bound a number (inclusive), `positive` excludes zero, `odd` asks for an odd
    integer, `choices` lists the accepted strings (a string ending in ``*`` accepts any
    suffix, e.g. ``cuda:*``). `rule`, for a text or list value, is its whole check instead
    of the blank-entry and choices checks: why a value is refused, or None (a list whose
    entries depend on each other, such as camera names).
    """
    meta = {"help": help, "low": low, "high": high, "choices": choices, "odd": odd,
            "positive": positive, "read": read, "rule": rule}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def user_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that users set (those made with `option`)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def validate(settings: object) -> None:
    """Raise ValueError naming the first user field of the dataclass `settings` whose value
    `check` refuses. Settings dataclasses call it from ``__post_init__``, so a bad value is
    refused where it is made (``dataclasses.replace`` too), not when it is first read."""
    for f in user_fields(type(settings)):
        why = check(f, getattr(settings, f.name))
        if why:
            raise ValueError(f"{type(settings).__name__}.{f.name} {why}")


def check(f: dataclasses.Field, value: object) -> str | None:
    """Why `value` is not valid for the user field `f`, or None when it is."""
    meta = f.metadata
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _check_text(meta, value)
    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {value}"
    if meta["positive"] and value <= 0:
        return f"must be greater than 0, got {value}"
    if meta["low"] is not None and value < meta["low"]:
        return f"must be at least {meta['low']}, got {value}"
    if meta["high"] is not None and value > meta["high"]:
        return f"must be at most {meta['high']}, got {value}"
    if meta["odd"] and int(value) % 2 == 0:
        return f"must be odd, got {value}"
    return None


def _check_text(meta: dict, value: object) -> str | None:
    if meta.get("rule") is not None:
        return meta["rule"](value)
    values = value if isinstance(value, (list, tuple)) else [value]
    for v in values:
        if isinstance(v, str) and isinstance(value, (list, tuple)) and not v.strip():
            return f"holds a blank entry ({v!r}): remove it"
        if meta["choices"] and isinstance(v, str) and not accepts(meta["choices"], v):
            return f"must be one of {describe_choices(meta['choices'])}, got {v!r}"
    return None


def accepts(choices: tuple[str, ...], value: str) -> bool:
    """True if `value` is one of `choices` (``prefix*`` entries accept any suffix)."""
    return any(value == c or (c.endswith("*") and value.startswith(c[:-1])) for c in choices)


def describe_choices(choices: tuple[str, ...]) -> str:
    return " | ".join(c if c else '""' for c in choices)


def describe_limits(f: dataclasses.Field) -> str:
    """The field's valid values in words (parameter descriptors, --help, docs), '' if any."""
    meta, parts = f.metadata, []
    if meta["choices"]:
        parts.append(describe_choices(meta["choices"]))
    low = meta["low"]
    if meta["positive"]:
        parts.append(f"> 0, <= {meta['high']}" if meta["high"] is not None else "> 0")
    elif low is not None and meta["high"] is not None:
        parts.append(f"{low} .. {meta['high']}")
    if meta["odd"]:
        parts.append("odd")
    return "; ".join(parts)


READ_WORDS = {
    RUN: "at run time",
    CONFIGURE: "at configure (set it while unconfigured)",
    START: "at start-up (read-only)",
}


def describe_read(f: dataclasses.Field) -> str:
    """When the field is read, in words."""
    return READ_WORDS[f.metadata["read"]]
