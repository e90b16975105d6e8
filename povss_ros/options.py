"""User-facing settings fields: a default plus the help text that ROS and the CLI show.

A settings dataclass marks the fields users may set with `option(default, help)`; the node
declares one parameter per such field (the help becomes its description) and `povss` one
flag, so a default and its explanation are written once, beside the field.
"""

from __future__ import annotations

import dataclasses


def option(default: object, help: str) -> dataclasses.Field:  # noqa: A002 - argparse's word
    """A user-facing dataclass field with its default and one-line help."""
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


def user_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a settings dataclass that users set (those made with `option`)."""
    return [f for f in dataclasses.fields(cls) if "help" in f.metadata]
