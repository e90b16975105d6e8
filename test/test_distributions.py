"""The ROS 2 distributions `make test` covers (Kilted and Jazzy, from their PyPI wheels): one
requirements file per distribution with the same runtime packages, and a Makefile that runs the
whole suite on Kilted and the ROS tests (marker `ros`) on Jazzy, each in its own venv."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DISTROS = ("kilted", "jazzy")
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(\S+)$")
BUILD_SECTION = "# Building povss_interfaces"


def _pins(distro: str) -> tuple[dict[str, str], dict[str, str]]:
    """(runtime, build) pins of requirements-ros-<distro>.txt: name -> version."""
    runtime: dict[str, str] = {}
    build: dict[str, str] = {}
    section = runtime
    for line in (ROOT / f"requirements-ros-{distro}.txt").read_text().splitlines():
        if line.startswith(BUILD_SECTION):
            section = build
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = PIN.match(line)
        assert match, f"requirements-ros-{distro}.txt: {line!r} is not pinned (name==version)"
        section[match.group(1)] = match.group(3)
    return runtime, build


def test_each_distribution_pins_the_same_runtime_wheels_and_its_own_rclpy():
    runtime = {d: _pins(d)[0] for d in DISTROS}
    assert set(runtime["kilted"]) == set(runtime["jazzy"]), "the node needs the same packages"
    assert runtime["kilted"]["ros-rclpy"].startswith("9.")  # Kilted's rclpy
    assert runtime["jazzy"]["ros-rclpy"].startswith("7.")  # Jazzy's rclpy
    for distro in DISTROS:
        text = (ROOT / f"requirements-ros-{distro}.txt").read_text()
        assert "ros-rclpy[fastrtps]==" in text  # without Fast DDS, rclpy does not import
        assert _pins(distro)[1], f"requirements-ros-{distro}.txt has no {BUILD_SECTION!r} part"
    shared = (ROOT / "requirements-dev.txt").read_text()
    assert not re.search(r"^ros-", shared, re.M), "ROS wheels belong to requirements-ros-*.txt"


def _make_n(*args: str, environ: dict[str, str] | None = None,
            ) -> subprocess.CompletedProcess:
    """`make -n -B ARGS`: every command it would run, set-up included, printed and not run
    (sub-makes print theirs too), outside any make this suite runs under."""
    if shutil.which("make") is None:
        pytest.fail("make is not installed (the README's test command needs it)")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    env.update(environ or {})
    return subprocess.run(["make", "-n", "-B", "--no-print-directory", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=60)


def test_make_test_runs_the_suite_on_kilted_then_the_ros_tests_on_jazzy():
    # A sourced ROS shell exports ROS_DISTRO for its own install: the venvs ignore it.
    run = _make_n("test", environ={"ROS_DISTRO": "humble"})
    assert run.returncode == 0, run.stderr
    out = run.stdout
    kilted = out.index(".venv/bin/python -m pytest -q\n")
    jazzy = out.index(".venv-jazzy/bin/python -m pytest -q -m ros\n")
    assert kilted < jazzy
    assert out.index("-r requirements-dev.txt -r requirements-ros-kilted.txt") < kilted
    assert kilted < out.index("-r requirements-dev.txt -r requirements-ros-jazzy.txt") < jazzy
    assert "scripts/build_interfaces.sh .venv-jazzy\n" in out


def test_make_test_with_a_distribution_named_runs_the_whole_suite_there_alone():
    run = _make_n("test", "ROS_DISTRO=jazzy")
    assert run.returncode == 0, run.stderr
    assert ".venv-jazzy/bin/python -m pytest -q\n" in run.stdout
    assert ".venv/bin/python" not in run.stdout and "-m ros" not in run.stdout
    run = _make_n("test", "ROS_DISTRO=humble")
    assert run.returncode != 0 and "kilted or jazzy" in run.stderr


def test_the_runtime_requirements_leave_torch_to_the_machine():
    """A Jetson's torch is JetPack's CUDA build: `pip install -r requirements.txt` must keep
    it, so the runtime file names torch and torchvision without pinning a version; the
    development venv (CI, the figures) pins the one it was tested with."""
    def entries(name: str) -> dict[str, str]:
        out = {}
        for line in (ROOT / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            match = re.match(r"^([A-Za-z0-9_.-]+)(.*)$", line)
            if match and not line.startswith("-"):
                out[match.group(1).lower()] = match.group(2).strip()
        return out

    runtime, dev = entries("requirements.txt"), entries("requirements-dev.txt")
    for package in ("torch", "torchvision"):
        assert package in runtime and "==" not in runtime[package], runtime.get(package)
        assert dev.get(package, "").startswith("=="), f"{package} unpinned for development"
