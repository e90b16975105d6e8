"""The node's parameters, declared from the settings dataclasses (one default per setting).

Every user-facing field of `EngineSettings` is a parameter of the same name, every one of
`TeachConfig` a parameter ``teach_<name>``, every one of `ObjectConfig` ``objects_<name>``,
and `NodeSettings` adds the transport and depth ones; the field's help is the parameter's
description. `python -m povss_ros.ros.params` prints the
table that docs/ros.md shows.
"""

from __future__ import annotations

import sys
from dataclasses import Field, dataclass

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
)
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..cameras import MAX_CAMERAS, UNNAMED, cameras_problem
from ..objects import ObjectConfig
from ..options import CONFIGURE, START, check, describe_limits, describe_read, option, user_fields
from ..personal.teach import TeachConfig
from ..settings import EngineSettings
from ..vocabulary import parse_vocabulary
from .sync import DEPTH_KEPT

TEACH_PREFIX = "teach_"
OBJECTS_PREFIX = "objects_"


@dataclass
class NodeSettings:
    """What only the ROS node has: start-up behaviour, its input transport and diagnostics."""

    autostart: bool = option(
        True, "configure and activate on start-up (false: wait for lifecycle transitions)",
        read=START)
    cameras: list[str] = option(
        [UNNAMED], "the cameras one node segments with one model and one concept store: "
        '[""] = one camera on image, depth, camera_info, teach_mask, outputs under ~/; '
        "names, e.g. [head, wrist]: camera head reads head/image, head/depth, "
        "head/camera_info, head/teach_mask and publishes its per-frame outputs under ~/head/ "
        f"(at most {MAX_CAMERAS}; docs/ros.md, Several cameras)", read=CONFIGURE,
        rule=cameras_problem)
    batch_cameras: str = option(
        "auto", "frames of several cameras waiting together go through SAN's forward in one "
        "batch (frames of one size), each then decoded alone: always, never, or auto = with "
        "CUDA only (docs/ros.md, Several cameras)",
        choices=("auto", "always", "never"))
    image_transport: str = option(
        "raw", "input: raw = sensor_msgs/Image on image, compressed = "
        "sensor_msgs/CompressedImage on image/compressed", choices=("raw", "compressed"))
    image_qos_reliability: str = option(
        "best_effort", "input image QoS reliability", choices=("best_effort", "reliable"))
    image_qos_depth: int = option(
        1, "input queue depth; keep it small: the node always processes the newest frame",
        low=1, high=100)
    use_depth: bool = option(
        False, "subscribe to depth (a registered depth image: 16UC1 millimetres or 32FC1 metres) "
        "and give objects 3D, with the intrinsics of camera_info")
    sync_slop: float = option(
        0.0, "largest stamp difference, in seconds, between a colour frame and its depth image "
        "(0: equal stamps only)", low=0.0, high=1.0)
    camera_matrix: str = option(
        "k", "which camera_info matrix gives the colour image's intrinsics: k for a raw image "
        "(its lens distortion is ignored), p for a rectified one (image_rect topics)",
        choices=("k", "p"))
    share_concepts: bool = option(
        False, "share personal concepts with every povss node on the same weights: publish "
        "each concept taught, corrected or forgotten here on the latched /povss/concepts/shared "
        "and adopt what the others publish (docs/ros.md, Sharing concepts)", read=CONFIGURE)
    share_shots: bool = option(
        False, "with share_concepts: the shared concepts carry their shots and look-alikes "
        "too (PNG), so other nodes can correct them; off: the tensors and metadata only",
        read=CONFIGURE)
    diagnostics_period: float = option(
        1.0, "period of /diagnostics, in seconds", positive=True, high=3600.0)


SETTINGS_CLASSES = ((EngineSettings, ""), (TeachConfig, TEACH_PREFIX),
                    (ObjectConfig, OBJECTS_PREFIX), (NodeSettings, ""))


def parameter_fields() -> dict[str, tuple[type, Field]]:
    """Parameter name -> (settings class, field), in declaration order."""
    out: dict[str, tuple[type, Field]] = {}
    for cls, prefix in SETTINGS_CLASSES:
        for f in user_fields(cls):
            if prefix + f.name in out:  # e.g. a TeachConfig field shadowing an engine one
                raise RuntimeError(f"parameter {prefix + f.name!r} declared twice")
            out[prefix + f.name] = (cls, f)
    return out


