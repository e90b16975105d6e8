"""The `povss` lifecycle node: camera in, labels/class map/concept masks out, teach/forget/list.

Thin by design: every decision about models and concepts lives in `PerceptionEngine` (core,
no ROS). This file converts messages, owns the threads, publishes and follows the ROS 2
lifecycle: configure loads the model, activate subscribes and publishes, deactivate stops
and frees GPU memory, cleanup drops the model. Frames are processed newest-first in a worker
thread, so a slow model drops frames instead of building a backlog, and services stay
responsive while a frame or a teach runs. One node may serve several cameras (`cameras`):
each has its own inputs and per-frame outputs (`CameraInput`), all share the one engine, and
the worker takes the cameras' frames in turn or, batching, together.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept

from ..options import CONFIGURE
from ..perception import CameraFrame, PerceptionEngine, build_engine
from ..settings import EngineSettings
from .camera_input import CameraInput
from .conversions import (
    compressed_to_rgb,
    depth_to_metres,
    image_to_rgb,
    intrinsics_from_info,
    mask_from_image,
)
from .diagnostics import FrameStats, diagnostics_message
from .outputs import Outputs
from .params import (
    declare_parameters,
    engine_settings,
    image_qos,
    node_settings,
    parameter_fields,
    refusal,
)
from .services import ConceptServices, after_the_fact
from .sharing import ConceptSharing
from .sync import REFUSED, WAITING, Paired

SUCCESS = TransitionCallbackReturn.SUCCESS
FAILURE = TransitionCallbackReturn.FAILURE


class PerceptionNode(LifecycleNode):
    """SAN with personal concepts as a managed (lifecycle) node named ``povss``."""

    def __init__(
        self, build: Callable[[EngineSettings, list[str]], PerceptionEngine] = build_engine
    ) -> None:
        super().__init__("povss")
        declare_parameters(self)  # ValueError on a bad value from a params file
        self.settings = node_settings(self)
        self.engine: PerceptionEngine | None = None
        self.configure_error = ""
        self.stats = FrameStats()  # all cameras together; each camera has its own too
        self.closing = False  # shutting down: no new teach, no new frame
        self._build = build
        self._active = False
        self._frames_cv = threading.Condition()  # guards each camera's waiting frame
        self._worker: threading.Thread | None = None
        self.outputs = Outputs(self)
        self.inputs = self._camera_inputs()  # made again at configure (cameras is read then)
        self._sharing: ConceptSharing | None = None  # share_concepts, while configured
        self._services_group = ReentrantCallbackGroup()
        self._create_services()
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self._make_diag_timer()
        self.add_on_set_parameters_callback(self._on_parameters)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read the parameters, load weights, text embeddings and the concept store; one
        engine (one model, one store) for all the cameras."""
        try:
            self.engine = self._build(engine_settings(self), list(self.settings.cameras))
        except Exception as exc:  # noqa: BLE001 - any load failure is a failed transition
            self.configure_error = str(exc)
            self.get_logger().error(f"configure failed: {exc}")
            return FAILURE
        self.configure_error = ""
        self.inputs = self._camera_inputs()
        self.outputs.create(list(self.inputs))
        if self.settings.share_concepts:
            self._sharing = ConceptSharing(self, self.engine, self.settings.share_shots)
        for problem in self.engine.load_problems:
            self.get_logger().warning(f"concept store: {problem}")
        named = [name for name in self.inputs if name]
        self.get_logger().info(
            f"povss configured: SAN {self.engine.describe()}, {len(self.engine.vocabulary)} "
            f"words, {len(self.engine.concept_entries())} personal concepts"
            + (f", cameras {', '.join(named)}" if named else "")
        )
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Model on its device, publishers on, subscriptions and the frame worker started."""
        self.engine.restore_gpu()
        self.engine.allow_teaching()
        result = super().on_activate(state)
        self.refresh_concepts()
        self._active = True
        self._worker = threading.Thread(target=self._work, name="povss-frames", daemon=True)
        self._worker.start()
        self._subscribe()
        self.get_logger().info("povss active: segmenting frames")
        return result

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop taking frames, call off a running teach, free the GPU; the model stays."""
        self._pause("the node is deactivating")
        result = super().on_deactivate(state)
        self.engine.release_gpu()
        return result

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._drop_model()
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """From any state: whatever runs is stopped and the model dropped."""
        self.closing = True
        if self._active:
            self._pause("the node is shutting down")
        self._drop_model()
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._pause("the node hit an error")
        self._drop_model()
        return SUCCESS

    def quiesce(self, reason: str) -> None:
        """Before the process ends: no new frame, teach or diagnostics; a running teach is
        called off (its caller is answered by the executor's thread)."""
        self.closing = True
        self._diag_timer.cancel()
        if self._active:
            self._pause(reason)

    def state_label(self) -> str:
        return self._state_machine.current_state[1]

    def _pause(self, reason: str) -> None:
        """Unsubscribe, stop the worker after its current frame, end a running teach."""
        self._active = False
        self._unsubscribe()
        if self.engine is not None:
            self.engine.abandon_teach(reason, until_allowed=True)
        self._drop_pending_frames()
        if self._worker is not None:
            self._worker.join(timeout=60.0)
            self._worker = None
        deadline = time.monotonic() + 60.0
        while self.engine is not None and self.engine.teaching and time.monotonic() < deadline:
            time.sleep(0.02)

    def _drop_pending_frames(self) -> None:
        """Forget every camera's waiting frame and pending depth; wake the frame worker (to
        find nothing, or to see it should stop)."""
        with self._frames_cv:
            for camera in self.inputs.values():
                camera.clear()
            self._frames_cv.notify_all()

    def _drop_model(self) -> None:
        if self._sharing is not None:
            self._sharing.close()
            self._sharing = None
        self.outputs.destroy()
        if self.engine is not None:
            self.engine.release_gpu()
            self.engine = None

    # ------------------------------------------------------------------ frames
    def _camera_inputs(self) -> dict[str, CameraInput]:
        return {name: CameraInput(name, self.settings.sync_slop)
                for name in self.settings.cameras}

    def _subscribe(self) -> None:
        for camera in self.inputs.values():
            self._subscribe_camera(camera)

    def _subscribe_camera(self, camera: CameraInput) -> None:
        """The camera's image (raw or compressed), camera_info, depth (with use_depth) and
        teach_mask; its callbacks run one at a time in the camera's own group."""
        s, group, subs = self.settings, camera.group, camera.subscriptions

        def subscribe(msg_type: type, topic: str, handler: Callable, qos: object) -> None:
            subs.append(self.create_subscription(
                msg_type, topic, lambda msg: handler(camera, msg), qos, callback_group=group))

        if s.image_transport == "compressed":
            topic = self.resolve_topic_name(camera.topic("image")) + "/compressed"
            subscribe(CompressedImage, topic, self._on_compressed, image_qos(s))
        else:
            subscribe(Image, camera.topic("image"), self._on_image, image_qos(s))
        subscribe(CameraInfo, camera.topic("camera_info"), self._on_camera_info, image_qos(s))
        if s.use_depth:
            subscribe(Image, camera.topic("depth"), self._on_depth, image_qos(s, depth=True))
        subscribe(Image, camera.topic("teach_mask"), self._on_teach_mask, 10)

    def _unsubscribe(self) -> None:
        for camera in self.inputs.values():
            for sub in camera.subscriptions:
                self.destroy_subscription(sub)
            camera.subscriptions = []

    def _on_image(self, camera: CameraInput, msg: Image) -> None:
        self._take(camera, msg, image_to_rgb)

    def _on_compressed(self, camera: CameraInput, msg: CompressedImage) -> None:
        self._take(camera, msg, compressed_to_rgb)

    def _take(self, camera: CameraInput, msg: Image | CompressedImage,
              decode: Callable) -> None:
        """The boundary of camera frames: one that does not decode, or that SAN cannot segment
        (`Segmenter.frame_problem`), is refused alone with a throttled warning and
        diagnostics' last_error; it reaches neither the model nor the capture buffer."""
        engine = self.engine
        try:
            rgb = decode(msg)
            problem = engine.segmenter.frame_problem(rgb) if engine is not None else None
        except Exception as exc:  # noqa: BLE001 - cv2.error included: a frame never kills us
            problem = str(exc) or repr(exc)
        if problem:
            self._frame_error(camera, f"frame refused{camera.where()}: {problem}")
            self.get_logger().warning(f"frame refused{camera.where()}: {problem}",
                                      throttle_duration_sec=5.0)
            return
        if not self._active or engine is None:
            return
        engine.camera(camera.name).capture.add_frame(stamp_ns(msg), rgb)
        if self.settings.use_depth:
            self._offer(camera, camera.pairing.add_colour(stamp_ns(msg), (msg, rgb)))
        else:
            self._offer(camera, Paired(stamp_ns(msg), (msg, rgb), None))

    def _on_depth(self, camera: CameraInput, msg: Image) -> None:
        """The boundary of depth images: one that does not decode is refused alone."""
        try:
            depth = depth_to_metres(msg)
        except Exception as exc:  # noqa: BLE001 - a bad depth image never kills the node
            camera.depth_refused = str(exc) or repr(exc)
            self.get_logger().warning(f"depth refused{camera.where()}: {exc}",
                                      throttle_duration_sec=5.0)
            if self._active:  # its colour frame need not wait for it
                self._offer(camera, camera.pairing.depth_refused(stamp_ns(msg)))
            return
        if self._active:
            self._offer(camera, camera.pairing.add_depth(stamp_ns(msg), depth))

    def _offer(self, camera: CameraInput, paired: Paired | None) -> None:
        """Hand a frame (and its depth) to the worker, replacing one of the same camera that
        it has not taken yet."""
        if paired is None:
            return
        with self._frames_cv:
            if not self._active:  # paused since the frame came in: it is not processed
                return
            dropped = camera.offer(paired)
            camera.stats.dropped += dropped
            self.stats.dropped += dropped
            self._frames_cv.notify()

    def _on_camera_info(self, camera: CameraInput, msg: CameraInfo) -> None:
        camera.camera_info = msg

    def _on_teach_mask(self, camera: CameraInput, msg: Image) -> None:
        """A mask is checked against its frame when a teach uses it
        (`teaching.shot_masks.mask_problem`)."""
        engine = self.engine
        try:
            if engine is not None:
                engine.camera(camera.name).capture.add_mask(stamp_ns(msg), mask_from_image(msg))
        except Exception as exc:  # noqa: BLE001 - a bad mask message never kills the node
            self.get_logger().warning(f"teach_mask ignored{camera.where()}: {exc}",
                                      throttle_duration_sec=5.0)

    def batching(self) -> bool:
        """Whether frames of several cameras go through one forward now (`batch_cameras`;
        auto: with CUDA only, where a batch is faster)."""
        choice, engine = self.settings.batch_cameras, self.engine  # one read: see cleanup
        if choice == "auto":
            return engine is not None and engine.segmenter.device.type == "cuda"
        return choice == "always"

    def _next_frames(self) -> list[tuple[CameraInput, Paired]] | None:
        """What the worker processes next (None: the node paused): every camera's waiting
        frame when batching, else the one that has waited longest (cameras take turns)."""
        with self._frames_cv:
            while self._active and not any(c.waiting for c in self.inputs.values()):
                self._frames_cv.wait(timeout=0.5)
            if not self._active:
                return None
            waiting = sorted((c for c in self.inputs.values() if c.waiting is not None),
                             key=lambda c: c.waiting_since)
            if not self.batching():
                waiting = waiting[:1]
            return [(c, c.take()) for c in waiting]

    def _work(self) -> None:
        while (taken := self._next_frames()) is not None:
            try:
                self._process(taken)
            except Exception as exc:  # noqa: BLE001 - one bad round must not stop the node
                for camera, _ in taken:
                    self._frame_error(camera, f"frame failed{camera.where()}: {exc}")
                self.get_logger().error(f"frame failed: {exc}", throttle_duration_sec=5.0)

    def _frame_error(self, camera: CameraInput, text: str) -> None:
        camera.stats.error(text)
        self.stats.error(text)

    def _process(self, taken: list[tuple[CameraInput, Paired]]) -> None:
        """Segment the taken frames (in one forward when batching), publish each under its
        camera; each stage's time goes to the diagnostics (model: SAN's forward, its share of
        a batch, and decoding; postprocess: class ids, objects, 3D and concept masks;
        publish: conversions and sends). With use_depth, a frame without usable depth or
        camera info is still segmented and published; its objects lack 3D and diagnostics
        say why. A frame that fails fails alone: the other cameras' frames are published."""
        start = time.perf_counter()
        frames, problems = [], []
        for camera, paired in taken:
            (msg, rgb), intrinsics, problem = paired.colour, None, paired.problem
            if problem == REFUSED:
                problem = f"the depth image was refused: {camera.depth_refused}"
            if paired.depth is not None:
                try:
                    if camera.camera_info is None:
                        raise ValueError("no camera_info received: 3D needs the colour "
                                         "camera's intrinsics")
                    intrinsics = intrinsics_from_info(camera.camera_info,
                                                      self.settings.camera_matrix)
                except ValueError as exc:
                    problem = str(exc)
            depth = paired.depth if intrinsics is not None else None
            frames.append(CameraFrame(rgb, stamp_ns(msg), depth, intrinsics, camera.name))
            problems.append(problem)
        results = self.engine.segment_frames(frames, batch=len(frames) > 1)
        engine_seconds = (time.perf_counter() - start) / len(frames)
        for (camera, paired), problem, frame in zip(taken, problems, results):
            msg, rgb = paired.colour
            if isinstance(frame, Exception):
                self._frame_error(camera, f"frame failed{camera.where()}: {frame}")
                self.get_logger().error(f"frame failed{camera.where()}: {frame}",
                                        throttle_duration_sec=5.0)
                continue
            problem = problem or frame.depth_problem
            if self.settings.use_depth:
                expected = problem == WAITING  # the stream's first frames, before any depth
                camera.stats.depth_frame(problem, is_error=not expected)
                self.stats.depth_frame(problem, not expected, camera.where())
                if problem and not expected:
                    self.get_logger().warning(f"3D skipped{camera.where()}: {problem}",
                                              throttle_duration_sec=5.0)
            published = time.perf_counter()
            self.outputs.frame(msg.header, rgb, frame, camera.camera_info, self.engine,
                               camera.name)
            done = time.perf_counter()
            for stats in (camera.stats, self.stats):
                stats.stages(frame.model_seconds, max(0.0, engine_seconds - frame.model_seconds),
                             done - published)
                stats.frame_done(done - start, stamp_ns(msg), frame.batch)

    # ------------------------------------------------------------------ concepts
    def _create_services(self) -> None:
        """teach_concept, forget_concept and list_concepts, answered by `ConceptServices`
        beside the frames (their own reentrant group: a teach never waits for a frame)."""
        handlers, group = ConceptServices(self), self._services_group
        self.create_service(TeachConcept, "teach_concept", handlers.teach, callback_group=group)
        self.create_service(ForgetConcept, "forget_concept", handlers.forget,
                            callback_group=group)
        self.create_service(ListConcepts, "list_concepts", handlers.list, callback_group=group)

    def service_refusal(self, needs_active: bool) -> str:
        """Why a concept service cannot be served now ("" if it can): teaching needs an
        active node (it reads captured frames and the model on its device), forgetting and
        listing a configured one."""
        if self.closing:
            return "the node is shutting down"
        if self.engine is None:
            detail = (f" (last configure failed: {self.configure_error})"
                      if self.configure_error else "")
            return f"the node is {self.state_label()}: configure it first{detail}"
        if needs_active and self.state_label() != "active":
            return f"the node is {self.state_label()}: activate it to teach"
        return ""

    def concepts_changed(self) -> None:
        """After a teach or a forget: the concept outputs again, while they are on."""
        if self.state_label() == "active":
            self.refresh_concepts()

    def refresh_concepts(self) -> None:
        """Per-concept publishers for the concepts there are now; the class map again."""
        self.outputs.refresh_concepts(self.engine)

    def publish_review(self, picture: np.ndarray) -> None:
        """A teach's review picture (RGB) on the latched ~/teach_review."""
        self.outputs.review(picture)

    # ------------------------------------------------------------------ parameters
    def _on_parameters(self, params: list) -> SetParametersResult:
        """Refuse a bad value with the reason; apply a good one now (or at configure)."""
        fields = parameter_fields()
        for p in params:
            reason = refusal(p.name, p.value)
            read = fields[p.name][1].metadata["read"] if p.name in fields else None
            if reason is None and read == CONFIGURE and self.engine is not None:
                reason = (f"{p.name} is read at configure and the node is {self.state_label()}: "
                          "deactivate and clean up the node, set it, then configure")
            if reason:
                return SetParametersResult(successful=False, reason=reason)
        given = {p.name: p.value for p in params}
        words_changed = False
        try:
            if self.engine is not None:
                before = list(self.engine.vocabulary)
                self.engine.update_settings(engine_settings(self, given))
                words_changed = self.engine.vocabulary != before
        except ValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a caller's value must not stop the node
            self.get_logger().error(f"setting parameters: unexpected {exc!r}")
            return SetParametersResult(successful=False, reason=f"internal error: {exc!r}")
        try:
            self._apply_node_settings(node_settings(self, given))
        finally:  # the new words are in use whatever else failed: their map goes out
            if words_changed and self._active:
                after_the_fact(self.get_logger(), "publishing the class map",
                               self.outputs.class_map, self.engine)
        return SetParametersResult(successful=True)

    def _apply_node_settings(self, new: object) -> None:
        old, self.settings = self.settings, new
        if new.diagnostics_period != old.diagnostics_period:
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self._make_diag_timer()
        for camera in self.inputs.values():
            camera.pairing.set_slop(new.sync_slop)
        transport = ("image_transport", "image_qos_reliability", "image_qos_depth", "use_depth")
        if self._active and any(getattr(new, k) != getattr(old, k) for k in transport):
            self._unsubscribe()
            self._drop_pending_frames()  # nothing received under the old subscriptions is segmented
            self._subscribe()

    def _make_diag_timer(self) -> object:
        return self.create_timer(
            self.settings.diagnostics_period, self._publish_diagnostics,
            callback_group=self._services_group,
        )

    def _publish_diagnostics(self) -> None:
        """One /diagnostics message; a report that fails is logged, never stops the node."""
        try:
            self.diag_pub.publish(diagnostics_message(self, self.stats, self.engine, {
                name: camera.stats for name, camera in self.inputs.items() if name}))
        except Exception as exc:  # noqa: BLE001 - diagnostics only describe the node
            self.get_logger().error(f"diagnostics: {exc!r}", throttle_duration_sec=10.0)


def stamp_ns(msg: Image | CompressedImage) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
