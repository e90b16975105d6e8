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


def test_every_yaml_parameter_is_declared_with_the_nodes_default():
    from povss_ros.ros.params import parameter_table  # imports rclpy

    declared = {name: default for name, default, _ in parameter_table()}
    data = yaml.safe_load(PARAMS.read_text())
    params = data["/**/povss"]["ros__parameters"]
    assert set(params) <= set(declared), set(params) - set(declared)
    assert {"weights", "device", "vocabulary", "concept_store"} <= set(params)
    for name, value in params.items():
        default = declared[name]
        assert type(value) is type(default), name
        assert value == default, f"{name}: yaml {value!r} vs node {default!r}"


def test_every_declared_parameter_is_in_the_docs_table():
    """docs/ros.md shows exactly the table the node's declarations produce."""
    from povss_ros.ros.params import markdown_table, parameter_table  # imports rclpy

    docs = (ROOT / "docs" / "ros.md").read_text()
    assert markdown_table() in docs
    for name, _, _ in parameter_table():
        assert f"| `{name}` |" in docs


def test_teach_parameters_and_cli_flags_are_teachconfigs_fields():
    """One source per default: the node's teach_* parameters and `povss teach`'s flags are
    exactly the user-facing TeachConfig fields, with TeachConfig's defaults."""
    from povss_ros.cli import build_parser
    from povss_ros.options import user_fields
    from povss_ros.personal.teach import TeachConfig
    from povss_ros.ros.params import parameter_table

    fields = {f.name: getattr(TeachConfig(), f.name) for f in user_fields(TeachConfig)}
    teach = {n.removeprefix("teach_"): d for n, d, _ in parameter_table()
             if n.startswith("teach_") and n != "teach_default_frames"}
    assert teach == fields
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices["teach"]
    flags = {a.dest for a in sub._actions if a.dest in fields}
    assert flags == set(fields)
    args = parser.parse_args(["teach", "x", "--base-class", "b", "--shots", "i.png",
                              "--lr", "0.001", "--no-even-negative"])
    from povss_ros.cli import teach_config

    cfg = teach_config(args)
    assert cfg.lr == 0.001 and cfg.even_negative is False
    assert cfg.iterations == TeachConfig().iterations


def test_node_help_prints_usage_and_every_parameter_without_starting_ros():
    import subprocess
    import sys

    from povss_ros.ros.params import parameter_table

    proc = subprocess.run([sys.executable, "-m", "povss_ros.ros.node", "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: povss_node")
    assert "weights" not in proc.stderr  # no missing-weights error: the node did not start
    for name, _, _ in parameter_table():
        assert f"  {name} = " in proc.stdout


def test_the_package_installs_the_small_model_and_declares_its_dependencies():
    setup = (ROOT / "setup.py").read_text()
    assert '"models/syn_small.safetensors"' in setup and 'share/{PACKAGE}/models' in setup
    assert '"test": ["pytest"' in setup  # colcon test runs pytest only when declared
    xml = (ROOT / "package.xml").read_text()
    for key in ("rclpy", "sensor_msgs", "diagnostic_msgs", "python3-numpy", "python3-opencv",
                "python3-scipy", "python3-torch", "python3-pytest"):
        assert f">{key}</" in xml, key
    for requirement in ("open_clip_torch", "safetensors"):  # no rosdep key: pip, said so
        assert requirement in xml and requirement in (ROOT / "requirements.txt").read_text()


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
