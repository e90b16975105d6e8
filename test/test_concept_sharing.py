"""One memory across nodes over ROS 2 (`share_concepts`): three nodes, each its own process with
its own store, the committed small SAN on the CPU, one camera and this process as the client,
over real DDS on loopback.

Checked: a concept taught on one node is listed by the others with the same class id, and
they publish its mask; a forget on any node reaches the others; a node restarted after a teach
catches up from the latched topic; malformed and hostile messages are refused, one warning
each, with nothing stored. Without ROS: the envelope's own bounds.
"""

from __future__ import annotations

import array
import hashlib
import json
import subprocess
import threading
import time
import tracemalloc
from datetime import datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.numpy import save as save_arrays

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.srv", reason="povss_interfaces not built (make setup)")

from _ros_client import ROOT, Client, ros_env, start_camera, stop  # noqa: E402
from std_msgs.msg import UInt8MultiArray  # noqa: E402

from povss_interfaces.srv import ListConcepts  # noqa: E402
from povss_lab.spawn import node_command, write_params  # noqa: E402
from povss_lab.synthetic.world import World, sample_scene  # noqa: E402
from povss_ros.io import encode_png  # noqa: E402
from povss_ros.personal.concept import Concept  # noqa: E402
from povss_ros.personal.store import ConceptError, ConceptStore  # noqa: E402
from povss_ros.personal.store import shared as sharing  # noqa: E402
from povss_ros.ros.conversions import array_to_image  # noqa: E402
from povss_ros.ros.sharing import SHARED_QOS, SHARED_TOPIC  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
MODEL = ROOT / "models" / "syn_small.safetensors"
NAMES = ("/sa", "/sb", "/sc")
REFUSED = "shared concept refused, nothing stored"
WAIT_S = 60.0  # bound of every wait on the fleet (CPU nodes sharing two cores)


