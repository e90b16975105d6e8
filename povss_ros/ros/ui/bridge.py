"""The teach UI's ROS side: a plain rclpy node that watches the povss node and calls it.

It subscribes to the camera (the node's `image` input, for the exact pixels of a frozen
frame), the node's overlay, class map, teach review and each concept's mask, and calls
teach_concept, forget_concept, list_concepts and the `vocabulary` parameter, all by name:
nothing is shared with the povss process, so the node may be on another machine, restart,
or be absent. Callbacks run on the node's executor thread and keep plain snapshots under a
lock; the web side reads them and awaits service answers on its own event loop
(`await_future`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np
from rclpy.client import Client
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.task import Future
from sensor_msgs.msg import Image

from povss_interfaces.msg import ClassMap
from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept

from ...cameras import topic_prefix
from ...vocabulary import PERSONAL_ID_BASE
from ..client import ANSWER_DEFAULTS, report_teach
from ..conversions import image_to_rgb
from ..services import OUTCOME_FIELDS
from .forms import TeachForm

LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
JPEG_QUALITY = 80
FROZEN_KEPT = 8  # frozen frames held for teaching (the page names one by its stamp)
OVERLAYS_KEPT = 8  # recent overlays a freeze chooses from (one with its camera frame)
LIST_PERIOD_S = 5.0  # the concept list is asked again this often, and after every change
NODE_SILENT_S = 3.0  # no overlay for this long: the page says frames stopped


class NodeUnavailable(RuntimeError):
    """The povss node's service or parameters cannot be reached now (the page says so)."""


def camera_outputs(target: str, camera: str) -> str:
    """Where the povss node `target` publishes `camera`'s per-frame outputs, as the prefix of
    their names: "povss/" for a node of one unnamed camera, "povss/head/" for camera head."""
    return f"{target}/{topic_prefix(camera)}"


def stamp_ns(msg: Image) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def stamp_key(ns: int) -> str:
    """How the page names a frame: its stamp as 'SEC.NANOSEC' (exact, no float rounding)."""
    return f"{ns // 1_000_000_000}.{ns % 1_000_000_000:09d}"


def jpeg(msg: Image) -> bytes:
    """A camera-encoded image message as JPEG bytes (any encoding the node accepts)."""
    bgr = np.ascontiguousarray(image_to_rgb(msg)[:, :, ::-1])
    ok, data = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()


@dataclass
class Frozen:
    """A frame held for teaching: the camera's message (its exact pixels) and the node's
    overlay of it, paired by stamp."""

    key: str
    camera: Image
    overlay: Image
    picture: bytes = b""  # the overlay as JPEG, made once

    @property
    def size(self) -> tuple[int, int]:
        return int(self.camera.width), int(self.camera.height)


@dataclass
class MaskSeen:
    """The newest mask of one concept: its stamp and how many pixels it marks."""

    stamp: str
    pixels: int
    message: Image | None = None
    received: float = field(default_factory=time.monotonic)


