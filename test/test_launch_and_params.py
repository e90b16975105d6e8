"""The launch file and config/povss.yaml agree with the node and the package layout."""

import ast
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "perception.launch.py"
PARAMS = ROOT / "config" / "povss.yaml"


def _launch_constants() -> dict[str, str]:
    tree = ast.parse(LAUNCH.read_text())
    return {
        node.targets[0].id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
    }


def test_launch_names_a_real_package_executable_and_params_file():
    consts = _launch_constants()
    assert (
        consts["PACKAGE"] == re.search(r"<name>(.*)</name>", (ROOT / "package.xml").read_text())[1]
    )
    setup = (ROOT / "setup.py").read_text()
    assert f'"{consts["EXECUTABLE"]} = povss_ros.ros.node:main"' in setup
    assert consts["NODE_NAME"] == "povss"
    assert '"config", "povss.yaml"' in LAUNCH.read_text() and PARAMS.is_file()
    assert ("launch/*.launch.py" in setup) and ("config/*.yaml" in setup)
    declared = {
        call.args[0].value
        for call in ast.walk(ast.parse(LAUNCH.read_text()))
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument"
    }
    assert declared == {"params_file", "image_topic", "weights", "device", "namespace"}


def test_every_yaml_parameter_is_declared_and_the_reverse():
    from povss_ros.ros.params import PARAMETERS  # imports rclpy

    data = yaml.safe_load(PARAMS.read_text())
    params = data["/**/povss"]["ros__parameters"]
    assert set(params) == set(PARAMETERS)
    for name, default in PARAMETERS.items():
        assert type(params[name]) is type(default), name
        assert params[name] == default, f"{name}: yaml {params[name]!r} vs node {default!r}"


def test_every_yaml_parameter_is_documented():
    lines = PARAMS.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^    (\w+):", line)
        if match:
            assert lines[i - 1].strip().startswith("#"), f"{match[1]} has no comment above it"


def test_launch_file_runs_when_launch_ros_exists():
    launch_ros = pytest.importorskip(
        "launch_ros", reason="launch_ros is not on PyPI; this runs on a real ROS 2 install"
    )
    from launch import LaunchDescription, LaunchService  # noqa: F401

    spec = __import__("importlib.util").util.spec_from_file_location("pl", LAUNCH)
    module = __import__("importlib.util").util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, LaunchDescription) and launch_ros
