"""One node, two cameras, over real DDS: a synthetic head camera (no mug in view) and a wrist
camera (my mug in view) in one process, the node with the small synthetic-world model and
`cameras: [head, wrist]` in another, this client in a third.

Checked: each camera's outputs under ~/head/ and ~/wrist/ with its own header; a teach from
the wrist camera's captured frames (with its teach_mask), known at once to both cameras and
present only in the one that sees it; an unknown camera refused with nothing stored; a bad
frame on one camera refused alone while the other flows; `batch_cameras` on and off; a
run-time switch to compressed frames and of the image QoS reaching both cameras; depth on
the wrist camera alone (3D there, the head goes on without); `cameras` read at configure (a
node configured again with one camera publishes for it alone).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.msg", reason="povss_interfaces not built (make setup)")

from _ros_client import ROOT, Client, end_session, ros_env  # noqa: E402
from _two_cameras import HEAD_FX, scenes  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage, Image  # noqa: E402

from povss_interfaces.msg import ObjectArray  # noqa: E402
from povss_lab.spawn import node_command, write_params  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
NS = "/mc"
NODE = f"{NS}/povss"
MODEL = ROOT / "models" / "syn_small.safetensors"
CAMERAS = ("head", "wrist")


class Rig:
    """The node, the two cameras, and what the client received per camera."""

    def __init__(self, tmp: Path) -> None:
        self.control = tmp / "control"
        self.control.write_text("normal")
        env = ros_env()  # the cameras import the lab from this checkout
        env["PYTHONPATH"] = f"{ROOT}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
        params = write_params(tmp / "params.yaml", {
            "weights": f'"{MODEL}"', "device": "cpu", "concept_store": f'"{tmp / "concepts"}"',
            "cameras": "[head, wrist]", "batch_cameras": "always", "diagnostics_period": "0.3",
            "teach_iterations": "60", "teach_measure_fit": "false"})
        remaps = {"__ns": NS, "wrist/image": "/rig/wrist/color",
                  "wrist/camera_info": "/rig/wrist/camera_info"}
        self.node = subprocess.Popen(node_command(params, remaps), cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.cameras = subprocess.Popen(
            [sys.executable, str(ROOT / "test" / "_two_cameras.py"), NS, str(self.control), "8"],
            cwd=ROOT, env=env)
        rclpy.init()
        self.client = Client(NS)
        self.labels: dict[str, list[Image]] = {c: [] for c in CAMERAS}
        self.objects: dict[str, list[ObjectArray]] = {c: [] for c in CAMERAS}
        self.infos: dict[str, list[CameraInfo]] = {c: [] for c in CAMERAS}
        self.masks: dict[str, list[Image]] = {c: [] for c in CAMERAS}
        sub = self.client.node.create_subscription
        # the stamps of the JPEG frames the cameras send (with the control word "compressed")
        self.sent: dict[str, list[int]] = {c: [] for c in CAMERAS}
        for cam, topic in (("head", f"{NS}/head/image/compressed"),
                           ("wrist", "/rig/wrist/color/compressed")):
            sub(CompressedImage, topic, lambda m, cam=cam: self.sent[cam].append(
                m.header.stamp.sec), qos_profile_sensor_data)
        for cam in CAMERAS:
            sub(Image, f"{NODE}/{cam}/labels", self.labels[cam].append, 10)
            sub(ObjectArray, f"{NODE}/{cam}/objects", self.objects[cam].append, 10)
            sub(CameraInfo, f"{NODE}/{cam}/camera_info", self.infos[cam].append, 10)
            sub(Image, f"{NODE}/{cam}/concepts/my_mug/mask", self.masks[cam].append, 10)

    def quiet(self, frames: int) -> bool:
        """True if neither camera's next `frames` JPEG frames (as this client receives them
        from the cameras) get labels; frames the node took before the call (up to two ahead)
        may still land. Counted in the cameras' frames, with a bound: a stalled camera fails
        the wait instead of passing as quiet."""
        start = {}
        for cam in CAMERAS:
            self.wait(lambda cam=cam: self.sent[cam], 30, f"a JPEG frame of {cam}")
            start[cam] = self.sent[cam][-1]
        for cam in CAMERAS:
            self.wait(lambda cam=cam: self.sent[cam][-1] >= start[cam] + frames, 60,
                      f"{frames} more JPEG frames of {cam}")
        return not any(m.header.stamp.sec > start[cam] + 2
                       for cam in CAMERAS for m in self.labels[cam])

    def wait(self, predicate, timeout: float = 60.0, what: str = "") -> None:  # noqa: ANN001
        self.client.wait_for(predicate, timeout, self.node, what)

    def counter(self, key: str) -> int:
        return int(self.client.diagnostic(key) or 0)

    def grows(self, key: str, by: int = 3, timeout: float = 60.0) -> None:
        """Wait until the diagnostics key `key` has grown by `by` from now."""
        start = self.counter(key)
        self.wait(lambda: self.counter(key) >= start + by, timeout, f"{key} to grow by {by}")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    r = Rig(tmp_path_factory.mktemp("cameras"))
    try:
        r.wait(lambda: all(len(r.labels[c]) >= 2 for c in CAMERAS) and r.client.diagnostics, 120,
               "labels of both cameras")
        yield r
    finally:
        end_session(r.client, r.cameras, r.node)


def test_each_camera_publishes_under_its_own_name_with_its_own_header(rig):
    for cam in CAMERAS:
        labels, info = rig.labels[cam][-1], None
        assert labels.header.frame_id == f"{cam}_optical"
        assert (labels.width, labels.height, labels.encoding) == (320, 240, "mono16")
        rig.wait(lambda cam=cam: rig.infos[cam] and rig.objects[cam], 30)
        info = rig.infos[cam][-1]
        assert info.header.frame_id == f"{cam}_optical"
        assert (info.k[0] == HEAD_FX) == (cam == "head")  # each camera's own camera_info
        assert rig.objects[cam][-1].header.frame_id == f"{cam}_optical"
    assert not rig.client.labels  # no unnamed camera: nothing on ~/labels
    assert rig.client.diagnostic("cameras") == "head, wrist"
    for cam in CAMERAS:
        rig.grows(f"{cam}/frames")
    assert rig.counter("frames") >= rig.counter("head/frames") + rig.counter("wrist/frames") - 2


def test_an_unknown_camera_is_refused_and_nothing_is_stored(rig):
    before = list(rig.client.listing().concept_ids)
    res = rig.client.teach(name="elbow thing", base_class="mug", num_frames=2, camera="elbow")
    assert not res.success
    assert "no camera 'elbow' here: the cameras are head, wrist" in res.message
    assert list(rig.client.listing().concept_ids) == before
    assert rig.node.poll() is None


def test_a_teach_from_the_wrist_cameras_frames_is_known_to_both_cameras(rig):
    """Taught from the wrist camera's captured frames and its teach masks; the one store's
    concept is published for both cameras, present only where it is in view."""
    res = rig.client.teach(name="my mug", base_class="mug", num_frames=3, camera="wrist")
    assert res.success, res.message
    assert res.shots_used == 3 and res.concept_id == "my_mug"
    assert "my_mug" in rig.client.listing().concept_ids
    rig.wait(lambda: rig.masks["head"] and rig.masks["wrist"], 60, "both cameras' masks")
    rig.wait(lambda: _mine_present(rig, "wrist"), 60, "my mug present in the wrist camera")
    seen = np.frombuffer(rig.masks["wrist"][-1].data, np.uint8)
    assert seen.any()
    head = _mine(rig, "head")
    assert head is not None and not head.present and head.area == 0
    assert not np.frombuffer(rig.masks["head"][-1].data, np.uint8).any()


def _mine(rig: Rig, cam: str) -> object | None:
    """My mug's entry in the camera's newest ObjectArray; None before one lists it (a frame
    decoded before the teach)."""
    newest = rig.objects[cam][-1].objects if rig.objects[cam] else []
    return next((o for o in newest if o.concept_id == "my_mug"), None)


def _mine_present(rig: Rig, cam: str) -> bool:
    mine = _mine(rig, cam)
    return mine is not None and mine.present


def test_a_bad_frame_on_one_camera_is_refused_alone_and_the_other_keeps_flowing(rig):
    rig.control.write_text("bad wrist")
    try:
        rig.wait(lambda: "frame refused on camera wrist" in rig.client.diagnostic(
            "wrist/last_error"), 60, "the wrist camera's refusal in diagnostics")
        assert "no_such_encoding" in rig.client.diagnostic("wrist/last_error")
        assert rig.client.diagnostic("head/last_error") == ""
        head = len(rig.labels["head"])
        rig.wait(lambda: len(rig.labels["head"]) >= head + 5, 60, "head labels")
        assert rig.node.poll() is None
    finally:
        rig.control.write_text("normal")
    wrist = len(rig.labels["wrist"])
    rig.wait(lambda: len(rig.labels["wrist"]) >= wrist + 3, 60, "wrist labels again")


def test_batch_cameras_always_batches_and_never_does_not(rig):
    assert rig.client.diagnostic("batch_cameras") == "true"
    rig.grows("batched_frames", by=4)
    assert rig.client.set("batch_cameras", "never").successful
    try:
        rig.wait(lambda: rig.client.diagnostic("batch_cameras") == "false", 30)
        rig.grows("frames", by=2)  # a frame taken before the change may still land
        batched = rig.counter("batched_frames")
        rig.grows("frames", by=8)
        assert rig.counter("batched_frames") == batched
    finally:
        assert rig.client.set("batch_cameras", "auto").successful  # the CPU: off
    rig.wait(lambda: rig.client.diagnostic("batch_cameras") == "false", 30)
    assert not rig.client.set("batch_cameras", "sometimes").successful


def test_compressed_frames_and_a_qos_change_at_run_time_reach_every_camera(rig):
    """image_transport and the image QoS apply to every camera, at run time: switched to
    compressed, each camera reads <its image topic>/compressed (the wrist's under its remapped
    topic, /rig/wrist/color/compressed); a reliable subscription matches no best-effort camera,
    so both stop; back to best effort, both flow again."""
    try:
        assert rig.client.set("image_transport", "compressed").successful
        rig.control.write_text("compressed")  # the cameras now send JPEG frames only
        for cam in CAMERAS:
            rig.grows(f"{cam}/frames", by=3)
        assert rig.client.set("image_qos_reliability", "reliable").successful
        assert rig.quiet(12)  # 12 frames of each camera, none of them segmented
        assert rig.client.set("image_qos_reliability", "best_effort").successful
        for cam in CAMERAS:
            rig.grows(f"{cam}/frames", by=3)
    finally:
        assert rig.client.set("image_qos_reliability", "best_effort").successful
        assert rig.client.set("image_transport", "raw").successful
        rig.control.write_text("normal")
    for cam in CAMERAS:
        rig.grows(f"{cam}/frames", by=3)


def test_depth_on_one_camera_gives_it_3d_and_the_other_flows_without(rig):
    """use_depth applies to every camera, each pairing its frames with its own depth: the
    wrist camera's my mug gets its 3D from the wrist's depth and camera_info (its centroid at
    the exact depth's median over my mug), while the head camera, which has no depth, goes on
    without 3D and says why in its diagnostics."""
    if "my_mug" not in rig.client.listing().concept_ids:
        res = rig.client.teach(name="my mug", base_class="mug", num_frames=3, camera="wrist")
        assert res.success, res.message
    _, _, mask, truth = scenes()
    z = float(np.median(truth.depth[mask]))
    rig.control.write_text("depth")
    try:
        assert rig.client.set("use_depth", True).successful
        rig.wait(lambda: _mine_present(rig, "wrist") and _mine(rig, "wrist").has_3d, 60,
                 "my mug's 3D in the wrist camera")
        mine = _mine(rig, "wrist")
        assert mine.present and abs(mine.centroid.z - z) < 0.05 * z, (mine.centroid, z)
        head = len(rig.objects["head"])
        rig.wait(lambda: len(rig.objects["head"]) >= head + 5, 60, "head's objects")
        assert not any(o.has_3d for msg in rig.objects["head"][head:] for o in msg.objects)
        rig.wait(lambda: "no depth image received" in rig.client.diagnostic("head/last_error"),
                 30, "the head camera to say why it has no 3D")
    finally:
        assert rig.client.set("use_depth", False).successful
        rig.control.write_text("normal")


def test_cameras_is_read_at_configure_and_a_new_list_takes_effect_there(rig):
    """Refused while configured; set while unconfigured, the next configure serves it."""
    refused = rig.client.set("cameras", ["head"])
    assert not refused.successful and "read at configure" in refused.reason
    for step in ("deactivate", "cleanup"):
        assert rig.client.transition(step), step
    assert not rig.client.set("cameras", ["head", "head"]).successful
    assert rig.client.set("cameras", ["head"]).successful
    for step in ("configure", "activate"):
        assert rig.client.transition(step), step
    rig.wait(lambda: rig.client.diagnostic("cameras") == "head", 60)
    head, wrist = len(rig.labels["head"]), len(rig.labels["wrist"])
    rig.wait(lambda: len(rig.labels["head"]) >= head + 5, 60, "head labels")
    assert len(rig.labels["wrist"]) <= wrist + 1  # one frame may have been in flight
    assert "wrist/frames" not in {kv.key for kv in rig.client.diagnostics[-1].status[0].values}
