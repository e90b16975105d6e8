"""The launch file and config/povss.yaml agree with the node and the package layout."""

import ast
import re
from pathlib import Path

import pytest
import yaml

from povss_lab.spawn import private_domain_id

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "perception.launch.py"
PARAMS = ROOT / "config" / "povss.yaml"
RVIZ = ROOT / "config" / "povss.rviz"
# RViz2 display class -> the message type it shows.
DISPLAY_TYPES = {
    "rviz_default_plugins/Image": "sensor_msgs/Image",
    "rviz_default_plugins/MarkerArray": "visualization_msgs/MarkerArray",
}


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
    assert declared == {"params_file", "image_topic", "weights", "device", "namespace",
                        "vocabulary", "autostart", "camera_info_topic", "depth_topic",
                        "cameras", "teach_ui", "teach_ui_host", "teach_ui_port", "teach_ui_token",
                        "teach_ui_camera"}
    assert f'"{consts["UI_EXECUTABLE"]} = povss_ros.ros.ui.main:main"' in setup


@pytest.mark.ros
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


@pytest.mark.ros
def test_every_declared_parameter_is_in_the_docs_table():
    """docs/ros.md shows exactly the table the node's declarations produce."""
    from povss_ros.ros.params import markdown_table, parameter_table  # imports rclpy

    docs = (ROOT / "docs" / "ros.md").read_text()
    assert markdown_table() in docs
    for name, _, _ in parameter_table():
        assert f"| `{name}` |" in docs


@pytest.mark.ros
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


@pytest.mark.ros
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


def _published_topics() -> dict[str, str]:
    """The node's output topics, from the topic table of docs/ros.md (the contract the node is
    tested against): a regex of each resolved name -> its message type. Names resolve as with
    the launch file's defaults: no namespace, private names under /povss."""
    docs = (ROOT / "docs" / "ros.md").read_text()
    section = docs.split("\n## Topics", 1)[1].split("\n## ", 1)[0]
    topics = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[2] == "out":
            name = cells[0].strip("`").replace("~/", "/povss/")
            pattern = "[A-Za-z0-9_]+".join(re.escape(p) for p in re.split(r"<\w+>", name))
            topics[pattern] = cells[1].split()[0]
    return topics


def test_the_rviz_config_shows_only_topics_the_node_publishes():
    """config/povss.rviz is RViz2 YAML whose displays name only topics docs/ros.md lists as the
    node's outputs, with the right message types: overlay, labels, a concept mask and the
    objects' markers."""
    published = _published_topics()
    assert {"/povss/labels", "/povss/overlay", "/povss/concepts/[A-Za-z0-9_]+/mask"} <= set(
        published), published
    config = yaml.safe_load(RVIZ.read_text())
    assert {"Panels", "Visualization Manager", "Window Geometry"} <= set(config)
    assert any(p["Class"] == "rviz_common/Displays" for p in config["Panels"])
    manager = config["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"]
    shown = {}
    for display in manager["Displays"]:
        topic, kind = display["Topic"]["Value"], DISPLAY_TYPES[display["Class"]]
        assert isinstance(display["Enabled"], bool) and display["Name"]
        matches = [p for p in published if re.fullmatch(p, topic)]
        assert matches, f"{topic} is not an output of the node"
        assert published[matches[0]] == kind, (topic, kind)
        shown[topic] = display["Class"]
    assert shown.get("/povss/overlay") == shown.get("/povss/labels") == (
        "rviz_default_plugins/Image")
    masks = [t for t in shown if re.fullmatch(r"/povss/concepts/\w+/mask", t)]
    assert masks and shown[masks[0]] == "rviz_default_plugins/Image"
    assert shown.get("/povss/markers") == "rviz_default_plugins/MarkerArray"
    setup = (ROOT / "setup.py").read_text()
    assert 'glob("config/*.rviz")' in setup and "share/{PACKAGE}/config" in setup


def test_every_yaml_parameter_is_documented():
    lines = PARAMS.read_text().splitlines()
    for i, line in enumerate(lines):
        match = re.match(r"^    (\w+):", line)
        if match:
            assert lines[i - 1].strip().startswith("#"), f"{match[1]} has no comment above it"


