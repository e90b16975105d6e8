"""Grasp-ready outputs end to end over real DDS: an RGB-D camera, the node, a subscriber.

The camera (test/_rgbd_camera.py) renders a synthetic table with "my mug" and its exact depth;
the node runs the committed small SAN with `use_depth`; this process teaches my mug and
subscribes like a grasp planner. Checked: my mug's 3D centroid against the synthetic truth,
its absence when it leaves the view, stamps equal to the colour frame's, markers and points,
every object parameter's effect, and each bad depth input answered with a clear reason while
frames keep flowing.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.msg", reason="povss_interfaces not built (make setup)")

from _ros_client import ROOT, Client, end_session, ros_env  # noqa: E402
from sensor_msgs.msg import PointCloud2  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from povss_interfaces.msg import ObjectArray  # noqa: E402
from povss_lab.spawn import node_command, write_params  # noqa: E402
from povss_lab.synthetic.world import World, sample_scene  # noqa: E402
from povss_ros.personal.identity import MIN_SIMILARITY, STAY_SIMILARITY  # noqa: E402
from povss_ros.ros.conversions import array_to_image  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
NS = "/od"
MODEL = ROOT / "models" / "syn_small.safetensors"
WORDS = ("wall", "floor", "table", "mug", "bottle", "ball", "box", "book", "can", "plate",
         "bowl", "phone", "banana", "apple", "scissors", "spoon", "vase")


class World3D:
    """The processes and what the client has seen."""

    def __init__(self, tmp: Path) -> None:
        self.control, self.truth_path = tmp / "control", tmp / "truth.json"
        self.words, self.tags = "with mm noinfo", 0
        self.control.write_text(self.words)
        env = ros_env()  # the camera imports the lab from this checkout
        env["PYTHONPATH"] = f"{ROOT}:{env['PYTHONPATH']}" if env.get("PYTHONPATH") else str(ROOT)
        params = write_params(tmp / "params.yaml", {
            "weights": f'"{MODEL}"', "device": "cpu", "concept_store": f'"{tmp / "concepts"}"',
            "use_depth": "true", "diagnostics_period": "0.3"})
        remaps = {"__ns": NS, "image": "/cam/image", "camera_info": "/cam/camera_info",
                  "depth": "/cam/depth"}
        self.node = subprocess.Popen(node_command(params, remaps), cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.camera = subprocess.Popen(
            [sys.executable, str(ROOT / "test" / "_rgbd_camera.py"), str(self.control),
             str(self.truth_path), "6"], cwd=ROOT, env=env)
        rclpy.init()
        self.client = Client(NS)
        self.objects: list[ObjectArray] = []
        self.markers: list[MarkerArray] = []
        self.points: list[PointCloud2] = []
        self.changed: dict[str, object] = {}  # parameter -> its value before a test set it
        sub = self.client.node.create_subscription
        sub(ObjectArray, f"{NS}/povss/objects", self.objects.append, 10)

    def start(self) -> None:
        """Outputs flow; what the node said before any camera_info and before any teach is
        kept for the tests of those states (`first`, `untaught`), whichever runs first."""
        client = self.client
        client.wait_for(lambda: len(self.objects) >= 2 and client.diagnostics, 90, self.node)
        with contextlib.suppress(AssertionError):  # the test of this state says what failed
            client.wait_for(lambda: "camera_info" in client.diagnostic("last_error"), 30)
        self.first = SimpleNamespace(objects=self.newest(), last_error=client.diagnostic(
            "last_error"), frames_without_3d=int(client.diagnostic("frames_without_3d") or 0))
        self.set_camera("with mm")
        with contextlib.suppress(AssertionError):
            client.wait_for(lambda: any(o.has_3d for o in self.newest().objects), 30)
        self.untaught = self.newest()

    def set_camera(self, words: str) -> None:
        """Switch the camera (a new tag makes even the same words a switch) and wait until
        the node has published the objects of a frame sent after it."""
        self.words, self.tags = words, self.tags + 1
        line = f"{words} # {self.tags}"
        new = self.control.with_name(self.control.name + ".new")
        new.write_text(line)
        new.replace(self.control)  # the camera never reads it half-written
        sent = self.control.with_name(self.control.name + ".sent")

        def first_frame() -> int | None:
            text = sent.read_text() if sent.exists() else ""
            stamp, _, said = text.partition(" ")
            return int(stamp) if said == line else None

        self.client.wait_for(lambda: first_frame() is not None, 30, self.node,
                             f"the camera to send frames as {words!r}")
        first = first_frame()
        self.client.wait_for(lambda: self.newest().header.stamp.sec >= first, 60, self.node,
                             f"the objects of a frame sent as {words!r}")

    def set(self, name: str, value: object):  # noqa: ANN201 - SetParametersResult
        """Set a node parameter; the `fresh` fixture sets it back after the test."""
        if name not in self.changed:
            self.changed[name] = self.client.get(name)
        return self.client.set(name, value)

    def reset(self) -> None:
        """The state every test starts from: parameters as configured, the camera showing
        my mug with good depth, and objects with 3D."""
        # newest change undone first, as a stack: a pair set window-then-count (each valid
        # at its step) goes back count-then-window, valid at each step too, even when the
        # test stopped between them
        for name, value in reversed(self.changed.items()):
            assert self.client.set(name, value).successful, name
        self.changed = {}
        if self.words != "with mm":
            self.set_camera("with mm")
        self.client.wait_for(lambda: any(o.has_3d for o in self.newest().objects), 30,
                             self.node)

    def newest(self) -> ObjectArray:
        return self.objects[-1]

    def mine(self) -> object:
        return next(o for o in self.newest().objects if o.concept_id == "my_mug")

    def truth(self) -> dict:
        return json.loads(self.truth_path.read_text())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World3D(tmp_path_factory.mktemp("objects3d"))
    try:
        w.start()
        yield w
    finally:
        end_session(w.client, w.camera, w.node)


@pytest.fixture(autouse=True)
def fresh(world):
    """Each test starts from the same state, whatever ran before it, and leaves it."""
    world.reset()
    yield
    world.reset()


def teach_my_mug(world, name: str = "my mug", **fields: object) -> object:  # noqa: ANN001
    """Teach `name` (base word mug) from five frames of my mug with exact masks."""
    w = World(0)
    mine = w.identity("mug", 0)
    others = [i for i in w.identities("mug") if i != mine]
    rng = np.random.default_rng(5)
    shots = [sample_scene(rng, w, [mine], size=(320, 240), exclude=others) for _ in range(5)]
    return world.client.teach(
        name=name, base_class="mug", **fields,
        images=[array_to_image(s.image, "rgb8") for s in shots],
        masks=[array_to_image(s.mask(mine).astype(np.uint8) * 255, "mono8") for s in shots])


@pytest.fixture(scope="module")
def taught(world):
    """My mug, taught once for the tests that need it; the teach's answer."""
    res = teach_my_mug(world)
    assert res.success, res.message
    return res


