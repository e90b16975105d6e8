"""Starting the povss node as its own process: its params file and its command line.

The demo, the node benchmark and the node tests all run the real node over DDS; this keeps
the parameter file layout and the `--ros-args` spelling in one place.
"""

from __future__ import annotations

import os
import random
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


# DDS domains whose ports stay clear of Linux's ephemeral ports (32768-60999): 1..101 and
# 215..230 (231 and 232, the last, are the teach UI test's; 42 is the Makefile's; 0 the ROS
# default, which a robot on the same machine may use).
PRIVATE_DOMAINS = tuple(d for d in (*range(1, 102), *range(215, 231)) if d != 42)


def private_domain_id() -> int:
    """A random domain of `PRIVATE_DOMAINS`, for a test or script that keeps DDS to itself."""
    return random.choice(PRIVATE_DOMAINS)


def loopback_dds(checkout: Path | None = None, keep_domain: bool = False) -> dict[str, str]:
    """Keep DDS on this machine in a domain of its own: set ROS_AUTOMATIC_DISCOVERY_RANGE to
    LOCALHOST and a random ROS_DOMAIN_ID (`private_domain_id`; `keep_domain`: one already set
    stays) in this process's environment, before rclpy starts. Returns the environment for the
    processes it starts: the same, unbuffered, with `checkout` first on PYTHONPATH when given."""
    domain = os.environ.get("ROS_DOMAIN_ID") if keep_domain else None
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                      ROS_DOMAIN_ID=domain or str(private_domain_id()))
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if checkout is not None:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(checkout), env.get("PYTHONPATH")) if p)
    return env