# What `ros2 launch FILE ARG:=VALUE...` does (ros2launch's launch_a_launch_file): include the
# file in a LaunchService and exit with LaunchService.run()'s code.
LAUNCH_DRIVER = """
import sys
from launch import LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService(argv=sys.argv[2:], noninteractive=True)
service.include_launch_description(IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]),
    launch_arguments=[tuple(a.split(":=", 1)) for a in sys.argv[2:]]))
sys.exit(service.run())
"""


@pytest.fixture
def launch_env(tmp_path):
    """The environment of `ros2 launch` after `colcon build` + `source install/setup.bash`:
    an ament prefix holding this checkout's package as colcon installs it (index marker,
    package.xml, config, the povss_node executable), loopback DDS in a private domain, and
    HOME in tmp_path (the node's concept store and ROS's log folder go there)."""
    pytest.importorskip(
        "launch_ros", reason="launch_ros is not on PyPI; this runs on a real ROS 2 install"
    )
    import os
    import shutil
    import sys

    prefix = tmp_path / "install"
    index = prefix / "share" / "ament_index" / "resource_index" / "packages"
    index.mkdir(parents=True)
    (index / "povss_ros").write_text("")
    share = prefix / "share" / "povss_ros"
    (share / "config").mkdir(parents=True)
    shutil.copy(PARAMS, share / "config")
    shutil.copy(ROOT / "package.xml", share)
    exe = prefix / "lib" / "povss_ros" / _launch_constants()["EXECUTABLE"]
    exe.parent.mkdir(parents=True)
    exe.write_text(f"#!{sys.executable}\nimport sys\nfrom povss_ros.ros.node import main\n"
                   "sys.exit(main())\n")
    exe.chmod(0o755)
    paths = [str(prefix), os.environ.get("AMENT_PREFIX_PATH", "")]
    return dict(os.environ, AMENT_PREFIX_PATH=os.pathsep.join(p for p in paths if p),
                PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                HOME=str(tmp_path), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                ROS_DOMAIN_ID=str(private_domain_id()), PYTHONUNBUFFERED="1")


def _launch(env: dict, *arguments: str):  # noqa: ANN202 - subprocess.Popen
    import signal
    import subprocess
    import sys

    return subprocess.Popen(
        [sys.executable, "-c", LAUNCH_DRIVER, str(LAUNCH), *arguments], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        # Ctrl-C must reach it even when this test runs as a background job (SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_launch_description_declares_its_arguments_when_launch_ros_exists():
    pytest.importorskip(
        "launch_ros", reason="launch_ros is not on PyPI; this runs on a real ROS 2 install"
    )
    import importlib.util

    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.generate_launch_description(), LaunchDescription)
    from povss_ros.ros.launch_args import node_arguments

    assert module.node_arguments is node_arguments  # its parsing: tested below, without ROS


# ------------------------------------------------------------ the launch file's parsing
LAUNCH_DEFAULTS = {"weights": "", "device": "", "vocabulary": "", "autostart": "true",
                   "image_topic": "/camera/image_raw", "camera_info_topic": "",
                   "depth_topic": "", "cameras": ""}


def test_the_launch_file_hands_every_argument_it_reads_to_node_arguments():
    """The names `node_arguments` reads are declared launch arguments, with the defaults
    LAUNCH_DEFAULTS assumes, and the launch file reads them through it."""
    from povss_ros.ros.launch_args import DEFAULT_IMAGE_TOPIC, NODE_ARGUMENTS

    declared = {}
    for call in ast.walk(ast.parse(LAUNCH.read_text())):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument":
            default = next(k.value for k in call.keywords if k.arg == "default_value")
            declared[call.args[0].value] = getattr(default, "value", None)
    assert {name: declared[name] for name in NODE_ARGUMENTS} == LAUNCH_DEFAULTS
    assert declared["image_topic"] == DEFAULT_IMAGE_TOPIC  # what the parsing takes as unset
    assert "node_arguments(values)" in LAUNCH.read_text()


def test_node_arguments_at_the_defaults_override_only_autostart():
    from povss_ros.ros.launch_args import node_arguments

    overrides, remappings = node_arguments(LAUNCH_DEFAULTS)
    assert overrides == {"autostart": True}
    assert remappings == [("image", "/camera/image_raw"), ("camera_info", "/camera/camera_info")]


