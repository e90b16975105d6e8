"""ros2 launch povss_ros perception.launch.py [weights:=...] [image_topic:=...] [device:=...]

Starts the povss node with the package's params file (or yours). Launch arguments that are
left empty do not override the params file.
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

PACKAGE = "povss_ros"
EXECUTABLE = "povss_node"
NODE_NAME = "povss"


def _node(context: LaunchContext, *args: object, **kwargs: object) -> list[Node]:
    overrides = {}
    for key in ("weights", "device"):
        value = LaunchConfiguration(key).perform(context)
        if value:
            overrides[key] = value
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=LaunchConfiguration("namespace"),
            parameters=[LaunchConfiguration("params_file"), overrides],
            remappings=[("image", LaunchConfiguration("image_topic"))],
            output="screen",
            emulate_tty=True,
        )
    ]


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
                "namespace", default_value="", description="namespace of the node and its topics"
            ),
            OpaqueFunction(function=_node),
        ]
    )