def parameter_table() -> list[tuple[str, object, str]]:
    """(name, default, description with limits and when it is read) of every parameter."""
    rows = []
    for name, (cls, f) in parameter_fields().items():
        limits = describe_limits(f)
        extra = (f"{limits}; " if limits else "") + f"read {describe_read(f)}"
        rows.append((name, getattr(cls(), f.name), f"{f.metadata['help']} ({extra})"))
    return rows


def descriptor(f: Field, default: object) -> ParameterDescriptor:
    """The parameter's descriptor: description, range, choices, read-only (its type is the
    default's, which rclpy then enforces)."""
    meta = f.metadata
    d = ParameterDescriptor(description=meta["help"], read_only=meta["read"] == START)
    limits = describe_limits(f)
    d.additional_constraints = (f"{limits}; " if limits else "") + f"read {describe_read(f)}"
    low = 0 if meta["positive"] and meta["low"] is None else meta["low"]
    if low is not None and meta["high"] is not None and not isinstance(default, bool):
        if isinstance(default, int):
            d.integer_range = [IntegerRange(from_value=int(low), to_value=int(meta["high"]))]
        else:
            d.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(meta["high"]))
            ]
    return d


def declare_parameters(node: Node) -> None:
    """Declare every parameter with its descriptor; a bad start-up value raises ValueError."""
    for name, (cls, f) in parameter_fields().items():
        default = getattr(cls(), f.name)
        value = node.declare_parameter(name, default, descriptor(f, default)).value
        reason = check(f, list(value) if isinstance(value, (list, tuple)) else value)
        if reason:
            raise ValueError(f"parameter {name}: {reason}")


def refusal(name: str, value: object) -> str | None:
    """Why `value` is refused for parameter `name` (None: accepted). Limits only: when it is
    read (configure, start-up) is the node's business."""
    fields = parameter_fields()
    if name not in fields:
        return None
    reason = check(fields[name][1], list(value) if isinstance(value, (list, tuple)) else value)
    # A list of words is checked now, in any state, by the one vocabulary check (linear,
    # bounded); a single entry is a name or a file, resolved when it is applied.
    if reason is None and name == "vocabulary" and isinstance(value, (list, tuple)) \
            and len(value) > 1:
        try:
            parse_vocabulary(list(value))
        except ValueError as exc:
            return f"{name}: {exc}"
    return f"{name} {reason}" if reason else None


def _values(node: Node, cls: type, prefix: str, given: dict[str, object]) -> dict[str, object]:
    out = {}
    for f in user_fields(cls):
        name = prefix + f.name
        value = given[name] if name in given else node.get_parameter(name).value
        out[f.name] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def engine_settings(node: Node, given: dict[str, object] | None = None) -> EngineSettings:
    """The engine's settings from the node's parameters, with `given` (name -> value, e.g.
    values being set right now) taking precedence."""
    given = given or {}
    teach = TeachConfig(**_values(node, TeachConfig, TEACH_PREFIX, given))
    objects = ObjectConfig(**_values(node, ObjectConfig, OBJECTS_PREFIX, given))
    return EngineSettings(**_values(node, EngineSettings, "", given), teach=teach, objects=objects)


def node_settings(node: Node, given: dict[str, object] | None = None) -> NodeSettings:
    return NodeSettings(**_values(node, NodeSettings, "", given or {}))


def image_qos(settings: NodeSettings, depth: bool = False) -> QoSProfile:
    """Sensor-data style by default (best effort, keep last 1): never queue stale frames. The
    depth stream (`depth`) queues at least the pairing's `DEPTH_KEPT`: a frame's depth may
    come while the node is busy, and with a queue of one the next depth would replace it
    before the pairing saw it, and that frame would lose its 3D."""
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(settings.image_qos_depth, DEPTH_KEPT) if depth else settings.image_qos_depth,
        reliability=ReliabilityPolicy.BEST_EFFORT
        if settings.image_qos_reliability == "best_effort"
        else ReliabilityPolicy.RELIABLE,
    )


def markdown_table() -> str:
    """The parameter table of docs/ros.md (a test keeps the two equal)."""
    lines = ["| parameter | default | valid values | read | what |", "|---|---|---|---|---|"]
    for name, (cls, f) in parameter_fields().items():
        cells = [describe_limits(f), describe_read(f), f.metadata["help"]]
        cells = [c.replace("|", "\\|") for c in cells]
        default = yaml_value(getattr(cls(), f.name))
        lines.append(f"| `{name}` | `{default}` | {cells[0]} | {cells[1]} | {cells[2]} |")
    return "\n".join(lines)


def yaml_value(value: object) -> str:
    """A parameter value as it is written in a params file or on the command line."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(yaml_value(v) for v in value) + "]"
    if value == "":
        return '""'
    return str(value)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