def test_node_arguments_carry_the_given_values():
    from povss_ros.ros.launch_args import node_arguments

    given = dict(LAUNCH_DEFAULTS, weights="/w/san.pth", device="cuda:1",
                 vocabulary='[mug, "my cup", 7, "", ~]', autostart="OFF",
                 image_topic="/cam/color/image_raw/", camera_info_topic="",
                 depth_topic="/cam/depth/image_rect_raw")
    overrides, remappings = node_arguments(given)
    assert overrides == {"weights": "/w/san.pth", "device": "cuda:1",
                         "vocabulary": ["mug", "my cup", "7"], "autostart": False,
                         "use_depth": True}
    assert remappings == [("image", "/cam/color/image_raw/"),
                          ("camera_info", "/cam/color/camera_info"),
                          ("depth", "/cam/depth/image_rect_raw")]
    _, remappings = node_arguments(dict(LAUNCH_DEFAULTS, image_topic="image",
                                        camera_info_topic="/elsewhere/info"))
    assert remappings == [("image", "image"), ("camera_info", "/elsewhere/info")]
    _, remappings = node_arguments(dict(LAUNCH_DEFAULTS, image_topic="image"))
    assert remappings[1] == ("camera_info", "camera_info")  # no parent: a sibling name


def test_named_cameras_read_their_own_topics_or_the_ones_with_their_name():
    from povss_ros.ros.launch_args import node_arguments, teach_ui_camera, teach_ui_camera_name

    overrides, remappings = node_arguments(dict(LAUNCH_DEFAULTS, cameras="[head, wrist]"))
    assert overrides == {"autostart": True, "cameras": ["head", "wrist"]}
    assert remappings == []  # head/image, head/camera_info ... in the node's namespace
    assert teach_ui_camera(overrides, remappings) == "head/image"  # the first camera
    overrides, remappings = node_arguments(dict(
        LAUNCH_DEFAULTS, cameras="head, wrist", image_topic="/{camera}/color/image_raw",
        depth_topic="/{camera}/depth/image_rect_raw"))
    assert overrides["use_depth"] is True
    assert remappings == [
        ("head/image", "/head/color/image_raw"), ("head/camera_info", "/head/color/camera_info"),
        ("head/depth", "/head/depth/image_rect_raw"),
        ("wrist/image", "/wrist/color/image_raw"),
        ("wrist/camera_info", "/wrist/color/camera_info"),
        ("wrist/depth", "/wrist/depth/image_rect_raw")]
    assert teach_ui_camera(overrides, remappings) == "/head/color/image_raw"
    _, remappings = node_arguments(dict(LAUNCH_DEFAULTS, cameras="[arm]",
                                        camera_info_topic="/calib/{camera}"))
    assert remappings == [("arm/camera_info", "/calib/arm")]
    # one named camera: plain topics are that camera's
    overrides, remappings = node_arguments(dict(LAUNCH_DEFAULTS, cameras="[arm]",
                                                image_topic="/cam/image", depth_topic="/depth"))
    assert remappings == [("arm/image", "/cam/image"), ("arm/camera_info", "/cam/camera_info"),
                          ("arm/depth", "/depth")]
    assert overrides["use_depth"] is True
    assert teach_ui_camera_name(overrides) == "arm"
    assert teach_ui_camera_name(node_arguments(LAUNCH_DEFAULTS)[0]) == ""


@pytest.mark.parametrize(("given", "why"), [
    ({"cameras": "[head, head]"}, "cameras:='[head, head]' names head twice"),
    ({"cameras": "[head, 2nd]"}, "'2nd', not a camera name"),
    ({"cameras": "[head, wrist]", "image_topic": "/cam/image"},
     "image_topic:='/cam/image' names one topic for the cameras head, wrist: put {camera}"),
    ({"image_topic": "/{camera}/color/image_raw"},
     "image_topic:='/{camera}/color/image_raw' holds {camera} but the launch names no cameras"),
    ({"depth_topic": "/{camera}/depth"}, "holds {camera} but the launch names no cameras"),
])
def test_a_bad_cameras_argument_is_refused_naming_it(given, why):
    from povss_ros.ros.launch_args import node_arguments

    with pytest.raises(ValueError) as refused:
        node_arguments(dict(LAUNCH_DEFAULTS, **given))
    assert why in str(refused.value)


