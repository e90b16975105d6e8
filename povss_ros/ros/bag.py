"""`povss bag`: the perception engine over a rosbag2 recording, without a ROS install.

A robot records its camera as rosbag2 (MCAP by default, or sqlite3); this reads one with
rosbags (pure Python), runs the node's engine on every frame of one image topic, in order,
none dropped (the live node drops frames it cannot keep up with), and writes a new
recording of what the node would have published: ~/labels, ~/objects, ~/class_map
(latched) and ~/concepts/<id>/mask (and ~/overlay if asked), under the node's name, each
stamped with its frame's header and recorded at its frame's time, with the node's QoS. The
messages are built from the same fields as the node's (`fields`, `conversions.image_fields`)
and carry their definitions, so `ros2 bag play`, RViz and Foxglove read them.

Frames are decoded by the node's own conversions. A message that does not deserialize or
decode, or that SAN cannot segment, is skipped and counted, as the node refuses a frame; a
topic whose first frame has an encoding the node cannot read is refused before anything
runs. The output appears only when complete (`io.atomic_folder`: written under a temporary
name beside its place, renamed at the end).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Nodetype,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore

from ..io import atomic_folder
from ..perception import FrameResult, PerceptionEngine
from ..segmenter import SegmenterError
from .conversions import UnsupportedEncoding, compressed_to_rgb, image_fields, image_to_rgb
from .fields import class_map_fields, object_fields

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
DECODERS: dict[str, Callable] = {IMAGE: image_to_rgb, COMPRESSED: compressed_to_rgb}
STORAGES = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
INTERFACES = ("ClassMap", "Object", "ObjectArray")
# Metadata version 9: what Jazzy's and Kilted's rosbag2 write.
BAG_VERSION = 9
# The standard messages are the same in Jazzy and Kilted; the recording names no distribution.
BASE_TYPES = Stores.ROS2_JAZZY
# The file every rosbag2 recording folder holds: what marks a folder --overwrite may replace.
METADATA = "metadata.yaml"
# Messages tried at the start of a topic to learn its encoding before the model loads.
PEEK = 10

_INFINITE = QosTime(9223372036, 854775807)  # rmw's "infinite", as rosbag2 records it
_NUMPY = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "int8": np.int8,
          "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16, "int32": np.int32,
          "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
          "float32": np.float32, "float64": np.float64}


class BagError(RuntimeError):
    """The recording cannot be read or written as asked; the message says why."""


@dataclass
class BagInput:
    """The image topic of a recording that `povss bag` segments."""

    path: Path
    topic: str
    msgtype: str
    count: int  # messages on the topic, as the recording's index says


@dataclass
class BagReport:
    """What a run did: frames segmented and written, messages skipped (index on the topic,
    from 0, and why), and the topics written."""

    out: Path
    frames: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    topics: list[str] = field(default_factory=list)


def _qos(depth: int, latched: bool = False) -> Qos:
    """Reliable keep-last QoS of `depth` (transient local when `latched`), as the node offers."""
    durability = QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE, durability, _INFINITE,
               _INFINITE, QosLiveliness.AUTOMATIC, _INFINITE, False)


def interface_folder() -> Path:
    """The folder of povss_interfaces' .msg files: the checkout's, a sibling package's, or an
    install's share/povss_interfaces/msg (a sourced workspace, the venv `make` builds into)."""
    root = Path(__file__).resolve().parents[2]
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    candidates = [root / "povss_interfaces" / "msg", root.parent / "povss_interfaces" / "msg",
                  *(Path(p) / "share" / "povss_interfaces" / "msg" for p in prefixes),
                  Path(sys.prefix) / "share" / "povss_interfaces" / "msg"]
    for folder in candidates:
        if all((folder / f"{name}.msg").is_file() for name in INTERFACES):
            return folder
    raise BagError("the povss_interfaces message definitions (ClassMap.msg, Object.msg, "
                   "ObjectArray.msg) are in none of " + ", ".join(map(str, candidates)) +
                   ": run from a checkout, or source the workspace that built povss_interfaces")


