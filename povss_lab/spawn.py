"""Starting the povss node as its own process: its params file and its command line.

The demo, the node benchmark and the node tests all run the real node over DDS; this keeps
the parameter file layout and the `--ros-args` spelling in one place.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

NODE_NAME = "povss"


def write_params(path: Path, values: Mapping[str, str]) -> Path:
    """Write a ROS 2 params file for every povss node; `values` are YAML scalars as text
    (e.g. ``'"tiny"'``, ``"true"``, ``'["cup", "mug"]'``)."""
    lines = [f"/**/{NODE_NAME}:", "  ros__parameters:"]
    lines += [f"    {key}: {value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def node_command(params: Path, remaps: Mapping[str, str] = {}) -> list[str]:  # noqa: B006
    """`python -m povss_ros.ros.node` with the params file and name remappings."""
    cmd = [sys.executable, "-m", "povss_ros.ros.node", "--ros-args", "--params-file", str(params)]
    for source, target in remaps.items():
        cmd += ["-r", f"{source}:={target}"]
    return cmd
