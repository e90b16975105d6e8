"""What the node's povss_interfaces messages say, as plain fields: no ROS needed.

One description of an object and of the class map, from which both message libraries build
their messages: the node's rclpy ones (`outputs`) and the recorded ones of `povss bag`
(`bag`, with rosbags), so a recording says exactly what the live node publishes. Nested
messages are dicts; a field left out keeps its message default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..objects import DetectedObject
    from ..perception import ClassEntry


def _xyz(p: tuple[float, float, float]) -> dict:
    return {"x": float(p[0]), "y": float(p[1]), "z": float(p[2])}


def object_fields(obj: DetectedObject) -> dict:
    """A povss_interfaces/Object: class, concept, presence, score, 2D box and, when the
    object has 3D, its centroid, box and point count."""
    x0, y0, x1, y1 = obj.box
    fields = {"class_id": int(obj.class_id), "name": obj.name, "concept_id": obj.concept_id,
              "present": bool(obj.present), "score": float(obj.score), "area": int(obj.area),
              "box": {"x_offset": int(x0), "y_offset": int(y0), "width": int(x1 - x0),
                      "height": int(y1 - y0)}}
    geo = obj.geometry
    if geo is not None:
        fields.update(has_3d=True, centroid=_xyz(geo.centroid), box_min=_xyz(geo.box_min),
                      box_max=_xyz(geo.box_max), points=len(geo.points))
    return fields


def class_map_fields(entries: list[ClassEntry]) -> dict:
    """A povss_interfaces/ClassMap's parallel arrays (its header aside) for the engine's class
    table: ids, names, personal flags, concept ids and base classes."""
    return {"ids": [int(e.class_id) for e in entries], "names": [e.name for e in entries],
            "personal": [bool(e.personal) for e in entries],
            "concept_ids": [e.concept_id for e in entries],
            "base_classes": [e.base_class for e in entries]}