def output_typestore() -> Typestore:
    """The standard ROS 2 messages, with povss_interfaces' registered from their .msg files."""
    store = get_typestore(BASE_TYPES)
    folder = interface_folder()
    for name in INTERFACES:
        store.register(get_types_from_msg((folder / f"{name}.msg").read_text(),
                                          f"povss_interfaces/msg/{name}"))
    return store


def build(store: Typestore, typename: str, values: dict | None = None) -> object:
    """A rosbags message of `typename` from plain `values` (dicts for nested messages, lists
    or bytes for arrays, or messages already built); a field left out takes its ROS default
    (0, "", false, empty, a default message)."""
    values = values or {}
    _, fields = store.fielddefs[typename]
    return store.types[typename](**{name: _value(store, kind, spec, values.get(name))
                                    for name, (kind, spec) in fields})


def _value(store: Typestore, kind: int, spec: object, given: object) -> object:
    if kind == Nodetype.BASE:
        if given is not None:
            return given
        typ = spec[0]
        return "" if typ == "string" else False if typ == "bool" else (
            0.0 if typ.startswith("float") else 0)
    if kind == Nodetype.NAME:
        return build(store, spec, given) if given is None or isinstance(given, dict) else given
    (item_kind, item_spec), length = spec
    if item_kind == Nodetype.BASE and item_spec[0] in _NUMPY:
        dtype = _NUMPY[item_spec[0]]
        if isinstance(given, (bytes, bytearray, memoryview)):
            return np.frombuffer(given, dtype)
        if given is None and kind == Nodetype.ARRAY:
            return np.zeros(length, dtype)
        return np.asarray([] if given is None else given, dtype)
    items = [None] * length if given is None and kind == Nodetype.ARRAY else (given or [])
    return [_value(store, item_kind, item_spec, v) for v in items]


def _header(store: Typestore, header: object) -> object:
    """The input frame's header, as a message of the output typestore."""
    return build(store, "std_msgs/msg/Header", {
        "stamp": {"sec": int(header.stamp.sec), "nanosec": int(header.stamp.nanosec)},
        "frame_id": str(header.frame_id)})


@contextmanager
def _reader(path: Path) -> Iterator[AnyReader]:
    """An open AnyReader of the recording at `path`, with clear errors for what is not one."""
    if not path.exists():
        raise BagError(f"recording {path}: no such file or folder")
    try:
        reader = AnyReader([path], default_typestore=get_typestore(BASE_TYPES))
        reader.open()
    except (AnyReaderError, OSError, ValueError, KeyError) as exc:
        raise BagError(f"{path} is not a readable rosbag2 recording (a folder with "
                       f"metadata.yaml, or an .mcap file): {exc}") from None
    try:
        yield reader
    finally:
        reader.close()


def _pick_topic(reader: AnyReader, path: Path, topic: str | None) -> tuple[str, str, int]:
    """(topic, message type, message count) of the image topic to segment."""
    images = {name: info for name, info in reader.topics.items() if info.msgtype in DECODERS}
    kinds = "sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage"
    if topic is None:
        if not images:
            found = ", ".join(f"{n} ({i.msgtype})" for n, i in sorted(reader.topics.items()))
            raise BagError(f"{path} has no {kinds} topic to segment; its topics: "
                           f"{found or 'none'}")
        if len(images) > 1:
            raise BagError(f"{path} has several image topics: name one with --image-topic "
                           f"({', '.join(sorted(images))})")
        topic = next(iter(images))
    elif topic not in images:
        info = reader.topics.get(topic)
        why = f"is a {info.msgtype} topic, not {kinds}" if info else "has no such topic"
        raise BagError(f"{path}: {topic} {why}; image topics: "
                       f"{', '.join(sorted(images)) or 'none'}")
    return topic, images[topic].msgtype, images[topic].msgcount


def _encoding_problem(reader: AnyReader, topic: str, msgtype: str) -> str | None:
    """Why the node cannot read the topic's frames: the first frame that deserializes (of the
    first `PEEK`) has an encoding the node does not convert (depth, float, compressed depth)."""
    connections = [c for c in reader.connections if c.topic == topic]
    for i, (_, _, raw) in enumerate(reader.messages(connections=connections)):
        if i >= PEEK:
            return None
        try:
            msg = reader.deserialize(raw, msgtype)
            DECODERS[msgtype](msg)
        except UnsupportedEncoding as exc:
            return str(exc)
        except Exception:  # noqa: BLE001 - a corrupt frame says nothing of the topic
            continue
        return None
    return None