@pytest.mark.parametrize(("image", "info"), [
    ("/camera/image_raw", "/camera/camera_info"), ("/image", "/camera_info"),
    ("image", "camera_info"), ("cam/image/", "cam/camera_info"),
    ("/a/b/c/image_rect", "/a/b/c/camera_info"),
])
def test_camera_info_is_the_image_topics_sibling(image, info):
    from povss_ros.ros.launch_args import camera_info_of

    assert camera_info_of(image) == info


@pytest.mark.parametrize(("text", "words"), [
    ("[mug, cup, table]", ["mug", "cup", "table"]),
    (" mug ,cup", ["mug", "cup"]),
    ("  [ 'my mug' ]", ["my mug"]),
    ("mug", ["mug"]),
])
def test_vocabulary_words_reads_a_yaml_list_or_commas(text, words):
    from povss_ros.ros.launch_args import vocabulary_words

    assert vocabulary_words(text) == words


@pytest.mark.parametrize(("text", "why"), [
    ("[mug, cup", "is not a YAML list"),
    (" , ,", "holds no word"),
    ("[]", "holds no word"),
    ("[~, '  ']", "holds no word"),
])
def test_vocabulary_words_refuses_what_is_not_a_list_of_words(text, why):
    from povss_ros.ros.launch_args import vocabulary_words

    with pytest.raises(ValueError, match=rf"vocabulary:=.* {why}"):
        vocabulary_words(text)


def test_flag_reads_the_usual_words_and_refuses_others():
    from povss_ros.ros.launch_args import FALSE_WORDS, TRUE_WORDS, flag

    for word in TRUE_WORDS:
        assert flag("autostart", f" {word.upper()} ") is True
    for word in FALSE_WORDS:
        assert flag("autostart", word.capitalize()) is False
    for bad in ("maybe", "", "2", "truth"):
        with pytest.raises(ValueError, match=r"autostart:=.*: give true or false"):
            flag("autostart", bad)


TEACH_UI_DEFAULTS = {"teach_ui": "false", "teach_ui_host": "127.0.0.1", "teach_ui_port": "8642",
                     "teach_ui_token": "", "teach_ui_camera": ""}


def test_the_launch_file_hands_the_teach_ui_arguments_to_teach_ui_arguments():
    from povss_ros.ros.launch_args import TEACH_UI_ARGUMENTS

    declared = {}
    for call in ast.walk(ast.parse(LAUNCH.read_text())):
        if isinstance(call, ast.Call) and getattr(call.func, "id", "") == "DeclareLaunchArgument":
            default = next(k.value for k in call.keywords if k.arg == "default_value")
            declared[call.args[0].value] = getattr(default, "value", None)
    assert {name: declared[name] for name in TEACH_UI_ARGUMENTS} == TEACH_UI_DEFAULTS
    assert "teach_ui_arguments({name: LaunchConfiguration(name)" in LAUNCH.read_text()


def test_teach_ui_arguments_start_no_page_by_default_and_a_local_one_when_asked():
    from povss_ros.ros.launch_args import teach_ui_arguments

    assert teach_ui_arguments(TEACH_UI_DEFAULTS) is None
    assert teach_ui_arguments(dict(TEACH_UI_DEFAULTS, teach_ui="true")) == {
        "host": "127.0.0.1", "port": 8642, "token": "", "camera": ""}
    given = dict(TEACH_UI_DEFAULTS, teach_ui="on", teach_ui_host=" 0.0.0.0 ",
                 teach_ui_port="9000", teach_ui_token="a-long-enough-secret")
    assert teach_ui_arguments(given) == {"host": "0.0.0.0", "port": 9000,
                                         "token": "a-long-enough-secret", "camera": ""}