@pytest.fixture()
def my_mug(world, taught):
    """The taught mug in view, with 3D."""
    world.client.wait_for(lambda: any(o.concept_id == "my_mug" and o.present and o.has_3d
                                      for o in world.newest().objects), 60, world.node)
    return taught


def test_depth_without_camera_info_keeps_frames_flowing_and_says_why(world):
    """First, before any camera_info: objects without 3D, a clear reason, frames flow; then
    3D once camera_info comes."""
    first = world.first
    assert "camera_info" in first.last_error, first.last_error
    assert not any(o.has_3d for o in first.objects.objects)
    assert first.frames_without_3d > 0
    assert any(o.has_3d for o in world.newest().objects)


def test_objects_are_things_with_3d_and_no_surfaces(world):
    msg = world.untaught  # before any concept was taught: things only
    names = {o.name for o in msg.objects}
    assert names and not names & {"wall", "floor", "table"}
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.sec >= 1000
    assert any(o.has_3d for o in msg.objects)
    for o in msg.objects:
        assert o.present and not o.concept_id and o.area > 0 and o.box.width > 0
        if o.has_3d:
            assert 0.2 < o.centroid.z < 5.0 and o.points > 0
            assert o.box_min.z <= o.centroid.z <= o.box_max.z


def test_my_mug_in_3d_at_its_true_place_then_absent_when_it_leaves(world, my_mug):
    res = my_mug
    assert res.success, res.message
    client = world.client
    client.watch_mask("my_mug")
    cloud: list[PointCloud2] = []
    client.node.create_subscription(PointCloud2, f"{NS}/povss/concepts/my_mug/points",
                                    cloud.append, 10)
    client.wait_for(lambda: any(o.concept_id == "my_mug" and o.present and o.has_3d
                                for o in world.newest().objects), 60, world.node)
    mine, truth = world.mine(), world.truth()
    error = np.linalg.norm(np.subtract([mine.centroid.x, mine.centroid.y, mine.centroid.z],
                                       truth["centroid"]))
    assert error < 0.03, (error, mine.centroid, truth)  # 3 cm at about 0.8 m
    assert mine.class_id >= 32768 and mine.name == "my mug" and mine.score > 0
    stamp = world.newest().header.stamp
    labels = {(m.header.stamp.sec, m.header.stamp.nanosec) for m in client.labels}
    assert (stamp.sec, stamp.nanosec) in labels  # the same frame's labels
    client.wait_for(lambda: cloud and cloud[-1].width > 0, 30)
    pts = np.frombuffer(bytes(cloud[-1].data), np.float32).reshape(-1, 3)
    assert cloud[-1].header.frame_id == "camera_optical"
    assert np.abs(np.median(pts, axis=0) - truth["centroid"]).max() < 0.03
    world.set_camera("without mm")
    world.client.wait_for(lambda: not world.mine().present, 30, world.node)
    assert not world.mine().has_3d
    client.wait_for(lambda: client.masks["my_mug"]
                    and not any(bytes(client.masks["my_mug"][-1].data)), 30)
    client.wait_for(lambda: cloud[-1].width == 0, 30)
    world.set_camera("with mm")
    world.client.wait_for(lambda: world.mine().present, 30, world.node)