class Robot:
    """One node process (its namespace, store and log) and a client for it."""

    def __init__(self, tmp: Path, ns: str, env: dict, shots: bool) -> None:
        self.ns, self.env = ns, env
        self.store = tmp / ns.strip("/") / "concepts"
        self.params = write_params(tmp / f"{ns.strip('/')}.yaml", {
            "weights": f'"{MODEL}"', "device": "cpu", "concept_store": f'"{self.store}"',
            "share_concepts": "true", "share_shots": str(shots).lower(),
            "teach_iterations": "40", "diagnostics_period": "2.0"})
        self.log: list[str] = []
        self.client = Client(ns, name=f"share_client_{ns.strip('/')}")
        self.start()

    def start(self) -> None:
        remaps = {"__ns": self.ns, "image": "/cam/image", "camera_info": "/cam/camera_info"}
        self.proc = subprocess.Popen(node_command(self.params, remaps), cwd=ROOT, env=self.env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()

    def _read(self, proc: subprocess.Popen) -> None:
        for line in proc.stdout:
            self.log.append(line)

    def stop(self) -> None:
        """SIGINT; the node must exit 0 and have logged no error."""
        stop(self.proc)
        self._reader.join(timeout=10)
        text = "".join(self.log)
        assert self.proc.returncode == 0, text[-3000:]
        assert "ERROR" not in text and "Traceback" not in text, text[-3000:]

    def wait_up(self) -> None:
        self.client.wait_for(lambda: len(self.client.labels) >= 1, 120, self.proc,
                             f"{self.ns}'s first labels")

    def names(self) -> list[str]:
        """The node's concept names. A request sent while DDS has not yet matched a restarted
        node's service is lost (rclpy does not send it again; seen on Jazzy's Fast DDS 2),
        so the listing, which changes nothing, is asked again every 10 s, within WAIT_S."""
        end = time.monotonic() + WAIT_S
        while True:
            cli = self.client.list_cli
            assert cli.wait_for_service(timeout_sec=30.0), f"{self.ns}: no list_concepts"
            future = cli.call_async(ListConcepts.Request())
            try:
                self.client.wait_for(future.done, min(10.0, max(0.1, end - time.monotonic())),
                                     self.proc)
                return list(future.result().names)
            except AssertionError:
                if time.monotonic() >= end or self.proc.poll() is not None:
                    raise
                cli.remove_pending_request(future)

    def refusals(self) -> int:
        return sum(REFUSED in line for line in self.log)

    def files(self) -> dict[str, str]:
        """Every file of the store and its sha256 (what 'nothing stored' compares)."""
        return {str(p.relative_to(self.store)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(self.store.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three sharing nodes (/sa, /sb, /sc) on one camera, /sa alone sharing shots too; yields
    the robots and the messages this process saw on the shared topic."""
    tmp = tmp_path_factory.mktemp("sharing")
    env = ros_env(76)
    env["PYTHONPATH"] = f"{ROOT}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
    rclpy.init()
    camera = start_camera(env)
    robots = [Robot(tmp, ns, env, shots=ns == "/sa") for ns in NAMES]
    seen: list[bytes] = []
    robots[0].client.node.create_subscription(
        UInt8MultiArray, SHARED_TOPIC, lambda m: seen.append(m.data.tobytes()), SHARED_QOS)
    try:
        for robot in robots:
            robot.wait_up()
        yield robots, seen
    finally:
        for robot in robots:
            robot.client.close()
        rclpy.try_shutdown()
        stop(camera)
        for robot in robots:
            robot.stop()


def teach(robot: Robot, name: str, seed: int) -> object:
    """Teach `name` (base word mug) on `robot` from three synthetic shots of one mug."""
    w = World(0)
    mine = w.identity("mug", seed % 3)
    rng = np.random.default_rng(seed)
    shots = [sample_scene(rng, w, [mine], size=(160, 120)) for _ in range(3)]
    res = robot.client.teach(
        name=name, base_class="mug",
        images=[array_to_image(s.image, "rgb8") for s in shots],
        masks=[array_to_image(s.mask(mine).astype(np.uint8) * 255, "mono8") for s in shots])
    assert res.success, res.message
    return res


def listed(robot: Robot, name: str) -> bool:
    return name in robot.names()


def test_a_taught_concept_reaches_every_node_with_its_class_id_and_mask(fleet):
    (a, b, c), _ = fleet
    res = teach(a, "my mug", 1)
    for robot in (b, c):
        robot.client.watch_mask(res.concept_id)
        robot.client.wait_for(lambda r=robot: listed(r, "my mug"), WAIT_S, robot.proc,
                              f"{robot.ns} to list my mug")
        robot.client.wait_for(lambda r=robot: r.client.masks[res.concept_id], WAIT_S,
                              robot.proc, f"{robot.ns} to publish my mug's mask")
        listing = robot.client.listing()
        assert dict(zip(listing.concept_ids, listing.class_ids))[res.concept_id] == res.class_id
        sent = json.loads((a.store / res.concept_id / "meta.json").read_text())
        kept = json.loads((robot.store / res.concept_id / "meta.json").read_text())
        assert kept["tensors_sha256"] == sent["tensors_sha256"]
        assert kept["created_at"] == sent["created_at"]
        assert kept["class_id"] == res.class_id
        assert kept["shared_from"].endswith("/sa/povss")
        assert kept["shots"] == sent["shots"] == 3  # /sa shares its shots (share_shots)
        assert len(list((robot.store / res.concept_id / "shots").glob("*.png"))) == 6


def test_a_forget_on_any_node_reaches_the_others(fleet):
    (a, b, c), _ = fleet
    if not listed(b, "my mug"):
        teach(a, "my mug", 1)
        b.client.wait_for(lambda: listed(b, "my mug"), WAIT_S, b.proc)
    assert b.client.forget("my mug").success  # b adopted it; a taught it
    for robot in (a, c):
        robot.client.wait_for(lambda r=robot: not listed(r, "my mug"), WAIT_S, robot.proc,
                              f"{robot.ns} to forget my mug")
        assert not (robot.store / "my_mug").exists()


def test_a_restarted_node_catches_up_from_the_latched_topic(fleet):
    (a, b, c), _ = fleet
    c.stop()
    teach(b, "my cup", 2)
    c.log.clear()
    c.start()
    c.wait_up()
    for robot in (c, a):
        robot.client.wait_for(lambda r=robot: listed(r, "my cup"), WAIT_S, robot.proc,
                              f"{robot.ns} to list my cup")
        # /sb does not share shots (share_shots false): tensors and metadata only
        assert json.loads((robot.store / "my_cup" / "meta.json").read_text())["shots"] == 0
        assert not list((robot.store / "my_cup" / "shots").glob("*.png"))
    # forgotten before it stopped: the forget comes too, whichever node's history is first
    c.client.wait_for(lambda: not listed(c, "my mug"), WAIT_S, c.proc, "/sc to drop my mug")


def _hostile(valid: bytes) -> dict[str, bytes]:
    """Messages a node must refuse, each newer than `valid` (so it would win if accepted), by
    the reason each must be refused for."""
    meta, views = sharing._files(valid)
    files = {k: bytes(v) for k, v in views.items()}
    stamp = (datetime.fromisoformat(meta["stamp"]) + timedelta(hours=1)).isoformat()
    record = json.loads(files[sharing.META_KEY])
    record["created_at"] = stamp
    newer = {sharing.META_KEY: json.dumps(record).encode(),
             sharing.TENSORS_KEY: files[sharing.TENSORS_KEY]}

    def envelope(files: dict[str, bytes], **change: str) -> bytes:
        fields = {**{k: meta[k] for k in ("event", "concept_id", "fingerprint")},
                  "sender": "hostile", "stamp": stamp, **change}
        return sharing.pack(fields["event"], fields["sender"], fields["concept_id"],
                            fields["fingerprint"], fields["stamp"], files)

    flipped = bytearray(newer[sharing.TENSORS_KEY])
    flipped[-1] ^= 0xFF
    big = {**newer, sharing.META_KEY: b" " * (1 << 20) + newer[sharing.META_KEY]}
    return {
        "does not fit the message": b"\x00\x01not a safetensors envelope" * 100,
        "taught for other weights": envelope(newer, fingerprint="0" * 16),
        "corrupt (checksum)": envelope({**newer, sharing.TENSORS_KEY: bytes(flipped)}),
        "meta.json over the limit": envelope(big),
        "not to this folder": envelope(newer, concept_id="my_plate"),
        "is not a concept id": envelope(newer, concept_id="../escape"),
        "a forget carries no files": envelope(newer, event=sharing.FORGOTTEN),
    }


def test_malformed_and_hostile_messages_are_refused_and_store_nothing(fleet):
    robots, seen = fleet
    a = robots[0]
    if not any(b'"taught"' in m for m in seen):  # run alone: a concept to forge from
        teach(a, "my bowl", 3)
    a.client.wait_for(lambda: any(b'"taught"' in m for m in seen), WAIT_S, a.proc,
                      "a taught message on the shared topic")
    valid = next(m for m in reversed(seen) if b'"taught"' in m)
    bad = _hostile(valid)
    before = [(r.refusals(), r.files()) for r in robots]
    publisher = a.client.node.create_publisher(UInt8MultiArray, SHARED_TOPIC, SHARED_QOS)
    try:
        for data in bad.values():
            publisher.publish(UInt8MultiArray(data=array.array("B", data)))
        for robot, (count, _) in zip(robots, before):
            robot.client.wait_for(lambda r=robot, n=count: r.refusals() >= n + len(bad), WAIT_S,
                                  robot.proc, f"{robot.ns} to refuse {len(bad)} messages")
    finally:
        a.client.node.destroy_publisher(publisher)
    for robot, (count, files) in zip(robots, before):
        reasons = [line for line in robot.log if REFUSED in line][count:]
        assert len(reasons) == len(bad), "".join(robot.log)[-3000:]
        for line, why in zip(reasons, bad):  # one publisher: its messages come in order
            assert why in line, (why, line)
        assert robot.files() == files
        assert not (robot.store.parent / "escape").exists()


def test_the_envelope_bounds_hold_without_ros():
    too_big = b"\x00" * (sharing.MAX_SHARED_BYTES + 1)
    with pytest.raises(ConceptError, match="over the limit"):
        sharing.unpack(too_big, "f", 1, 1)
    header = (10**9).to_bytes(8, "little") + b"{}"
    with pytest.raises(ConceptError, match="does not fit"):
        sharing.unpack(header, "f", 1, 1)
    forget = sharing.pack(sharing.FORGOTTEN, "n", "my_mug", "f", "2025-01-01T00:00:00+00:00")
    assert sharing.unpack(forget, "f", 1, 1).event == sharing.FORGOTTEN
    with pytest.raises(ConceptError, match="time zone"):
        sharing.unpack(sharing.pack(sharing.FORGOTTEN, "n", "my_mug", "f",
                                    "2025-01-01T00:00:00"), "f", 1, 1)


# ---------------------------------------------------------------- without ROS: hostile envelopes
FP, N, D = "fp-share", 16, 32
STAMP = "2025-01-01T00:00:00+00:00"


def _raw(entries: dict[str, tuple[int, int]], body: bytes, **meta: str) -> bytes:
    """A safetensors envelope written by hand: `entries` name -> (start, end) into `body`,
    overlapping or not, as a hostile sender may write it."""
    header = {"__metadata__": {"format": sharing.FORMAT, "version": sharing.VERSION,
                               "event": sharing.TAUGHT, "sender": "hostile",
                               "concept_id": "my_mug", "fingerprint": FP, "stamp": STAMP,
                               **meta}}
    for name, (start, end) in entries.items():
        header[name] = {"dtype": "U8", "shape": [end - start], "data_offsets": [start, end]}
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + body


def _refused_cheaply(data: bytes, why: str, peak_mib: float) -> None:
    """`unpack` refuses `data` naming `why`, allocating at most `peak_mib` on the way."""
    tracemalloc.start()
    try:
        with pytest.raises(ConceptError, match=why):
            sharing.unpack(data, FP, N, D)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < peak_mib * 2**20, f"{peak / 2**20:.1f} MiB allocated to refuse it"


def test_hostile_headers_are_refused_before_anything_is_copied():
    body = bytes(8 << 20)
    same = {f"shots/{i // 2:03d}_{('image', 'mask')[i % 2]}.png": (0, len(body))
            for i in range(50)}  # 50 entries, each the whole 8 MiB body: 400 MiB if copied
    _refused_cheaply(_raw(same, body), "overlap", 2)
    many = {f"shots/{i:03d}_image.png": (0, 0) for i in range(sharing.MAX_ENTRIES + 1)}
    _refused_cheaply(_raw(many, b""), "over the limit of", 2)
    _refused_cheaply(_raw({"../../meta.json": (0, len(body))}, body), "unknown entry", 2)
    beyond = {f"shots/{sharing.MAX_SHARED_SHOTS:03d}_image.png": (0, 4)}
    _refused_cheaply(_raw(beyond, b"\x00" * 4), "unknown entry", 2)


def _stored(store: ConceptStore, name: str, seed: int) -> dict[str, bytes]:
    """meta.json and tensors of a concept saved to `store` (what a sender would carry)."""
    gen = torch.Generator().manual_seed(seed)
    concept = Concept(name, "mug", torch.randn(D, generator=gen), N, alpha=0.1)
    folder = store.save(concept, SimpleNamespace(), [], FP)
    return {sharing.META_KEY: (folder / "meta.json").read_bytes(),
            sharing.TENSORS_KEY: (folder / "concept.safetensors").read_bytes()}


def test_the_pixels_a_message_decodes_are_bounded_before_any_decodes(tmp_path):
    files = _stored(ConceptStore(tmp_path / "a"), "my mug", 0)
    stamp = json.loads(files[sharing.META_KEY])["created_at"]
    side = sharing.MAX_SHOT_SIDE  # within the per-image bound: only the total is too much
    png = encode_png(np.zeros((side, side), np.uint8))
    pairs = sharing.MAX_SHARED_PIXELS // (2 * side * side) + 1
    arrays = {k: np.frombuffer(v, np.uint8) for k, v in files.items()}
    for i in range(pairs):
        for part in ("image", "mask"):
            arrays[f"shots/{i:03d}_{part}.png"] = np.frombuffer(png, np.uint8)
    meta = {"format": sharing.FORMAT, "version": sharing.VERSION, "event": sharing.TAUGHT,
            "sender": "hostile", "concept_id": "my_mug", "fingerprint": FP, "stamp": stamp}
    data = save_arrays(arrays, metadata=meta)
    assert len(data) < sharing.MAX_SHARED_BYTES
    _refused_cheaply(data, "pixels, over the limit", 8)  # one such image decoded is 48 MiB


def test_a_sender_leaves_out_the_shots_a_receiver_would_refuse(tmp_path):
    files = _stored(ConceptStore(tmp_path / "a"), "my mug", 0)
    stamp = json.loads(files[sharing.META_KEY])["created_at"]
    side = 2048
    pair = (np.zeros((side, side, 3), np.uint8), np.zeros((side, side), bool))
    data = sharing.pack(sharing.TAUGHT, "n", "my_mug", FP, stamp, files,
                        {"shots": [pair] * sharing.MAX_SHARED_SHOTS})
    got = sharing.unpack(data, FP, N, D)
    assert 0 < len(got.examples["shots"]) == sharing.MAX_SHARED_PIXELS // (2 * side * side)


def test_adopting_never_changes_a_stored_concepts_class_id(tmp_path):
    sender, here = ConceptStore(tmp_path / "sender"), ConceptStore(tmp_path / "here")
    mug = _stored(sender, "my mug", 0)  # the older: the store's rule would give it the id
    _stored(here, "my plate", 1)
    sent = json.loads(mug[sharing.META_KEY])
    plate_id = here.class_ids()["my_plate"]
    assert sent["class_id"] == plate_id  # both the first concept of their store
    _, note = here.adopt({**sent, "shared_from": "sender"}, mug[sharing.TENSORS_KEY])
    ids = here.class_ids()
    assert ids["my_plate"] == plate_id
    assert ids["my_mug"] not in (plate_id, None)
    assert f"class id {plate_id}" in note and "my_plate" in note
    recorded = json.loads((here.path("my_mug") / "meta.json").read_text())["class_id"]
    assert recorded == ids["my_mug"]
    # adopted again (a correction): it keeps the id it got here, and the plate keeps its own
    _, note = here.adopt({**sent, "shared_from": "sender"}, mug[sharing.TENSORS_KEY])
    assert here.class_ids() == ids and "keeps its class id" in note
    # a concept whose sender's id is free here keeps the sender's id, with no note
    _stored(sender, "my bowl", 3)  # takes the sender's next id, which is the mug's here
    cup = _stored(sender, "my cup", 2)
    cup_meta = json.loads(cup[sharing.META_KEY])
    assert cup_meta["class_id"] not in ids.values()
    _, note = here.adopt({**cup_meta, "shared_from": "sender"}, cup[sharing.TENSORS_KEY])
    assert note == "" and here.class_ids()["my_cup"] == cup_meta["class_id"]