def open_input(path: str | os.PathLike, topic: str | None = None) -> BagInput:
    """Check a recording before the model loads: it exists, it is rosbag2, it has the image
    topic (the only one when `topic` is None) and the node reads its encoding."""
    path = Path(path).expanduser()
    with _reader(path) as reader:
        topic, msgtype, count = _pick_topic(reader, path, topic)
        problem = _encoding_problem(reader, topic, msgtype)
    if problem:
        raise BagError(f"{path}: {topic}: {problem}")
    return BagInput(path, topic, msgtype, count)


def default_output(recording: str | os.PathLike) -> Path:
    """Where `povss bag` writes by default: beside the recording, named after it + _povss."""
    path = Path(recording).expanduser()
    return path.with_name(f"{path.stem if path.suffix == '.mcap' else path.name}_povss")


def output_problem(out: Path, overwrite: bool,
                   recording: str | os.PathLike | None = None) -> str | None:
    """Why `out` cannot receive the new recording (None if it can). It may not be the input
    `recording`, hold it or lie inside it (the input would be replaced or changed), and an
    existing `out` is replaced, with `overwrite`, only when it is a rosbag2 recording (a
    folder holding metadata.yaml, as a previous output): `--overwrite` never deletes some
    other folder, such as the one the recording is in."""
    out = Path(out).expanduser()
    if recording is not None:
        mine, theirs = out.resolve(), Path(recording).expanduser().resolve()
        if mine == theirs:
            return f"--out {out} is the input recording: choose another --out"
        if mine in theirs.parents:
            return (f"--out {out} holds the input recording {recording}: choose another --out "
                    "(the default is a folder beside the recording)")
        if theirs in mine.parents:
            return f"--out {out} is inside the input recording {recording}: choose another --out"
    if not os.path.lexists(out):
        return None
    if not overwrite:
        return f"{out} exists: choose another --out, or pass --overwrite"
    if not out.is_dir():
        return f"{out} is a file, not a recording: remove it or choose another --out"
    if not (out / METADATA).is_file():
        return (f"{out} is a folder but not a rosbag2 recording (no {METADATA}): --overwrite "
                "replaces only a previous output; remove it yourself or choose another --out")
    return None


