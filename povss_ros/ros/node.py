"""The `povss` node: camera in, labels/class map/concept masks out, teach/forget/list services.

Thin by design: every decision about models and concepts lives in `PerceptionEngine` (core,
no ROS). This file only converts messages, owns the threads and publishes. Frames are
processed newest-first in a worker thread, so a slow model drops frames instead of building
a backlog, and services and callbacks stay responsive while a frame or a teach runs.
"""

from __future__ import annotations

import sys
import threading
import time

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from povss_interfaces.msg import ClassMap
from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept

from ..perception import PerceptionEngine, TeachRequest, build_engine
from .conversions import UnsupportedEncoding, array_to_image, image_to_rgb, mask_from_image
from .dds import use_large_image_transport
from .diagnostics import FrameStats, diagnostics_message
from .params import (
    declare_parameters,
    engine_settings,
    image_qos,
    node_settings,
    parameter_table,
    yaml_value,
)


class PerceptionNode(Node):
    def __init__(self, engine: PerceptionEngine | None = None) -> None:
        super().__init__("povss")
        declare_parameters(self)
        self.settings = node_settings(self)
        self.engine = engine or build_engine(engine_settings(self))
        self.stats = FrameStats()
        self._slot: tuple[Image, np.ndarray] | None = None
        self._slot_cv = threading.Condition()
        self._running = True
        latched = QoSProfile(
            depth=1,
            reliability=ReliabilityPolicy.RELIABLE,
            durability=DurabilityPolicy.TRANSIENT_LOCAL,
        )
        self.labels_pub = self.create_publisher(Image, "~/labels", 2)
        self.overlay_pub = self.create_publisher(Image, "~/overlay", 2)
        self.class_map_pub = self.create_publisher(ClassMap, "~/class_map", latched)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.mask_pubs: dict[str, object] = {}
        frames = MutuallyExclusiveCallbackGroup()
        services = ReentrantCallbackGroup()
        self.create_subscription(
            Image, "image", self._on_image, image_qos(self.settings), callback_group=frames
        )
        self.create_subscription(
            Image, "teach_mask", self._on_teach_mask, 10, callback_group=frames
        )
        self.create_service(TeachConcept, "teach_concept", self._teach, callback_group=services)
        self.create_service(ForgetConcept, "forget_concept", self._forget, callback_group=services)
        self.create_service(ListConcepts, "list_concepts", self._list, callback_group=services)
        self.create_timer(
            self.settings.diagnostics_period, self._publish_diagnostics, callback_group=services
        )
        self.add_on_set_parameters_callback(self._on_parameters)
        for problem in self.engine.load_problems:
            self.get_logger().warning(f"concept store: {problem}")
        self._refresh_concepts()
        self._worker = threading.Thread(target=self._work, name="povss-frames", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"povss ready: SAN {self.engine.describe()}, {len(self.engine.vocabulary)} words, "
            f"{len(self.engine.concept_entries())} personal concepts"
        )

    # ------------------------------------------------------------------ frames
    def _on_image(self, msg: Image) -> None:
        try:
            rgb = image_to_rgb(msg)
        except (UnsupportedEncoding, ValueError) as exc:
            self.stats.error(str(exc))
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return
        self.engine.capture.add_frame(_stamp_ns(msg), rgb)
        with self._slot_cv:
            if self._slot is not None:
                self.stats.dropped += 1
            self._slot = (msg, rgb)
            self._slot_cv.notify()

    def _on_teach_mask(self, msg: Image) -> None:
        try:
            self.engine.capture.add_mask(_stamp_ns(msg), mask_from_image(msg))
        except (UnsupportedEncoding, ValueError) as exc:
            self.get_logger().warning(f"teach_mask ignored: {exc}", throttle_duration_sec=5.0)

    def _work(self) -> None:
        while self._running:
            with self._slot_cv:
                while self._slot is None and self._running:
                    self._slot_cv.wait(timeout=0.5)
                if not self._running:
                    return
                (msg, rgb), self._slot = self._slot, None
            start = time.perf_counter()
            try:
                self._process(msg, rgb)
            except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the node
                self.stats.error(str(exc))
                self.get_logger().error(f"frame failed: {exc}", throttle_duration_sec=5.0)
                continue
            self.stats.frame_done(time.perf_counter() - start, _stamp_ns(msg))

    def _process(self, msg: Image, rgb: np.ndarray) -> None:
        frame = self.engine.segment(rgb)
        self.stats.model_seconds.append(frame.model_seconds)
        self.labels_pub.publish(array_to_image(frame.labels, "mono16", msg.header))
        for concept_id, mask in frame.concept_masks.items():
            pub = self.mask_pubs.get(concept_id)
            if pub is not None:
                pub.publish(array_to_image(mask, "mono8", msg.header))
        if self.overlay_pub.get_subscription_count() > 0:
            picture = self.engine.overlay(rgb, frame)
            self.overlay_pub.publish(array_to_image(picture[:, :, ::-1], "bgr8", msg.header))

    # ------------------------------------------------------------------ services
    def _teach(self, request: TeachConcept.Request, response: TeachConcept.Response):
        try:
            images = [image_to_rgb(m) for m in request.images]
            masks = [mask_from_image(m) for m in request.masks]
        except (UnsupportedEncoding, ValueError) as exc:
            response.success, response.message = False, f"bad image or mask: {exc}"
            return response
        outcome = self.engine.teach(
            TeachRequest(
                request.name,
                request.base_class,
                images,
                masks,
                int(request.num_frames),
                bool(request.overwrite),
            ),
            progress=lambda it, total, loss: self._log_progress(request.name, it, total, loss),
        )
        for field in (
            "success",
            "message",
            "concept_id",
            "class_id",
            "shots_used",
            "frames_rejected",
            "training_seconds",
            "fit_iou",
        ):
            setattr(response, field, getattr(outcome, field))
        if outcome.success:
            self._refresh_concepts()
            self.get_logger().info(outcome.message)
        else:
            self.get_logger().warning(f"teach_concept failed: {outcome.message}")
        return response

    def _log_progress(self, name: str, it: int, total: int, loss: float) -> None:
        if it == 1 or it == total or it % 50 == 0:
            self.get_logger().info(f"teaching {name!r}: iteration {it}/{total}, loss {loss:.4f}")

    def _forget(self, request: ForgetConcept.Request, response: ForgetConcept.Response):
        response.success, response.message = self.engine.forget(request.name)
        if response.success:
            self._refresh_concepts()
        return response

    def _list(self, request: ListConcepts.Request, response: ListConcepts.Response):
        entries = self.engine.concept_entries()
        response.concept_ids = [e.concept_id for e in entries]
        response.names = [e.name for e in entries]
        response.base_classes = [e.base_class for e in entries]
        response.class_ids = [e.class_id for e in entries]
        response.shot_counts = [e.shots for e in entries]
        return response

    # ------------------------------------------------------------------ state
    def _refresh_concepts(self) -> None:
        """Create/destroy per-concept mask publishers and republish the latched class map."""
        live = {e.concept_id for e in self.engine.concept_entries()}
        for concept_id in set(self.mask_pubs) - live:
            self.destroy_publisher(self.mask_pubs.pop(concept_id))
        for concept_id in live - set(self.mask_pubs):
            self.mask_pubs[concept_id] = self.create_publisher(
                Image, f"~/concepts/{concept_id}/mask", 2
            )
        self._publish_class_map()

    def _publish_class_map(self) -> None:
        msg = ClassMap()
        msg.header.stamp = self.get_clock().now().to_msg()
        for entry in self.engine.class_table():
            msg.ids.append(entry.class_id)
            msg.names.append(entry.name)
            msg.personal.append(entry.personal)
            msg.concept_ids.append(entry.concept_id)
            msg.base_classes.append(entry.base_class)
        self.class_map_pub.publish(msg)

    def _on_parameters(self, params: list):  # noqa: ANN202 - rclpy callback
        from rcl_interfaces.msg import SetParametersResult

        for p in params:
            if p.name == "vocabulary":
                try:
                    self.engine.set_vocabulary(list(p.value))
                except ValueError as exc:
                    return SetParametersResult(successful=False, reason=str(exc))
                threading.Thread(target=self._publish_class_map, daemon=True).start()
            elif p.name in ("weights", "variant", "device", "precision", "concept_store"):
                return SetParametersResult(
                    successful=False, reason=f"{p.name} is read at start-up; restart the node"
                )
        return SetParametersResult(successful=True)

    def _publish_diagnostics(self) -> None:
        self.diag_pub.publish(diagnostics_message(self, self.stats, self.engine))

    def close(self) -> None:
        self._running = False
        with self._slot_cv:
            self._slot_cv.notify_all()
        self._worker.join(timeout=5.0)