def await_future(future: Future, timeout: float, client: Client | None = None) -> asyncio.Future:
    """An rclpy future (completed on the executor thread) as an awaitable of the running
    event loop; past `timeout` seconds, TimeoutError (and the pending request is dropped)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    def settle(f: Future) -> None:
        def put() -> None:
            if done.done():
                return
            exc = f.exception()
            if exc is not None:
                done.set_exception(exc)
            else:
                done.set_result(f.result())
        loop.call_soon_threadsafe(put)

    future.add_done_callback(settle)

    async def bounded() -> object:
        try:
            return await asyncio.wait_for(done, timeout)
        except TimeoutError:
            if client is not None:
                client.remove_pending_request(future)
            raise
    return bounded()


class TeachUiNode(Node):
    """`povss_teach_ui`: watches the povss node `target` (its name, resolved in this node's
    namespace, as the launch file starts both) and serves the page's calls to it; `camera`:
    which of the node's cameras the page shows and teaches from ("": a node of one camera;
    the launch file passes the node's first)."""

    def __init__(self, name: str = "povss_teach_ui") -> None:
        super().__init__(name)
        self.declare_parameter("host", "127.0.0.1")
        self.declare_parameter("port", 8642)
        self.declare_parameter("token", "")
        self.declare_parameter("target", "povss")
        self.declare_parameter("frames_kept", 30)
        self.declare_parameter("camera", "")
        self.target = self.get_parameter("target").value
        self.camera = self.get_parameter("camera").value
        self.outputs = camera_outputs(self.target, self.camera)
        self.frames_kept = max(1, int(self.get_parameter("frames_kept").value))
        self._lock = threading.Lock()
        self._camera: OrderedDict[int, Image] = OrderedDict()
        self._overlays: OrderedDict[int, Image] = OrderedDict()
        self._live: tuple[int, bytes] | None = None  # newest overlay's stamp and JPEG
        self._last_overlay = 0.0
        self._frozen: OrderedDict[str, Frozen] = OrderedDict()
        self._class_map: ClassMap | None = None
        self._review: Image | None = None
        self.reviews = 0  # how many review pictures arrived (the page reloads on a change)
        self._concepts: list[dict] = []
        self._concepts_at = 0.0
        self._list_dirty = True
        self._list_in_flight = False
        self._masks: dict[str, MaskSeen] = {}
        self._mask_subs: dict[str, object] = {}
        self.teaching = ""  # the name being taught, while a teach is in flight
        target = self.target
        sub = self.create_subscription
        sub(Image, "image", self._on_camera, qos_profile_sensor_data)
        sub(Image, f"{self.outputs}overlay", self._on_overlay, 2)
        sub(ClassMap, f"{target}/class_map", self._on_class_map, LATCHED)
        sub(Image, f"{target}/teach_review", self._on_review, LATCHED)
        self.teach_client = self.create_client(TeachConcept, "teach_concept")
        self.forget_client = self.create_client(ForgetConcept, "forget_concept")
        self.list_client = self.create_client(ListConcepts, "list_concepts")
        self.parameters = AsyncParameterClient(self, target)
        self.create_timer(1.0, self._refresh_concepts)

    # ---------------------------------------------------------------- what arrives
    def _on_camera(self, msg: Image) -> None:
        with self._lock:
            self._camera[stamp_ns(msg)] = msg
            while len(self._camera) > self.frames_kept:
                self._camera.popitem(last=False)

    def _on_overlay(self, msg: Image) -> None:
        with self._lock:
            self._overlays[stamp_ns(msg)] = msg
            while len(self._overlays) > OVERLAYS_KEPT:
                self._overlays.popitem(last=False)
            self._last_overlay = time.monotonic()
            self._live = None  # encoded on demand

    def _on_class_map(self, msg: ClassMap) -> None:
        with self._lock:
            self._class_map = msg
            self._list_dirty = True  # republished when the concepts change

    def _on_review(self, msg: Image) -> None:
        with self._lock:
            self._review = msg
            self.reviews += 1

    def _on_mask(self, concept_id: str, msg: Image) -> None:
        pixels = int(np.count_nonzero(np.frombuffer(bytes(msg.data), np.uint8)))
        with self._lock:
            self._masks[concept_id] = MaskSeen(stamp_key(stamp_ns(msg)), pixels, msg)

    # ---------------------------------------------------------------- the concept list
    def _refresh_concepts(self) -> None:
        """Timer: ask list_concepts again after a change, or every LIST_PERIOD_S."""
        with self._lock:
            due = self._list_dirty or time.monotonic() - self._concepts_at > LIST_PERIOD_S
            if not due or self._list_in_flight:
                return
        if not self.list_client.service_is_ready():
            return
        with self._lock:
            self._list_in_flight, self._list_dirty = True, False
        future = self.list_client.call_async(ListConcepts.Request())
        future.add_done_callback(self._on_listing)

    def _on_listing(self, future: Future) -> None:
        response = future.result() if future.exception() is None else None
        with self._lock:
            self._list_in_flight = False
            if response is None:
                self._list_dirty = True
                return
            self._concepts = [
                {"concept_id": cid, "name": name, "base_class": base, "class_id": int(cls),
                 "shots": int(shots)}
                for cid, name, base, cls, shots in zip(
                    response.concept_ids, response.names, response.base_classes,
                    response.class_ids, response.shot_counts, strict=False)]
            self._concepts_at = time.monotonic()
            wanted = {c["concept_id"] for c in self._concepts}
        for cid in wanted - set(self._mask_subs):  # one mask subscription per concept
            self._mask_subs[cid] = self.create_subscription(
                Image, f"{self.outputs}concepts/{cid}/mask",
                lambda msg, cid=cid: self._on_mask(cid, msg), 2)
        for cid in set(self._mask_subs) - wanted:
            self.destroy_subscription(self._mask_subs.pop(cid))
            with self._lock:
                self._masks.pop(cid, None)

    def concepts_changed(self) -> None:
        with self._lock:
            self._list_dirty = True

    # ---------------------------------------------------------------- what the page reads
    def connected(self) -> bool:
        """Whether the povss node's services are there now."""
        return self.teach_client.service_is_ready() and self.list_client.service_is_ready()

    def vocabulary(self) -> list[str]:
        """The node's words, from its latched class map (empty before one arrived)."""
        with self._lock:
            cm = self._class_map
        if cm is None:
            return []
        return [n for i, n, p in zip(cm.ids, cm.names, cm.personal, strict=False)
                if not p and i < PERSONAL_ID_BASE]

    def state(self) -> dict:
        """Everything the page shows besides pictures, as JSON-ready values."""
        now = time.monotonic()
        with self._lock:
            overlay_age = now - self._last_overlay if self._last_overlay else None
            concepts = [dict(c) for c in self._concepts]
            for c in concepts:
                seen = self._masks.get(c["concept_id"])
                c["mask"] = None if seen is None else {"stamp": seen.stamp,
                                                       "pixels": seen.pixels}
            frozen = [{"frame": f.key, "width": f.size[0], "height": f.size[1]}
                      for f in self._frozen.values()]
            reviews = self.reviews
        connected = self.connected()
        return {
            "connected": connected,
            "frames": overlay_age is not None and overlay_age < NODE_SILENT_S,
            "overlay_age_s": None if overlay_age is None else round(overlay_age, 1),
            "vocabulary": self.vocabulary(),
            "concepts": concepts if connected else [],
            "frozen": frozen,
            "reviews": reviews,
            "teaching": self.teaching,
            "target": self.resolve_target(),
        }

    def resolve_target(self) -> str:
        ns = self.get_namespace().rstrip("/")
        return self.target if self.target.startswith("/") else f"{ns}/{self.target}"

    def live_picture(self) -> bytes | None:
        """The newest overlay as JPEG (encoded once per frame), None before any."""
        with self._lock:
            if self._live is None and self._overlays:
                ns = next(reversed(self._overlays))
                self._live = (ns, jpeg(self._overlays[ns]))
            return None if self._live is None else self._live[1]

    def review_picture(self) -> bytes | None:
        with self._lock:
            msg = self._review
        return None if msg is None else jpeg(msg)

    def mask_picture(self, concept_id: str) -> bytes | None:
        with self._lock:
            seen = self._masks.get(concept_id)
        return None if seen is None or seen.message is None else jpeg(seen.message)

    def freeze(self) -> Frozen | None:
        """Hold the newest overlay whose camera frame is here too (the exact pixels the node
        segmented); None when no such pair has arrived."""
        with self._lock:
            for ns in reversed(self._overlays):
                if ns in self._camera:
                    key = stamp_key(ns)
                    frozen = self._frozen.pop(key, None) or Frozen(
                        key, self._camera[ns], self._overlays[ns])
                    self._frozen[key] = frozen
                    while len(self._frozen) > FROZEN_KEPT:
                        self._frozen.popitem(last=False)
                    break
            else:
                return None
        if not frozen.picture:
            frozen.picture = jpeg(frozen.overlay)
        return frozen

    def frozen(self, key: str) -> Frozen | None:
        with self._lock:
            return self._frozen.get(key)

    def frozen_sizes(self) -> dict[str, tuple[int, int]]:
        with self._lock:
            return {k: f.size for k, f in self._frozen.items()}

    # ---------------------------------------------------------------- calls to the node
    def _ready(self, client: Client, what: str) -> None:
        if not client.service_is_ready():
            raise NodeUnavailable(
                f"the povss node's {what} service is not there ({self.resolve_target()}): "
                "is the node running, in this namespace and ROS_DOMAIN_ID?")

    async def teach(self, form: TeachForm) -> dict:
        """Teach (or correct) from one frozen frame: the camera's own message goes as the
        shot, so the node learns from exactly the pixels the person marked."""
        frozen = self.frozen(form.frame)
        if frozen is None:
            raise NodeUnavailable("that frozen frame is no longer held: freeze again")
        self._ready(self.teach_client, "teach_concept")
        request = TeachConcept.Request(name=form.name, base_class=form.base_class,
                                       overwrite=form.overwrite, correct=form.correct,
                                       category=form.category, camera=self.camera)
        request.images = [frozen.camera]
        values = [float(v) for v in form.mark.values]
        field_name = ("negative_" if form.negative else "") + (
            "boxes" if form.mark.kind == "box" else "points")
        setattr(request, field_name, values)
        self.teaching = form.name
        try:
            response = await await_future(self.teach_client.call_async(request),
                                          ANSWER_DEFAULTS["teach"], self.teach_client)
        finally:
            self.teaching = ""
            self.concepts_changed()
        answer = {name: _plain(getattr(response, name)) for name in OUTCOME_FIELDS}
        answer["summary"], _ = report_teach(form.name, response)
        return answer

    async def forget(self, name: str) -> dict:
        self._ready(self.forget_client, "forget_concept")
        response = await await_future(
            self.forget_client.call_async(ForgetConcept.Request(name=name)),
            ANSWER_DEFAULTS["forget"], self.forget_client)
        self.concepts_changed()
        return {"success": bool(response.success), "message": response.message}

    async def set_vocabulary(self, words: list[str]) -> dict:
        """Set the node's `vocabulary` parameter; the node answers with the reason when it
        refuses."""
        if not self.parameters.services_are_ready():
            raise NodeUnavailable(f"the parameters of {self.resolve_target()} are not there: "
                                  "is the node running?")
        future = self.parameters.set_parameters([Parameter("vocabulary", value=words)])
        response = await await_future(future, ANSWER_DEFAULTS["list"])
        result = response.results[0]
        self.concepts_changed()
        return {"success": bool(result.successful),
                "message": "vocabulary set" if result.successful else result.reason}


def _plain(value: object) -> object:
    """A response field as JSON: NaN (an unmeasured fit) becomes null, arrays lists."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return [_plain(v) for v in value]
    return value
