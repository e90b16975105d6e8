"""What `launch/perception.launch.py` makes of its arguments: the node's parameter overrides
and remappings, as a plain function of the arguments' text.

The launch file only reads its `LaunchConfiguration`s and builds the node; the parsing lives
here, where tests reach it without `launch_ros` (which is not on PyPI). No ROS import: this
runs inside `ros2 launch`, before any node.
"""

from __future__ import annotations

from collections.abc import Mapping

# The launch arguments `node_arguments` reads (the launch file declares them, and more).
NODE_ARGUMENTS = ("weights", "device", "vocabulary", "autostart", "image_topic",
                  "camera_info_topic", "depth_topic")
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def vocabulary_words(text: str) -> list[str]:
    """The `vocabulary` launch argument -> words: a YAML list "[mug, cup]" or "mug, cup"."""
    import yaml  # the launch process has it (ros2 launch needs it); the node does not

    text = text.strip()
    try:
        words = yaml.safe_load(text) if text.startswith("[") else text.split(",")
    except yaml.YAMLError as exc:
        raise ValueError(f"vocabulary:={text!r} is not a YAML list: {exc}") from None
    if not isinstance(words, list):
        raise ValueError(f"vocabulary:={text!r}: give a list, e.g. vocabulary:=\"[mug, cup]\"")
    words = [str(w).strip() for w in words if w is not None and str(w).strip()]
    if not words:
        raise ValueError(f"vocabulary:={text!r} holds no word")
    return words


def flag(name: str, text: str) -> bool:
    """A boolean launch argument (true/false, 1/0, yes/no, on/off, any case)."""
    value = text.strip().lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"{name}:={text!r}: give true or false")
    return value in TRUE_WORDS


def camera_info_of(image_topic: str) -> str:
    """The camera_info topic beside an image topic (image_transport's convention)."""
    parent, sep, _ = image_topic.rstrip("/").rpartition("/")
    return f"{parent}{sep}camera_info"  # "image" -> "camera_info", "/image" -> "/camera_info"


def node_arguments(args: Mapping[str, str]) -> tuple[dict[str, object], list[tuple[str, str]]]:
    """(parameter overrides, remappings) of the node, from the launch arguments' values
    (`NODE_ARGUMENTS`, as text). An empty weights, device or vocabulary leaves the params
    file's value; a depth topic turns on `use_depth`; ValueError names a malformed argument."""
    overrides: dict[str, object] = {}
    for key in ("weights", "device"):
        if args[key]:
            overrides[key] = args[key]
    if args["vocabulary"].strip():
        overrides["vocabulary"] = vocabulary_words(args["vocabulary"])
    overrides["autostart"] = flag("autostart", args["autostart"])
    image = args["image_topic"]
    remappings = [("image", image),
                  ("camera_info", args["camera_info_topic"] or camera_info_of(image))]
    if args["depth_topic"]:
        overrides["use_depth"] = True
        remappings.append(("depth", args["depth_topic"]))
    return overrides, remappings


def log_environment(stdout_is_terminal: bool) -> dict[str, str]:
    """The node's logging environment: coloured lines for a terminal, plain text when the
    launch's output is redirected to a file (no ANSI escape codes in logs). The node keeps a
    pseudo-terminal (`emulate_tty`) either way, so its lines are not held in a buffer."""
    return {"RCUTILS_COLORIZED_OUTPUT": "1" if stdout_is_terminal else "0"}