def test_the_example_subscriber_in_docs_finds_my_mug(world, my_mug):
    remap = f"/povss/objects:={NS}/povss/objects"
    out = subprocess.run([sys.executable, str(ROOT / "docs" / "grasp_subscriber.py"), "my_mug",
                          "--count", "5", "--ros-args", "-r", remap],
                         cwd=ROOT, capture_output=True, text=True,
                         timeout=60)  # ros_env() put this module's private domain in environ
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    # Every frame finds my mug in 3D: each colour frame's depth image comes with it.
    assert len(lines) == 5 and all(" my_mug at " in line for line in lines), out.stdout
    z = float(lines[-1].split(" at ")[1].split()[2])
    assert abs(z - world.truth()["centroid"][2]) < 0.03


def test_markers_show_a_box_and_a_name_per_object_with_3d(world, my_mug):
    markers: list[MarkerArray] = []
    world.client.node.create_subscription(MarkerArray, f"{NS}/povss/markers", markers.append, 10)
    world.client.wait_for(lambda: markers and len(markers[-1].markers) > 1, 30)
    m = markers[-1].markers
    assert m[0].action == Marker.DELETEALL
    boxes = [x for x in m if x.type == Marker.CUBE]
    names = [x.text for x in m if x.type == Marker.TEXT_VIEW_FACING]
    assert "my mug" in names and len(boxes) == len(names)
    assert all(x.header.frame_id == "camera_optical" and x.scale.x > 0 for x in boxes)


def test_presence_and_instance_parameters_take_effect(world, my_mug):
    client = world.client
    assert world.set("objects_identity_min_similarity", 1.0).successful  # nothing is that like
    client.wait_for(lambda: not world.mine().present, 30, world.node)
    assert world.set("objects_identity_min_similarity", MIN_SIMILARITY).successful
    client.wait_for(lambda: world.mine().present, 30, world.node)
    # Staying needs more than any region has: my mug comes into view (presence starts afresh
    # on the change, and it enters at the min similarity), then drops out again.
    assert world.set("objects_identity_stay_similarity", 1.0).successful
    client.wait_for(lambda: world.mine().present, 30, world.node)
    client.wait_for(lambda: not world.mine().present, 30, world.node)
    assert world.set("objects_identity_stay_similarity", STAY_SIMILARITY).successful
    client.wait_for(lambda: world.mine().present, 30, world.node)
    assert world.set("objects_presence_min_area", 1.0).successful
    client.wait_for(lambda: not world.mine().present, 30, world.node)
    assert world.set("objects_presence_min_area", 0.003).successful
    client.wait_for(lambda: world.mine().present, 30, world.node)
    assert world.set("objects_min_area", 1.0).successful
    client.wait_for(lambda: all(o.concept_id for o in world.newest().objects), 30)
    assert world.set("objects_min_area", 0.001).successful
    assert world.set("objects_stuff_words", list(WORDS)).successful
    client.wait_for(lambda: all(o.concept_id for o in world.newest().objects), 30)
    assert world.set("objects_stuff_words", ["auto"]).successful
    client.wait_for(lambda: any(not o.concept_id for o in world.newest().objects), 30)


