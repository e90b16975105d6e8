"""`povss_node`: start the povss lifecycle node, bring it up, and end it cleanly.

The process handles SIGINT/SIGTERM itself rather than letting rclpy tear the context down
under running callbacks: on a signal it stops taking frames, calls off a running teach (whose
caller is answered), lets the executor finish, and only then shuts ROS down, so a normal
shutdown logs no error. Exit status: 0 after a signal or a lifecycle shutdown, 1 when start-up
fails (a bad parameter, or a failed configure with autostart), so `ros2 launch` can report it.
"""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING

from ..cameras import MAX_CAMERAS

if TYPE_CHECKING:
    from .executor import DrainingExecutor
    from .perception_node import PerceptionNode

# Callback threads: the services, concept sharing and parameter/lifecycle callbacks, and one
# per camera (each camera's callbacks run in its own group); a pool thread starts only when
# work needs it, so a node of one camera runs few.
CALLBACK_THREADS = 3 + MAX_CAMERAS

USAGE = """\
usage: povss_node [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] [-r FROM:=TO] ...]

The povss perception node: SAN open-vocabulary segmentation with personal concepts.
Usually started by `ros2 launch povss_ros perception.launch.py weights:=...`; run directly,
it takes the standard ROS arguments, for example
  povss_node --ros-args -p weights:=/path/san_vit_b_16.pth -r image:=/camera/color/image_raw

A lifecycle node: with autostart (the default) it configures (loads the model) and activates
itself; with -p autostart:=false it waits for `ros2 lifecycle set /povss configure|activate`.
Subscribes image (or image/compressed), camera_info, depth (with -p use_depth:=true) and
teach_mask; publishes ~/labels (mono16 class ids), ~/class_map (latched), ~/objects,
~/markers, ~/concepts/<id>/mask and ~/concepts/<id>/points, ~/overlay, ~/camera_info,
~/teach_review (latched) and /diagnostics; serves teach_concept, forget_concept and
list_concepts (docs/ros.md has the whole contract). With -p cameras:="[head, wrist]" one node
serves several cameras: camera head reads head/image, ... and publishes ~/head/labels, ...

parameters (name, default, meaning):
"""


def usage() -> str:
    """The --help text: how to start the node, and every parameter with its default."""
    from .params import parameter_table, yaml_value

    rows = [f"  {name} = {yaml_value(default)}\n      {text}" for name, default, text in
            parameter_table()]
    return USAGE + "\n".join(rows) + "\n"


def main(args: list[str] | None = None) -> int:
    """Console entry point; works with `--ros-args` directly (no ros2 CLI needed). The heavy
    imports (rclpy, torch) happen here, so a Ctrl-C while they load is a quiet exit 130."""
    argv = list(args if args is not None else sys.argv)
    own = argv[1 : argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in own or "--help" in own:
        sys.stdout.write(usage())
        return 0
    try:
        return _run(argv)
    except KeyboardInterrupt:  # before our own handler is installed
        return 130


def _run(argv: list[str]) -> int:
    import rclpy
    from rclpy.exceptions import ParameterException
    from rclpy.signals import SignalHandlerOptions

    from .dds import use_large_image_transport
    from .executor import DrainingExecutor
    from .perception_node import PerceptionNode

    profile = use_large_image_transport()  # before rclpy.init: Fast DDS reads it then
    stop = threading.Event()
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT,
                                                                     signal.SIGTERM)}
    node = executor = None
    code = 0
    try:
        node = PerceptionNode()
        if profile:
            node.get_logger().info(f"Fast DDS: large-image shared-memory profile {profile}")
        executor = DrainingExecutor(num_threads=CALLBACK_THREADS)
        executor.add_node(node)
        if node.settings.autostart and not _bring_up(node, stop):
            code = 1
        # Runs until a signal, or until a lifecycle client shuts the node down (finalized).
        while code == 0 and not stop.is_set() and node.state_label() != "finalized":
            executor.spin_once(timeout_sec=0.1)
    except (ValueError, ParameterException) as exc:  # a bad value in the parameters
        print(f"[povss] error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        _shut_down(node, executor)
        for sig, handler in previous.items():
            # After a signal stopped the node, a second Ctrl-C (a terminal's with the
            # launcher's SIGINT) must not raise KeyboardInterrupt into the exit: ignore it.
            stopping = stop.is_set() and sig == signal.SIGINT
            signal.signal(sig, signal.SIG_IGN if stopping else handler)
    return code


def _bring_up(node: PerceptionNode, stop: threading.Event) -> bool:
    """configure + activate (autostart); False when configure fails."""
    from rclpy.lifecycle import TransitionCallbackReturn

    if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
        print(f"[povss] error: {node.configure_error or 'configure failed'}", file=sys.stderr,
              flush=True)
        return False
    if not stop.is_set():
        node.trigger_activate()
    return True


def _shut_down(node: PerceptionNode | None, executor: DrainingExecutor | None) -> None:
    """Frames stop and a teach is called off first; the executor then finishes the callbacks
    in flight (a teach's caller gets its answer); then the lifecycle shutdown and ROS."""
    if node is not None:
        node.quiesce("the node is shutting down")
    # Before the node goes: the executor's wait set holds the node's handles, and destroying
    # the node while it does spins forever in rclpy (destroy_when_not_in_use).
    if executor is not None and not executor.shutdown(timeout_sec=30.0):
        print("[povss] warning: callbacks still running 30 s after the shutdown began; "
              "ending without them", file=sys.stderr, flush=True)
    if node is not None:
        if node.state_label() in ("unconfigured", "inactive", "active"):
            node.trigger_shutdown()
        node.destroy_node()
    import rclpy

    if rclpy.ok():
        rclpy.try_shutdown()


if __name__ == "__main__":
    sys.exit(main())
