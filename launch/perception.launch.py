"""ros2 launch povss_ros perception.launch.py [weights:=...] [image_topic:=...] [device:=...]
    [depth_topic:=...] [camera_info_topic:=...] [vocabulary:="[mug, cup, table]"]
    [autostart:=false] [namespace:=...] [params_file:=...]

Starts the povss lifecycle node with the package's params file (or yours). Launch arguments
that are left empty do not override the params file. The camera info is the image topic's
sibling `camera_info` unless `camera_info_topic` names another; a `depth_topic` (a depth image
registered to the colour camera) turns on 3D objects (`use_depth`). With autostart (the
default) the node configures and activates itself; autostart:=false leaves it unconfigured for
`ros2 lifecycle set /povss configure` (or a lifecycle manager).

When the node exits with a non-zero status (a missing weights file, a failed configure) the
launch ends with a non-zero status too: `launch` itself returns 1 only when an exception is
raised in its loop, so an exit handler raises one.
"""

import yaml
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.substitutions import FindPackageShare

from launch import Action, LaunchContext, LaunchDescription

PACKAGE = "povss_ros"
EXECUTABLE = "povss_node"
NODE_NAME = "povss"
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


class NodeFailed(RuntimeError):
    """The node process ended with a non-zero status; raised to fail the whole launch."""


def vocabulary_words(text: str) -> list[str]:
    """The `vocabulary` launch argument -> words: a YAML list "[mug, cup]" or "mug, cup"."""
    text = text.strip()
    words = yaml.safe_load(text) if text.startswith("[") else text.split(",")
    if not isinstance(words, list):
        raise ValueError(f"vocabulary:={text!r}: give a list, e.g. vocabulary:=\"[mug, cup]\"")
    words = [str(w).strip() for w in words if w is not None and str(w).strip()]
    if not words:
        raise ValueError(f"vocabulary:={text!r} holds no word")
    return words


def flag(name: str, text: str) -> bool:
    """A boolean launch argument (true/false, 1/0, yes/no, on/off)."""
    value = text.strip().lower()
    if value not in TRUE_WORDS + FALSE_WORDS:
        raise ValueError(f"{name}:={text!r}: give true or false")
    return value in TRUE_WORDS


def camera_info_of(image_topic: str) -> str:
    """The camera_info topic beside an image topic (image_transport's convention)."""
    parent = image_topic.rstrip("/").rsplit("/", 1)[0]
    return f"{parent}/camera_info" if parent else "camera_info"


def _fail_on_error_exit(event: ProcessExited, context: LaunchContext) -> None:
    if event.returncode != 0:
        raise NodeFailed(
            f"the povss node ({event.process_name}) exited with status "
            f"{event.returncode}: its error is above"
        )


def _node(context: LaunchContext, *args: object, **kwargs: object) -> list[Action]:
    overrides: dict[str, object] = {}
    for key in ("weights", "device"):
        value = LaunchConfiguration(key).perform(context)
        if value:
            overrides[key] = value
    vocabulary = LaunchConfiguration("vocabulary").perform(context)
    if vocabulary.strip():
        overrides["vocabulary"] = vocabulary_words(vocabulary)
    overrides["autostart"] = flag("autostart", LaunchConfiguration("autostart").perform(context))
    image = LaunchConfiguration("image_topic").perform(context)
    info = LaunchConfiguration("camera_info_topic").perform(context) or camera_info_of(image)
    remappings = [("image", image), ("camera_info", info)]
    depth = LaunchConfiguration("depth_topic").perform(context)
    if depth:
        overrides["use_depth"] = True
        remappings.append(("depth", depth))
    node = LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=remappings,
        output="screen",
        emulate_tty=True,
    )
    exit_handler = OnProcessExit(target_action=node, on_exit=_fail_on_error_exit)
    return [RegisterEventHandler(exit_handler), node]


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution([FindPackageShare(PACKAGE), "config", "povss.yaml"])
    return LaunchDescription(
        [
            DeclareLaunchArgument(
                "params_file",
                default_value=default_params,
                description="YAML parameters of the povss node",
            ),
            DeclareLaunchArgument(
                "image_topic",
                default_value="/camera/image_raw",
                description="sensor_msgs/Image topic to segment",
            ),
            DeclareLaunchArgument(
                "camera_info_topic",
                default_value="",
                description="sensor_msgs/CameraInfo topic (empty: camera_info beside "
                "image_topic)",
            ),
            DeclareLaunchArgument(
                "depth_topic",
                default_value="",
                description="depth image registered to the colour camera (16UC1 mm or 32FC1 m);"
                " setting it turns on 3D objects (use_depth)",
            ),
            DeclareLaunchArgument(
                "weights",
                default_value="",
                description="SAN checkpoint path (overrides the params file)",
            ),
            DeclareLaunchArgument(
                "device",
                default_value="",
                description="auto | cpu | cuda (overrides the params file)",
            ),
            DeclareLaunchArgument(
                "vocabulary",
                default_value="",
                description='open-vocabulary words, e.g. "[mug, cup, table]" (overrides the '
                "params file; empty: the params file's)",
            ),
            DeclareLaunchArgument(
                "autostart",
                default_value="true",
                description="true: the node configures (loads the model) and activates itself;"
                " false: it waits for lifecycle transitions",
            ),
            DeclareLaunchArgument(
                "namespace", default_value="", description="namespace of the node and its topics"
            ),
            OpaqueFunction(function=_node),
        ]
    )
