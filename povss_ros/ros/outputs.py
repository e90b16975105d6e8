"""What the node publishes: per frame (labels, camera info, objects, markers, overlay, per
concept mask and points; once per camera) and per change (class map, teach review; once per
node), as lifecycle publishers.

Every frame message carries the colour frame's header, so its frame_id is the camera's
optical frame the 3D fields are expressed in. Costly outputs (overlay, markers, point clouds)
are built only while someone subscribes.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence

import numpy as np
from geometry_msgs.msg import Point
from rclpy.lifecycle import LifecycleNode
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField, RegionOfInterest
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from povss_interfaces.msg import ClassMap, Object, ObjectArray

from ..cameras import UNNAMED, topic_prefix
from ..objects import DetectedObject
from ..perception import FrameResult, PerceptionEngine
from ..vis import HIGHLIGHT, class_colors
from .conversions import array_to_image, camera_info_at
from .fields import class_map_fields, object_fields

LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
# Per-concept topics: ~/concepts/<concept id>/<kind>.
CONCEPT_TOPICS = (("mask", Image), ("points", PointCloud2))

# Markers outlive a frame a little, so RViz does not blink between frames; a newer frame's
# DELETEALL clears them first anyway.
MARKER_LIFETIME_S = 1.0


def _point(xyz: tuple[float, float, float]) -> Point:
    return Point(x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def object_message(obj: DetectedObject) -> Object:
    """One `DetectedObject` as a povss_interfaces/Object (`fields.object_fields`)."""
    fields = object_fields(obj)
    nested = {k: Point(**fields[k]) for k in ("centroid", "box_min", "box_max") if k in fields}
    return Object(**{**fields, **nested, "box": RegionOfInterest(**fields["box"])})


def object_array(objects: list[DetectedObject], header) -> ObjectArray:  # noqa: ANN001
    return ObjectArray(header=header, objects=[object_message(o) for o in objects])


def marker_array(objects: list[DetectedObject], header) -> MarkerArray:  # noqa: ANN001
    """A DELETEALL, then per present object with 3D: its box (translucent) and its name."""
    clear = Marker(header=header, action=Marker.DELETEALL)
    markers = [clear]
    for i, obj in enumerate(o for o in objects if o.present and o.geometry is not None):
        geo = obj.geometry
        lo, hi = np.array(geo.box_min), np.array(geo.box_max)
        r, g, b = (float(c) / 255.0 for c in _colour(obj))
        box = Marker(header=header, ns="boxes", id=i, type=Marker.CUBE, action=Marker.ADD)
        box.pose.position = _point(tuple((lo + hi) / 2))
        box.pose.orientation.w = 1.0
        box.scale.x, box.scale.y, box.scale.z = (float(v) for v in np.maximum(hi - lo, 0.005))
        box.color = ColorRGBA(r=r, g=g, b=b, a=0.4)
        label = Marker(header=header, ns="names", id=i, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, text=obj.name)
        label.pose.position = _point((geo.centroid[0], float(lo[1]) - 0.03, geo.centroid[2]))
        label.pose.orientation.w = 1.0
        label.scale.z = 0.04
        label.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
        for m in (box, label):
            m.lifetime.sec, m.lifetime.nanosec = int(MARKER_LIFETIME_S), 0
        markers += [box, label]
    return MarkerArray(markers=markers)


def _colour(obj: DetectedObject) -> tuple[int, int, int]:
    """The overlay's colour of the object's class (a concept: the highlight colour)."""
    if obj.concept_id:
        return HIGHLIGHT
    return tuple(int(c) for c in class_colors(obj.class_id + 1)[obj.class_id])


def point_cloud(points: np.ndarray, header) -> PointCloud2:  # noqa: ANN001
    """An unorganised xyz float32 cloud (an empty one says: not in view)."""
    pts = np.ascontiguousarray(points, np.float32).reshape(-1, 3)
    fields = [PointField(name=n, offset=4 * i, datatype=PointField.FLOAT32, count=1)
              for i, n in enumerate("xyz")]
    return PointCloud2(header=header, height=1, width=len(pts), fields=fields,
                       is_bigendian=False, point_step=12, row_step=12 * len(pts),
                       data=pts.tobytes(), is_dense=True)


class Outputs:
    """The node's publishers, created at configure and destroyed at cleanup/shutdown: the
    per-frame ones once per camera, under ~/<camera>/ (the unnamed camera: directly under ~/),
    the per-change ones (class map, teach review) once per node."""

    def __init__(self, node: LifecycleNode) -> None:
        self.node = node
        self.pubs: dict[str, object] = {}  # per change: class_map, teach_review
        self.frame_pubs: dict[str, dict[str, object]] = {}  # camera -> name -> pub
        self.concept_pubs: dict[tuple[str, str, str], object] = {}  # (camera, kind, id) -> pub
        self._lock = threading.Lock()

    def create(self, cameras: Sequence[str] = (UNNAMED,)) -> None:
        for name, msg_type in (("class_map", ClassMap), ("teach_review", Image)):
            self.pubs[name] = self.node.create_lifecycle_publisher(msg_type, f"~/{name}", LATCHED)
        for camera in cameras:
            self.frame_pubs[camera] = {
                name: self.node.create_lifecycle_publisher(
                    msg_type, f"~/{topic_prefix(camera)}{name}", 2)
                for name, msg_type in (("labels", Image), ("overlay", Image),
                                       ("camera_info", CameraInfo), ("objects", ObjectArray),
                                       ("markers", MarkerArray))}

    def destroy(self) -> None:
        with self._lock:
            frame_pubs = [p for pubs in self.frame_pubs.values() for p in pubs.values()]
            for pub in [*self.pubs.values(), *frame_pubs, *self.concept_pubs.values()]:
                self.node.destroy_lifecycle_publisher(pub)
            self.pubs, self.frame_pubs, self.concept_pubs = {}, {}, {}

    def frame(self, header, rgb: np.ndarray, frame: FrameResult,  # noqa: ANN001
              camera_info: CameraInfo | None, engine: PerceptionEngine,
              camera: str = UNNAMED) -> None:
        """Everything about one frame of `camera`, stamped with its header."""
        pubs = self.frame_pubs[camera]
        pubs["labels"].publish(array_to_image(frame.labels, "mono16", header))
        if camera_info is not None:  # for the labels' size, with their header
            info = copy.copy(camera_info_at(camera_info, *frame.labels.shape[::-1]))
            info.header = header
            pubs["camera_info"].publish(info)
        with self._lock:  # concept publishers come and go with teach and forget
            self._concept_outputs(header, frame, camera)
        pubs["objects"].publish(object_array(frame.objects, header))
        if _wanted(pubs["markers"]):
            pubs["markers"].publish(marker_array(frame.objects, header))
        if _wanted(pubs["overlay"]):
            picture = engine.overlay(rgb, frame)
            pubs["overlay"].publish(array_to_image(picture[:, :, ::-1], "bgr8", header))

    def _concept_outputs(self, header, frame: FrameResult, camera: str) -> None:  # noqa: ANN001
        """Each concept's mask, and its points while someone subscribes."""
        for concept_id, mask in frame.concept_masks.items():
            pub = self.concept_pubs.get((camera, "mask", concept_id))
            if pub is not None:
                pub.publish(array_to_image(mask, "mono8", header))
        for obj in frame.objects:
            pub = self.concept_pubs.get((camera, "points", obj.concept_id))
            if pub is not None and _wanted(pub):
                seen = obj.present and obj.geometry is not None
                pub.publish(point_cloud(obj.geometry.points if seen else np.zeros((0, 3)),
                                        header))

    def refresh_concepts(self, engine: PerceptionEngine) -> None:
        """Per-concept publishers for the concepts there are now, and the class map."""
        with self._lock:
            self._refresh_concept_publishers(engine)
        self.class_map(engine)

    def _refresh_concept_publishers(self, engine: PerceptionEngine) -> None:
        live = {e.concept_id for e in engine.concept_entries()}
        active = self.pubs["class_map"].is_activated
        for key in [k for k in self.concept_pubs if k[2] not in live]:
            self.node.destroy_lifecycle_publisher(self.concept_pubs.pop(key))
        for camera in self.frame_pubs:
            for kind, msg_type in CONCEPT_TOPICS:
                for concept_id in sorted(live):
                    if (camera, kind, concept_id) in self.concept_pubs:
                        continue
                    pub = self.node.create_lifecycle_publisher(
                        msg_type, f"~/{topic_prefix(camera)}concepts/{concept_id}/{kind}", 2)
                    if active:
                        pub.on_activate(None)
                    self.concept_pubs[(camera, kind, concept_id)] = pub

    def class_map(self, engine: PerceptionEngine) -> None:
        msg = ClassMap(**class_map_fields(engine.class_table()))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.pubs["class_map"].publish(msg)

    def review(self, picture: np.ndarray) -> None:
        """A teach's review picture (RGB) on the latched ~/teach_review."""
        pub = self.pubs.get("teach_review")
        if pub is not None:
            pub.publish(array_to_image(picture[:, :, ::-1], "bgr8"))


def _wanted(pub) -> bool:  # noqa: ANN001
    return pub.get_subscription_count() > 0