def _stamp_ns(msg: Image) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


USAGE = """\
usage: povss_node [-h] [--ros-args [--params-file FILE] [-p NAME:=VALUE] [-r FROM:=TO] ...]

The povss perception node: SAN open-vocabulary segmentation with personal concepts.
Usually started by `ros2 launch povss_ros perception.launch.py weights:=...`; run directly,
it takes the standard ROS arguments, for example
  povss_node --ros-args -p weights:=/path/san_vit_b_16.pth -r image:=/camera/color/image_raw

Subscribes image (sensor_msgs/Image) and teach_mask; publishes ~/labels (mono16 class ids),
~/class_map (latched), ~/concepts/<id>/mask, ~/overlay and /diagnostics; serves
teach_concept, forget_concept and list_concepts (docs/ros.md has the whole contract).

parameters (name, default, meaning):
"""


def usage() -> str:
    """The --help text: how to start the node, and every parameter with its default."""
    rows = [f"  {name} = {yaml_value(default)}\n      {text}" for name, default, text in
            parameter_table()]
    return USAGE + "\n".join(rows) + "\n"


def main(args: list[str] | None = None) -> int:
    """Console entry point; works with `--ros-args` directly (no ros2 CLI needed)."""
    from ..perception import StartupError

    argv = list(args if args is not None else sys.argv)
    own = argv[1 : argv.index("--ros-args")] if "--ros-args" in argv else argv[1:]
    if "-h" in own or "--help" in own:
        sys.stdout.write(usage())
        return 0
    profile = use_large_image_transport()  # before rclpy.init: Fast DDS reads it then
    rclpy.init(args=argv)
    node = executor = None
    code = 0
    try:
        node = PerceptionNode()
        if profile:
            node.get_logger().info(f"Fast DDS: large-image shared-memory profile {profile}")
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except StartupError as exc:
        print(f"[povss] error: {exc}", file=sys.stderr, flush=True)
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            # The executor's wait set holds the node's handles: destroying the node while it
            # does spins forever in rclpy (destroy_when_not_in_use). Let it go first.
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.close()
            node.destroy_node()
        if rclpy.ok():
            rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
