"""Middleware settings that camera-sized images need on one host.

Fast DDS, ROS 2's default middleware, moves same-host messages through a 512 KiB shared-memory
segment per participant. Camera frames are bigger (640x480 rgb8: 900 KiB; the node's own mono16
labels: 600 KiB), so they fall back to fragmented UDP, and with the sensor-data (best-effort)
QoS most of them are lost; the bundled profile (`fastdds_large_images.xml`, a 16 MiB segment)
keeps them in shared memory (docs/experiments.md has the measurement).

`use_large_image_transport` points Fast DDS at that profile before `rclpy.init`, unless the
user already chose a middleware setup. It only affects the calling process and the processes
it starts; the camera driver needs the same profile (docs/ros.md). Fast DDS 3 (Kilted) reads
FASTDDS_DEFAULT_PROFILES_FILE and Fast DDS 2 (Jazzy) only FASTRTPS_DEFAULT_PROFILES_FILE, and
Fast DDS 3 warns on every start when the old name is set: the variable of the installed
version is set (`fast_dds_major`), both only when the version cannot be told.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

PROFILE = Path(__file__).with_name("fastdds_large_images.xml")
# Any of these means the user configured Fast DDS themselves: leave it alone.
USER_SETTINGS = (
    "FASTDDS_DEFAULT_PROFILES_FILE",
    "FASTRTPS_DEFAULT_PROFILES_FILE",
    "FASTDDS_BUILTIN_TRANSPORTS",
)
# Fast DDS also loads these from the working directory on its own.
CWD_PROFILES = ("DEFAULT_FASTDDS_PROFILES.xml", "DEFAULT_FASTRTPS_PROFILES.xml")
OPT_OUT = "POVSS_FASTDDS_PROFILE"  # "0" keeps Fast DDS's defaults
# Where each Fast DDS major version looks for a profiles file.
PROFILE_VARIABLES = {3: "FASTDDS_DEFAULT_PROFILES_FILE", 2: "FASTRTPS_DEFAULT_PROFILES_FILE"}
# ROS 2 distributions that ship Fast DDS 2 (later ones ship Fast DDS 3).
FAST_DDS_2_DISTROS = ("humble", "iron", "jazzy")


def fast_dds_major(environ: Mapping[str, str] = os.environ) -> int | None:
    """The installed Fast DDS's major version (2 or 3), None when it cannot be told: from
    ROS_DISTRO (a sourced ROS), else the PyPI wheel that holds the library (ros-fastdds is 3,
    ros-fastrtps is 2), else the library in an AMENT_PREFIX_PATH prefix."""
    distro = environ.get("ROS_DISTRO", "").strip().lower()
    if distro:
        return 2 if distro in FAST_DDS_2_DISTROS else 3
    for major, wheel in ((3, "ros-fastdds"), (2, "ros-fastrtps")):
        try:
            importlib.metadata.version(wheel)
            return major
        except importlib.metadata.PackageNotFoundError:
            pass
    for prefix in filter(None, environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        for major, library in ((3, "libfastdds.so.3"), (2, "libfastrtps.so.2")):
            if any(Path(prefix, "lib").glob(f"{library}*")):
                return major
    return None


def use_large_image_transport(
    environ: MutableMapping[str, str] = os.environ, cwd: Path | None = None
) -> str | None:
    """Select the large-image Fast DDS profile in `environ`; call before `rclpy.init`.

    Returns the profile path when it was applied, None when it was left alone: another RMW
    (e.g. Cyclone DDS), a user profile or transport choice, or ``POVSS_FASTDDS_PROFILE=0``.
    """
    if environ.get(OPT_OUT, "1").strip() == "0":
        return None
    rmw = environ.get("RMW_IMPLEMENTATION", "").strip() or "rmw_fastrtps_cpp"
    if not rmw.startswith("rmw_fastrtps"):
        return None
    if any(environ.get(key, "").strip() for key in USER_SETTINGS):
        return None
    here = Path.cwd() if cwd is None else cwd
    if any((here / name).is_file() for name in CWD_PROFILES):
        return None
    if not PROFILE.is_file():
        raise FileNotFoundError(f"the bundled Fast DDS profile is missing: {PROFILE}")
    major = fast_dds_major(environ)
    for variable in [PROFILE_VARIABLES[major]] if major else PROFILE_VARIABLES.values():
        environ[variable] = str(PROFILE)
    return str(PROFILE)
