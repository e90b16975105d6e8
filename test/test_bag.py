"""`povss bag` as a user runs it, on real files and the synthetic-world model: a recording of
synthetic frames (MCAP with raw images, sqlite3 with PNG-compressed ones, each with a camera
info topic beside and two corrupt messages among the frames) is segmented by the CLI in a
process where ROS cannot be imported; the new recording is read back and says, frame by
frame, what the engine says run directly on the same frames (labels, objects, my mug's
mask, the class map), with the input's stamps; the corrupt messages are skipped and counted,
and no other frame is lost. The MCAP output is read by Foxglove's own MCAP/ROS 2 decoder and
its bytes by rclpy, with the type hashes ROS computes. Bad input gets a clear error before
the model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rosbags.highlevel import AnyReader
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from povss_lab.synthetic.world import World, sample_scene
from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter, TeachRequest
from povss_ros.cli import main as povss_main
from povss_ros.io import atomic_folder, encode_png
from povss_ros.personal.teach import TeachConfig
from povss_ros.ros.bag import default_output
from povss_ros.ros.conversions import image_to_array

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "models" / "syn_small.safetensors"
MODEL = ["--weights", str(SMALL), "--device", "cpu", "--precision", "fp32"]
TOPIC = "/camera/color/image_raw"
FRAMES = 4  # good frames in each recording
BAD_AT = (1, 3)  # messages 1 and 3 of the topic are corrupt: 6 messages in all
NO_ROS = ("rclpy", "sensor_msgs", "std_msgs", "builtin_interfaces", "povss_interfaces")
TYPES = get_typestore(Stores.ROS2_JAZZY)
Image = TYPES.types["sensor_msgs/msg/Image"]
Compressed = TYPES.types["sensor_msgs/msg/CompressedImage"]
Header = TYPES.types["std_msgs/msg/Header"]
Time = TYPES.types["builtin_interfaces/msg/Time"]
pytestmark = pytest.mark.skipif(not SMALL.exists(), reason="needs models/syn_small.safetensors")


def _header(i: int) -> object:
    return Header(stamp=Time(sec=100 + i, nanosec=1000 * i), frame_id="camera_optical")


def _raw(rgb: np.ndarray, i: int, encoding: str = "rgb8") -> object:
    return Image(header=_header(i), height=rgb.shape[0], width=rgb.shape[1], encoding=encoding,
                 is_bigendian=0, step=rgb.shape[1] * 3, data=rgb.reshape(-1).copy())


def _png(rgb: np.ndarray, i: int) -> object:
    return Compressed(header=_header(i), format="rgb8; png compressed bgr8",
                      data=np.frombuffer(encode_png(rgb), np.uint8))


def write_recording(path: Path, storage: str, frames: list[np.ndarray],
                    encoding: str = "rgb8") -> list[int]:
    """A rosbag2 recording of `frames` on TOPIC (raw for MCAP, PNG for sqlite3) with a camera
    info topic beside, and corrupt messages at BAD_AT: bytes cut in half, and a frame whose
    data is shorter than its size says. The recording times of the good frames."""
    plugin = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[storage]
    kind = Image if storage == "mcap" else Compressed
    times, good = [], iter(frames)
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conn = writer.add_connection(TOPIC, kind.__msgtype__, typestore=TYPES)
        info = writer.add_connection("/camera/color/camera_info", "sensor_msgs/msg/CameraInfo",
                                     typestore=TYPES)
        for i in range(FRAMES + len(BAD_AT)):
            t = 1_000_000_000 * (100 + i) + 5
            rgb = frames[0] if i in BAD_AT else next(good)
            msg = _raw(rgb, i, encoding) if kind is Image else _png(rgb, i)
            raw = bytes(TYPES.serialize_cdr(msg, kind.__msgtype__))
            if i == BAD_AT[0]:
                raw = raw[: len(raw) // 2]
            elif i == BAD_AT[1]:
                msg.data = msg.data[: len(msg.data) // 3]
                raw = bytes(TYPES.serialize_cdr(msg, kind.__msgtype__))
            else:
                times.append(t)
            writer.write(conn, t, raw)
            cam = TYPES.types["sensor_msgs/msg/CameraInfo"]
            writer.write(info, t, bytes(TYPES.serialize_cdr(_camera_info(cam, i),
                                                            cam.__msgtype__)))
    return times


def _camera_info(cam: type, i: int) -> object:
    roi = TYPES.types["sensor_msgs/msg/RegionOfInterest"](0, 0, 0, 0, False)
    return cam(header=_header(i), height=240, width=320, distortion_model="plumb_bob",
               d=np.zeros(5), k=np.array([300.0, 0, 160, 0, 300, 120, 0, 0, 1]),
               r=np.eye(3).ravel(), p=np.zeros(12), binning_x=0, binning_y=0, roi=roi)


def povss(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The CLI in its own process, where ROS's Python packages cannot be imported."""
    shadow = cwd / "no_ros"
    for name in NO_ROS:
        (shadow / name).mkdir(parents=True, exist_ok=True)
        (shadow / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError('{name}: no ROS here', name='{name}')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), str(ROOT)])}
    return subprocess.run([sys.executable, "-m", "povss_ros.cli", "bag", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300, env=env)


def _engine(store: Path, seg: Segmenter, teach: TeachConfig | None = None) -> PerceptionEngine:
    settings = EngineSettings(concept_store=str(store), teach=teach or TeachConfig())
    return PerceptionEngine(seg, ConceptStore(store), settings)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Frames where my mug stands among other things, my mug taught from two other shots
    into a concept store, and what the engine says of the frames, run directly."""
    tmp = tmp_path_factory.mktemp("bag")
    synthetic = World(0)
    mine = synthetic.identities("mug")[0]
    rng = np.random.default_rng(3)
    scenes = [sample_scene(rng, synthetic, required=[mine]) for _ in range(FRAMES + 2)]
    store = tmp / "concepts"
    seg = Segmenter.from_weights(SMALL, "auto", None, "cpu", "fp32")  # as the CLI's MODEL
    teacher = _engine(store, seg, TeachConfig(iterations=5))
    outcome = teacher.teach(TeachRequest("my mug", "mug", [s.image for s in scenes[:2]],
                                         [s.mask(mine) for s in scenes[:2]]))
    assert outcome.success, outcome.message
    frames = [s.image for s in scenes[2:]]
    direct = _engine(store, seg)  # a fresh engine: its presence filter starts as the CLI's
    results = [direct.segment(f) for f in frames]
    return {"tmp": tmp, "store": store, "frames": frames, "results": results,
            "table": direct.class_table()}


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def ran(request: pytest.FixtureRequest, world: dict) -> dict:
    """`povss bag` over a recording in each storage, writing the same storage."""
    storage = request.param
    tmp = world["tmp"] / storage
    tmp.mkdir()
    times = write_recording(tmp / "recording", storage, world["frames"])
    out = tmp / "segmented"
    result = povss(str(tmp / "recording"), "--out", str(out), "--storage", storage,
                   "--concepts", str(world["store"]), *MODEL, cwd=tmp)
    assert result.returncode == 0, result.stderr[-3000:]
    return {**world, "storage": storage, "out": out, "times": times, "cli": result}


def _read(out: Path) -> dict[str, list[tuple[int, object]]]:
    """topic -> [(recording time, message)] of a recording, read back with rosbags."""
    topics: dict[str, list] = {}
    with AnyReader([out]) as reader:
        for conn, t, raw in reader.messages():
            topics.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return topics


def test_outputs_round_trip_with_the_engines_labels(ran):
    got = _read(ran["out"])
    assert set(got) == {"/povss/labels", "/povss/objects", "/povss/class_map",
                        "/povss/concepts/my_mug/mask"}
    stamps = [(100 + i, 1000 * i) for i in range(FRAMES + len(BAD_AT)) if i not in BAD_AT]
    for topic in ("/povss/labels", "/povss/objects", "/povss/concepts/my_mug/mask"):
        assert [t for t, _ in got[topic]] == ran["times"], topic  # nothing else lost
        assert [(m.header.stamp.sec, m.header.stamp.nanosec) for _, m in got[topic]] == stamps
        assert {m.header.frame_id for _, m in got[topic]} == {"camera_optical"}
    for (_, labels), (_, objects), (_, mask), direct in zip(
            got["/povss/labels"], got["/povss/objects"], got["/povss/concepts/my_mug/mask"],
            ran["results"]):
        assert labels.encoding == "mono16"
        np.testing.assert_array_equal(image_to_array(labels), direct.labels)
        np.testing.assert_array_equal(image_to_array(mask), direct.concept_masks["my_mug"])
        assert [(o.class_id, o.name, o.concept_id, o.present, o.area) for o in objects.objects] \
            == [(o.class_id, o.name, o.concept_id, o.present, o.area) for o in direct.objects]
        assert [(o.box.x_offset, o.box.y_offset, o.box.width, o.box.height)
                for o in objects.objects if o.area] == [
            (b[0], b[1], b[2] - b[0], b[3] - b[1]) for b in (o.box for o in direct.objects
                                                             if o.area)]
    assert len(got["/povss/class_map"]) == 1
    table = got["/povss/class_map"][0][1]
    assert list(table.ids) == [e.class_id for e in ran["table"]]
    assert list(table.names) == [e.name for e in ran["table"]]
    assert "my mug" in table.names and list(table.personal).count(True) == 1
    labelled = set(np.unique(np.concatenate([r.labels.ravel() for r in ran["results"]])))
    assert len(labelled) > 3  # the frames are really segmented, not all one class


def test_a_corrupt_message_is_skipped_and_counted(ran):
    err = ran["cli"].stderr
    assert f"{FRAMES} frame(s) segmented, {len(BAD_AT)} message(s) skipped" in err, err[-2000:]
    assert f"skipped message {BAD_AT[0]} of {TOPIC}: the message does not deserialize" in err
    assert f"skipped message {BAD_AT[1]} of {TOPIC}: frame refused" in err
    assert f"segmenting [{'#' * 30}] {FRAMES + len(BAD_AT)}/{FRAMES + len(BAD_AT)}" in err


def test_the_recording_is_written_whole_in_its_storage(ran):
    out = ran["out"]
    suffix = {"mcap": ".mcap", "sqlite3": ".db3"}[ran["storage"]]
    assert sorted(p.name for p in out.iterdir()) == sorted(["metadata.yaml", out.name + suffix])
    assert f"storage_identifier: {ran['storage']}" in (out / "metadata.yaml").read_text()
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize("ran", ["mcap"], indirect=True)
def test_foxglove_and_ros_read_the_mcap(ran):
    """Foxglove's decoder builds each type from the schema the MCAP carries; rclpy reads the
    bytes as the real messages, whose type hashes are those the recording declares."""
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    counts: dict[str, int] = {}
    with open(ran["out"] / "segmented.mcap", "rb") as f:
        for schema, channel, _, decoded in make_reader(
                f, decoder_factories=[DecoderFactory()]).iter_decoded_messages():
            assert schema.encoding == "ros2msg" and channel.message_encoding == "cdr"
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
            if channel.topic == "/povss/labels":
                assert (decoded.height, decoded.width) == ran["results"][0].labels.shape
    assert counts == {"/povss/class_map": 1, "/povss/labels": FRAMES, "/povss/objects": FRAMES,
                      "/povss/concepts/my_mug/mask": FRAMES}

    pytest.importorskip("rclpy")
    pytest.importorskip("povss_interfaces.msg")
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image as RosImage

    from povss_interfaces.msg import ClassMap, ObjectArray

    kinds = {"/povss/labels": RosImage, "/povss/objects": ObjectArray,
             "/povss/class_map": ClassMap, "/povss/concepts/my_mug/mask": RosImage}
    checked = 0
    with AnyReader([ran["out"]]) as reader:
        for conn in reader.connections:
            built = Path(sys.prefix, "share", f"{conn.msgtype}.json")  # what rosidl hashed
            if built.is_file():
                hashes = json.loads(built.read_text())["type_hashes"]
                assert conn.digest == hashes[0]["hash_string"], conn.msgtype
                checked += 1
        first: dict[str, object] = {}
        for conn, _, raw in reader.messages():
            first.setdefault(conn.topic, deserialize_message(raw, kinds[conn.topic]))
    assert checked == len(kinds)  # every type's hash, when the venv built the messages
    assert list(first["/povss/class_map"].names) == [e.name for e in ran["table"]]
    objects = first["/povss/objects"].objects
    assert [o.name for o in objects] == [o.name for o in ran["results"][0].objects]
    np.testing.assert_array_equal(image_to_array(first["/povss/labels"]),
                                  ran["results"][0].labels)


# ---------------------------------------------------------------- bad input, before the model


def _error(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert povss_main(["bag", *args, *MODEL]) == 2
    return capsys.readouterr().err


def test_a_missing_recording_is_named(tmp_path, capsys):
    err = _error(capsys, str(tmp_path / "nowhere"))
    assert f"error: recording {tmp_path / 'nowhere'}: no such file or folder" in err
    (tmp_path / "notes.mcap").write_text("not a recording")
    assert "is not a readable rosbag2 recording" in _error(capsys, str(tmp_path / "notes.mcap"))


def test_a_recording_without_an_image_topic_lists_its_topics(tmp_path, capsys):
    with Writer(tmp_path / "rec", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=TYPES)
        msg = TYPES.types["std_msgs/msg/String"](data="hello")
        writer.write(conn, 1, bytes(TYPES.serialize_cdr(msg, "std_msgs/msg/String")))
    err = _error(capsys, str(tmp_path / "rec"))
    assert "has no sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage topic" in err
    assert "/chatter (std_msgs/msg/String)" in err
    err = _error(capsys, str(tmp_path / "rec"), "--image-topic", "/chatter")
    assert "/chatter is a std_msgs/msg/String topic" in err


def test_an_unknown_encoding_is_refused_and_nothing_is_written(tmp_path, capsys):
    depth = np.zeros((24, 32, 3), np.uint8)
    write_recording(tmp_path / "rec", "mcap", [depth] * FRAMES, encoding="32FC3")
    err = _error(capsys, str(tmp_path / "rec"))
    assert f"{TOPIC}: unsupported image encoding '32FC3'; supported: rgb8" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rec"]


def test_an_existing_output_is_kept_unless_overwritten(tmp_path, capsys):
    (tmp_path / "rec_povss").mkdir()
    (tmp_path / "rec").mkdir()
    err = _error(capsys, str(tmp_path / "rec"))
    assert f"{tmp_path / 'rec_povss'} exists: choose another --out, or pass --overwrite" in err
    assert default_output(tmp_path / "drive.mcap") == tmp_path / "drive_povss"


def test_an_interrupted_write_leaves_nothing(tmp_path):
    """The output folder appears whole at the end, or not at all; an old one is replaced
    only by a complete new one."""
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt), atomic_folder(out) as target:
        target.mkdir()
        (target / "half.mcap").write_bytes(b"x")
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    with atomic_folder(out) as target:
        target.mkdir()
        (target / "old").write_text("1")
    with pytest.raises(FileExistsError), atomic_folder(out):
        pass
    with atomic_folder(out, overwrite=True) as target:
        target.mkdir()
        (target / "new").write_text("2")
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert [p.name for p in out.iterdir()] == ["new"]


# ---------------------------------------------------------------- --overwrite, and a bad frame


def _small_frames(n: int, size: tuple[int, int] = (48, 64)) -> list[np.ndarray]:
    """`n` RGB frames of `size` (h, w): enough for SAN to segment, cheap on a CPU."""
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(n)]


def _tree(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes): to show nothing was touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_overwrite_never_replaces_the_recording_or_a_folder_around_it(tmp_path, capsys):
    """--overwrite with --out naming the recording's own folder, the recording, or a folder
    inside it is refused before anything is written, and nothing is deleted."""
    drive = tmp_path / "drive"
    write_recording(drive / "rec", "mcap", _small_frames(FRAMES))
    (drive / "notes.txt").write_text("the day's notes")
    before = _tree(tmp_path)
    rec = drive / "rec"
    err = _error(capsys, str(rec), "--out", str(drive), "--overwrite")
    assert f"--out {drive} holds the input recording {rec}: choose another --out" in err, err
    err = _error(capsys, str(rec), "--out", str(rec), "--overwrite")
    assert f"--out {rec} is the input recording" in err, err
    err = _error(capsys, str(rec), "--out", str(rec / "inner"), "--overwrite")
    assert f"--out {rec / 'inner'} is inside the input recording {rec}" in err, err
    err = _error(capsys, str(rec), "--out", str(drive / ".." / "drive"), "--overwrite")
    assert "holds the input recording" in err, err  # the same folder, spelled otherwise
    assert _tree(tmp_path) == before


def test_overwrite_refuses_a_folder_that_is_not_a_recording(tmp_path, capsys):
    write_recording(tmp_path / "rec", "mcap", _small_frames(FRAMES))
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "holiday.png").write_bytes(encode_png(_small_frames(1)[0]))
    before = _tree(tmp_path)
    err = _error(capsys, str(tmp_path / "rec"), "--out", str(photos), "--overwrite")
    assert (f"{photos} is a folder but not a rosbag2 recording (no metadata.yaml): "
            "--overwrite replaces only a previous output") in err, err
    assert _tree(tmp_path) == before
    with pytest.raises(FileExistsError, match="not a folder holding metadata.yaml"), \
            atomic_folder(photos, overwrite=True, marker="metadata.yaml"):
        pass  # the folder's own guard, for any caller that skips output_problem
    assert _tree(tmp_path) == before


def test_overwrite_replaces_a_previous_output(tmp_path):
    write_recording(tmp_path / "rec", "mcap", _small_frames(FRAMES))
    out = tmp_path / "rec_povss"
    with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:  # an old output
        conn = writer.add_connection("/povss/old", "std_msgs/msg/String", typestore=TYPES)
        msg = TYPES.types["std_msgs/msg/String"](data="old")
        writer.write(conn, 1, bytes(TYPES.serialize_cdr(msg, "std_msgs/msg/String")))
    result = povss(str(tmp_path / "rec"), "--overwrite", *MODEL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    got = _read(out)
    assert "/povss/old" not in got
    assert len(got["/povss/labels"]) == FRAMES
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_frame_the_segmenter_refuses_is_skipped_and_the_run_goes_on(tmp_path):
    """A frame too thin for SAN (`Segmenter.frame_problem`: at most 48:1 for the small
    model) among good ones is skipped with its reason; every other frame is written."""
    thin = np.full((4, 200, 3), 90, np.uint8)
    good = _small_frames(FRAMES - 1)
    frames = [good[0], thin, *good[1:]]  # the thin one is message 2 (1 and 3 are corrupt)
    write_recording(tmp_path / "rec", "mcap", frames)
    out = tmp_path / "out"
    result = povss(str(tmp_path / "rec"), "--out", str(out), *MODEL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    err = result.stderr
    assert (f"{FRAMES - 1} frame(s) segmented, {len(BAD_AT) + 1} message(s) skipped"
            in err), err[-2000:]
    assert (f"skipped message 2 of {TOPIC}: frame refused: frame 200x4 is too thin for SAN"
            in err), err[-2000:]
    labels = _read(out)["/povss/labels"]
    assert [m.header.stamp.sec for _, m in labels] == [100, 104, 105]
    assert all((m.height, m.width) == good[0].shape[:2] for _, m in labels)