def test_the_score_gate_takes_effect_on_a_concept_taught_as_a_category(world, my_mug):
    """A category is not decided by identity: its presence is the SAN score's gate. My mug
    is taught again as a category for this test, then as one object again."""
    client = world.client
    res = teach_my_mug(world, overwrite=True, category=True)
    assert res.success, res.message
    try:
        assert world.set("objects_presence_min_score", 0.0).successful
        client.wait_for(lambda: world.mine().present, 30, world.node)
        assert world.set("objects_presence_min_score", 100.0).successful
        client.wait_for(lambda: not world.mine().present, 30, world.node)
    finally:
        res = teach_my_mug(world, overwrite=True)
        assert res.success, res.message
    client.wait_for(lambda: world.mine().present, 30, world.node)  # one object: not its gate


def test_presence_over_frames_parameters_take_effect(world, my_mug):
    """Entering takes as many sightings as asked, leaving as many misses; a count over its
    window is refused. Windows are set before counts and counts put back first, so every
    combination set is valid."""
    client = world.client
    refused = world.set("objects_presence_enter", 2)  # over its window of 1
    assert not refused.successful and "presence enter" in refused.reason, refused.reason
    assert world.set("objects_presence_enter_window", 1000).successful
    assert world.set("objects_presence_enter", 1000).successful  # the filter starts afresh
    client.wait_for(lambda: not world.mine().present, 30, world.node)
    assert world.set("objects_presence_enter", 1).successful
    assert world.set("objects_presence_enter_window", 1).successful
    client.wait_for(lambda: world.mine().present, 30, world.node)
    assert world.set("objects_presence_leave_window", 1000).successful
    assert world.set("objects_presence_leave", 1000).successful
    # the filter started afresh: judge it on frames sent after that, not on one in flight
    world.set_camera(world.words)
    client.wait_for(lambda: world.mine().present, 30, world.node)
    world.set_camera("without")  # my mug gone: with 1000 misses to leave, it is held
    seen = len(world.objects)
    client.wait_for(lambda: len(world.objects) > seen + 5, 30, world.node)
    assert world.mine().present and world.mine().area == 0  # present, no region
    assert world.set("objects_presence_leave", 1).successful
    assert world.set("objects_presence_leave_window", 1).successful
    client.wait_for(lambda: not world.mine().present, 30, world.node)


def test_depth_encodings_and_a_half_resolution_depth_give_the_same_3d(world, my_mug):
    zs = {}
    for words in ("with m", "with mm half", "with mm"):
        world.set_camera(words)
        world.client.wait_for(lambda: world.mine().has_3d, 30, world.node)
        zs[words] = world.mine().centroid.z
    assert max(zs.values()) - min(zs.values()) < 0.01, zs


def test_sync_slop_and_use_depth_take_effect(world, my_mug):
    client = world.client
    world.set_camera("with mm offset=20")
    client.wait_for(lambda: "sync_slop" in client.diagnostic("last_error"), 30, world.node)
    assert not world.mine().has_3d and world.mine().present  # 2D still there
    assert world.set("sync_slop", 0.05).successful
    client.wait_for(lambda: world.mine().has_3d, 30, world.node)
    assert world.set("sync_slop", 0.0).successful
    world.set_camera("with mm")
    assert world.set("use_depth", False).successful
    client.wait_for(lambda: client.node.count_subscribers("/cam/depth") == 0, 10)
    world.set_camera("with mm")
    assert not any(o.has_3d for o in world.newest().objects) and world.mine().present
    assert world.set("use_depth", True).successful
    client.wait_for(lambda: world.mine().has_3d, 30, world.node)


def test_camera_matrix_takes_effect(world, my_mug):
    """The camera publishes K and no P (a raw image): with camera_matrix p, 3D says why not."""
    client = world.client
    assert world.set("camera_matrix", "p").successful
    client.wait_for(lambda: "P is all zero" in client.diagnostic("last_error"), 30, world.node)
    world.set_camera("with mm")
    assert not world.mine().has_3d and world.mine().present
    assert world.set("camera_matrix", "k").successful
    client.wait_for(lambda: world.mine().has_3d, 30, world.node)


@pytest.mark.parametrize(("words", "reason"), [
    ("with bgr8", "depth encoding 'bgr8' is not supported"),
    ("with mm wide", "aspect"),
    ("with mm zerok", "positive focal"),
])
def test_bad_depth_input_is_refused_with_its_reason_and_frames_keep_flowing(world, my_mug,
                                                                             words, reason):
    world.set_camera(words)
    world.client.wait_for(lambda: reason in world.client.diagnostic("last_error"), 30,
                          world.node)
    assert world.mine().present and not world.mine().has_3d
    count = len(world.client.labels)
    world.client.wait_for(lambda: len(world.client.labels) > count + 1, 30, world.node)
    world.set_camera("with mm")
    world.client.wait_for(lambda: world.mine().has_3d, 30, world.node)
