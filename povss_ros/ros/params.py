"""The node's parameters, declared from the settings dataclasses (one default per setting).

Every user-facing field of `EngineSettings` is a parameter of the same name, every one of
`TeachConfig` a parameter ``teach_<name>``, and `NodeSettings` adds the transport ones; the
field's help is the parameter's description. `python -m povss_ros.ros.params` prints the
table that docs/ros.md shows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from ..options import option, user_fields
from ..personal.teach import TeachConfig
from ..settings import EngineSettings

TEACH_PREFIX = "teach_"


@dataclass
class NodeSettings:
    """What only the ROS node has: its input QoS and diagnostics."""

    image_qos_reliability: str = option(
        "best_effort", "input image QoS reliability: best_effort | reliable")
    image_qos_depth: int = option(
        1, "input queue depth; keep it small: the node always processes the newest frame")
    diagnostics_period: float = option(1.0, "period of /diagnostics, in seconds")


def parameter_table() -> list[tuple[str, object, str]]:
    """(name, default, description) of every parameter, in declaration order."""
    rows = []
    for cls, prefix in ((EngineSettings, ""), (TeachConfig, TEACH_PREFIX), (NodeSettings, "")):
        defaults = cls()
        for f in user_fields(cls):
            rows.append((prefix + f.name, getattr(defaults, f.name), f.metadata["help"]))
    names = [name for name, _, _ in rows]
    if len(set(names)) != len(names):  # e.g. a TeachConfig field shadowing an engine one
        raise RuntimeError(f"parameter names declared twice: {sorted(names)}")
    return rows


def declare_parameters(node: Node) -> None:
    for name, default, help_text in parameter_table():
        node.declare_parameter(name, default, ParameterDescriptor(description=help_text))


def _values(node: Node, cls: type, prefix: str = "") -> dict[str, object]:
    return {f.name: node.get_parameter(prefix + f.name).value for f in user_fields(cls)}


def engine_settings(node: Node) -> EngineSettings:
    """Read the declared parameters into the engine's settings."""
    values = _values(node, EngineSettings)
    values["vocabulary"] = list(values["vocabulary"])
    teach = TeachConfig(**_values(node, TeachConfig, TEACH_PREFIX))
    return EngineSettings(**values, teach=teach)


def node_settings(node: Node) -> NodeSettings:
    return NodeSettings(**_values(node, NodeSettings))


def image_qos(settings: NodeSettings) -> QoSProfile:
    """Sensor-data style by default (best effort, keep last 1): never queue stale frames."""
    reliability = settings.image_qos_reliability
    if reliability not in ("best_effort", "reliable"):
        raise ValueError("image_qos_reliability must be best_effort or reliable")
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=max(1, settings.image_qos_depth),
        reliability=ReliabilityPolicy.BEST_EFFORT
        if reliability == "best_effort"
        else ReliabilityPolicy.RELIABLE,
    )


def markdown_table() -> str:
    """The parameter table of docs/ros.md (a test keeps the two equal)."""
    lines = ["| parameter | default | what |", "|---|---|---|"]
    for name, default, help_text in parameter_table():
        cell = help_text.replace("|", "\\|")
        lines.append(f"| `{name}` | `{yaml_value(default)}` | {cell} |")
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