def test_the_teach_page_shows_the_first_camera_or_the_one_named():
    """teach_ui_camera picks the page's camera; empty: the first of cameras:=. With the
    cameras in a params file the launch cannot see them, so the name is taken as given."""
    from povss_ros.ros.launch_args import node_arguments, teach_ui_arguments, teach_ui_camera

    on = dict(TEACH_UI_DEFAULTS, teach_ui="true")
    two, remappings = node_arguments(dict(
        LAUNCH_DEFAULTS, cameras="[head, wrist]", image_topic="/{camera}/color/image_raw"))
    assert teach_ui_arguments(on, two)["camera"] == "head"
    chosen = teach_ui_arguments(dict(on, teach_ui_camera="wrist"), two)["camera"]
    assert chosen == "wrist"
    assert teach_ui_camera(two, remappings, chosen) == "/wrist/color/image_raw"
    one, remappings = node_arguments(LAUNCH_DEFAULTS)  # cameras from the params file
    assert teach_ui_arguments(dict(on, teach_ui_camera=" arm "), one)["camera"] == "arm"
    assert teach_ui_camera(one, remappings, "arm") == "arm/image"
    with pytest.raises(ValueError, match=r"teach_ui_camera:='elbow' is not one of cameras:= "
                                         r"head, wrist"):
        teach_ui_arguments(dict(on, teach_ui_camera="elbow"), two)
    with pytest.raises(ValueError, match=r"teach_ui_camera:='2nd': not a camera name"):
        teach_ui_arguments(dict(on, teach_ui_camera="2nd"), one)


@pytest.mark.parametrize(("key", "value", "why"), [
    ("teach_ui", "sure", r"teach_ui:=.*give true or false"),
    ("teach_ui_port", "70000", r"teach_ui_port:='70000': give a port number"),
    ("teach_ui_port", "http", r"teach_ui_port:='http': give a port number"),
    ("teach_ui_token", "short", r"teach_ui_token: .* at least 16"),
])
def test_teach_ui_arguments_refuse_malformed_values(key, value, why):
    from povss_ros.ros.launch_args import teach_ui_arguments

    with pytest.raises(ValueError, match=why):
        teach_ui_arguments({**TEACH_UI_DEFAULTS, "teach_ui": "true", key: value})


def test_a_node_that_fails_fails_the_launch(launch_env):
    """`launch` returns 0 when a process dies unless something raises: the launch file's exit
    handler makes a node's error exit the launch's error exit."""
    proc = _launch(launch_env, "weights:=/nonexistent")
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 1, out
    assert "parameter 'weights'" in out and "/nonexistent" in out  # the node's own error
    assert "exited with status 1" in out


def test_the_launch_starts_the_node_with_its_arguments_and_ends_cleanly_on_ctrl_c(launch_env):
    import time

    weights = ROOT / "models" / "syn_small.safetensors"
    proc = _launch(launch_env, f"weights:={weights}", "device:=cpu",
                   "vocabulary:=[mug, table, floor]", "namespace:=lt")
    lines = []
    end = time.monotonic() + 180
    for line in proc.stdout:  # the node configures and activates itself (autostart)
        lines.append(line)
        if "povss active" in line or time.monotonic() > end:
            break
    out = "".join(lines)
    assert "povss active" in out, out
    assert "[lt.povss]" in out and "3 words" in out, out
    proc.send_signal(2)  # Ctrl-C
    out += proc.communicate(timeout=60)[0]
    assert proc.returncode == 0, out
    assert "process has finished cleanly" in out and "Traceback" not in out, out


def test_autostart_false_leaves_the_node_unconfigured(launch_env):
    import os
    import time

    import rclpy
    from lifecycle_msgs.srv import GetState

    weights = ROOT / "models" / "syn_small.safetensors"
    proc = _launch(launch_env, f"weights:={weights}", "device:=cpu", "autostart:=false",
                   "namespace:=la")
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
                      ROS_DOMAIN_ID=launch_env["ROS_DOMAIN_ID"])
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = rclpy.create_node("launch_test_probe", context=context)
        client = node.create_client(GetState, "/la/povss/get_state")
        assert client.wait_for_service(timeout_sec=120), "the node's lifecycle never came up"
        executor = rclpy.executors.SingleThreadedExecutor(context=context)
        executor.add_node(node)
        future = client.call_async(GetState.Request())
        end = time.monotonic() + 30
        while not future.done() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.1)
        assert future.done()
    finally:
        proc.send_signal(2)
        out = proc.communicate(timeout=60)[0]
        context.try_shutdown()
    assert future.result().current_state.label == "unconfigured", out
    assert "povss configured" not in out and proc.returncode == 0, out


def test_the_launch_colours_logs_only_for_a_terminal():
    from povss_ros.ros.launch_args import log_environment

    assert log_environment(True) == {"RCUTILS_COLORIZED_OUTPUT": "1"}
    assert log_environment(False) == {"RCUTILS_COLORIZED_OUTPUT": "0"}  # no ANSI in files