class _Recorder:
    """The node's outputs (`outputs.Outputs`) as connections of a rosbags Writer."""

    def __init__(self, writer: Writer, store: Typestore, node: str,
                 engine: PerceptionEngine, overlay: bool) -> None:
        self.writer, self.store, self.node = writer, store, "/" + node.strip("/")
        self.conns: dict[str, object] = {}
        self._add("labels", IMAGE)
        self._add("objects", "povss_interfaces/msg/ObjectArray")
        self._add("class_map", "povss_interfaces/msg/ClassMap", latched=True)
        if overlay:
            self._add("overlay", IMAGE)
        for entry in engine.concept_entries():
            self._add(f"concepts/{entry.concept_id}/mask", IMAGE)

    def _add(self, name: str, msgtype: str, latched: bool = False) -> None:
        self.conns[name] = self.writer.add_connection(
            f"{self.node}/{name}", msgtype, typestore=self.store,
            offered_qos_profiles=[_qos(1, latched=True) if latched else _qos(2)])

    def topics(self) -> list[str]:
        return [f"{self.node}/{name}" for name in self.conns]

    def _write(self, name: str, msgtype: str, values: dict, time_ns: int) -> None:
        msg = build(self.store, msgtype, values)
        self.writer.write(self.conns[name], time_ns, self.store.serialize_cdr(msg, msgtype))

    def class_map(self, engine: PerceptionEngine, time_ns: int) -> None:
        """~/class_map once, at the start: the vocabulary and concepts do not change."""
        stamp = {"sec": time_ns // 1_000_000_000, "nanosec": time_ns % 1_000_000_000}
        self._write("class_map", "povss_interfaces/msg/ClassMap",
                    {"header": {"stamp": stamp}, **class_map_fields(engine.class_table())},
                    time_ns)

    def frame(self, header: object, rgb: np.ndarray, frame: FrameResult,
              engine: PerceptionEngine, time_ns: int) -> None:
        """One frame's messages, with its header, at its recording time."""
        head = _header(self.store, header)
        self._write("labels", IMAGE, {"header": head, **image_fields(frame.labels, "mono16")},
                    time_ns)
        for concept_id, mask in frame.concept_masks.items():
            name = f"concepts/{concept_id}/mask"
            if name in self.conns:
                self._write(name, IMAGE, {"header": head, **image_fields(mask, "mono8")},
                            time_ns)
        self._write("objects", "povss_interfaces/msg/ObjectArray",
                    {"header": head, "objects": [object_fields(o) for o in frame.objects]},
                    time_ns)
        if "overlay" in self.conns:
            picture = engine.overlay(rgb, frame)[:, :, ::-1]
            self._write("overlay", IMAGE, {"header": head, **image_fields(picture, "bgr8")},
                        time_ns)


Progress = Callable[[int, int, str], None]


def segment_bag(engine: PerceptionEngine, source: BagInput, out: str | os.PathLike, *,
                storage: str = "mcap", node: str = "/povss", overlay: bool = False,
                overwrite: bool = False, progress: Progress | None = None) -> BagReport:
    """Run `engine` over every frame of `source` (`open_input`) in recording order and write
    the node's outputs (topics under `node`) to a new recording at `out`, in `storage` (mcap
    or sqlite3); `progress(done, total, note)` after each message. Messages that do not
    deserialize, decode or segment are skipped and listed in the report."""
    out = Path(out).expanduser()
    if storage not in STORAGES:
        raise BagError(f"storage {storage!r}: choose one of {', '.join(STORAGES)}")
    problem = output_problem(out, overwrite, source.path)
    if problem:
        raise BagError(problem)
    store = output_typestore()
    decode = DECODERS[source.msgtype]
    report = BagReport(out)
    with _reader(source.path) as reader, atomic_folder(out, overwrite, METADATA) as target:
        connections = [c for c in reader.connections if c.topic == source.topic]
        writer = Writer(target, version=BAG_VERSION, storage_plugin=STORAGES[storage])
        writer.open()
        try:
            recorder = _Recorder(writer, store, node, engine, overlay)
            recorder.class_map(engine, reader.start_time)
            for index, (_, time_ns, raw) in enumerate(reader.messages(connections=connections)):
                problem = _segment_one(reader, source.msgtype, decode, raw, engine, recorder,
                                       time_ns)
                if problem:
                    report.skipped.append((index, problem))
                else:
                    report.frames += 1
                if progress is not None:
                    progress(index + 1, source.count, f"{len(report.skipped)} skipped")
            writer.close()
        except BaseException:
            writer.abort()
            raise
        report.topics = recorder.topics()
    return report


def _segment_one(reader: AnyReader, msgtype: str, decode: Callable, raw: bytes,
                 engine: PerceptionEngine, recorder: _Recorder, time_ns: int) -> str | None:
    """Segment and record one message; why it was skipped, or None. A frame the segmenter
    refuses (SegmenterError: one SAN cannot segment, `Segmenter.frame_problem`, or one that
    ran the GPU out of memory) is skipped alone, as the node refuses a frame: one bad frame
    never ends a run over thousands."""
    try:
        msg = reader.deserialize(raw, msgtype)
    except Exception as exc:  # noqa: BLE001 - corrupt bytes raise more than SerdeError
        return f"the message does not deserialize as {msgtype}: {exc or type(exc).__name__}"
    try:
        rgb = decode(msg)
    except Exception as exc:  # noqa: BLE001 - as the node's frame boundary (cv2.error too)
        return f"frame refused: {str(exc) or repr(exc)}"
    try:
        frame = engine.segment(rgb)
    except SegmenterError as exc:
        return f"frame refused: {str(exc) or repr(exc)}"
    recorder.frame(msg.header, rgb, frame, engine, time_ns)
    return None
