"""ros2 launch povss_ros perception.launch.py [weights:=...] [image_topic:=...] [device:=...]
    [depth_topic:=...] [camera_info_topic:=...] [vocabulary:="[mug, cup, table]"]
    [cameras:="[head, wrist]"] [autostart:=false] [namespace:=...] [params_file:=...]
    [teach_ui:=true [teach_ui_host:=127.0.0.1] [teach_ui_port:=8642] [teach_ui_token:=...]]

Starts the povss lifecycle node with the package's params file (or yours). Launch arguments
that are left empty do not override the params file. The camera info is the image topic's
sibling `camera_info` unless `camera_info_topic` names another; a `depth_topic` (a depth image
registered to the colour camera) turns on 3D objects (`use_depth`). `cameras` names several
cameras for one node (one model, one store): camera head then reads head/image,
head/camera_info and head/depth in the node's namespace, or, when a topic argument holds
{camera}, that topic with the camera's name in it (image_topic:=/{camera}/color/image_raw).
With autostart (the
default) the node configures and activates itself; autostart:=false leaves it unconfigured for
`ros2 lifecycle set /povss configure` (or a lifecycle manager). teach_ui:=true also starts
the teach page (povss_teach_ui, its own process and node, beside the povss node in its
namespace); it prints its address.

When the node exits with a non-zero status (a missing weights file, a failed configure) the
launch ends with a non-zero status too: `launch` itself returns 1 only when an exception is
raised in its loop, so an exit handler raises one.
"""

import sys

from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler
from launch.event_handlers import OnProcessExit
from launch.events.process import ProcessExited
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from launch import Action, LaunchContext, LaunchDescription
from povss_ros.ros.launch_args import (
    NODE_ARGUMENTS,
    TEACH_UI_ARGUMENTS,
    log_environment,
    node_arguments,
    teach_ui_arguments,
    teach_ui_camera,
)

PACKAGE = "povss_ros"
EXECUTABLE = "povss_node"
NODE_NAME = "povss"
UI_EXECUTABLE = "povss_teach_ui"


class NodeFailed(RuntimeError):
    """The node process ended with a non-zero status; raised to fail the whole launch."""


def _fail_on_error_exit(event: ProcessExited, context: LaunchContext) -> None:
    if event.returncode != 0:
        raise NodeFailed(
            f"the povss node ({event.process_name}) exited with status "
            f"{event.returncode}: its error is above"
        )


def _node(context: LaunchContext, *args: object, **kwargs: object) -> list[Action]:
    values = {name: LaunchConfiguration(name).perform(context) for name in NODE_ARGUMENTS}
    overrides, remappings = node_arguments(values)  # the parsing, tested: ros/launch_args.py
    node = LifecycleNode(
        package=PACKAGE,
        executable=EXECUTABLE,
        name=NODE_NAME,
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), overrides],
        remappings=remappings,
        output="screen",
        emulate_tty=True,
        additional_env=log_environment(sys.stdout.isatty()),
    )
    exit_handler = OnProcessExit(target_action=node, on_exit=_fail_on_error_exit)
    actions: list[Action] = [RegisterEventHandler(exit_handler), node]
    ui = teach_ui_arguments({name: LaunchConfiguration(name).perform(context)
                             for name in TEACH_UI_ARGUMENTS}, overrides)
    if ui is not None:  # the teach page: the camera as the node sees it, the node by name
        actions.append(Node(
            package=PACKAGE,
            executable=UI_EXECUTABLE,
            name="povss_teach_ui",
            namespace=LaunchConfiguration("namespace"),
            parameters=[dict(ui, target=NODE_NAME)],
            remappings=[("image", teach_ui_camera(overrides, remappings, ui["camera"]))],
            output="screen",
            emulate_tty=True,
            additional_env=log_environment(sys.stdout.isatty()),
        ))
    return actions


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
                "cameras",
                default_value="",
                description='several cameras for one node, e.g. "[head, wrist]": camera head '
                "reads head/image, head/camera_info, head/depth (or image_topic etc. with "
                "{camera} in them); empty: the params file's (one camera)",
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
            DeclareLaunchArgument(
                "teach_ui",
                default_value="false",
                description="true: also start the teach page (povss_teach_ui) beside the node",
            ),
            DeclareLaunchArgument(
                "teach_ui_host",
                default_value="127.0.0.1",
                description="the teach page's bind address; any other than loopback needs the "
                "token",
            ),
            DeclareLaunchArgument(
                "teach_ui_port", default_value="8642", description="the teach page's port"
            ),
            DeclareLaunchArgument(
                "teach_ui_token",
                default_value="",
                description="the teach page's token (empty: generated and printed at start)",
            ),
            DeclareLaunchArgument(
                "teach_ui_camera",
                default_value="",
                description="the camera the teach page shows and teaches from; empty: the "
                "first of cameras:= (name one when the cameras are set in the params file)",
            ),
            OpaqueFunction(function=_node),
        ]
    )
