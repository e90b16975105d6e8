"""The test process's side of the node tests: a client node that subscribes like a grasp
planner and calls services, lifecycle transitions and parameters like a user. The node and
the camera are separate processes (real DDS on loopback, a private domain per test module).
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import rclpy
from _waiting import wait_until
from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.parameter_client import AsyncParameterClient
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image

from povss_interfaces.msg import ClassMap
from povss_interfaces.srv import ForgetConcept, ListConcepts, TeachConcept
from povss_lab.spawn import node_command, private_domain_id, write_params

ROOT = Path(__file__).resolve().parents[1]
VOCAB = ["person", "bottle", "chair"]
LATCHED = QoSProfile(
    depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL
)
TRANSITIONS = {
    "configure": Transition.TRANSITION_CONFIGURE,
    "activate": Transition.TRANSITION_ACTIVATE,
    "deactivate": Transition.TRANSITION_DEACTIVATE,
    "cleanup": Transition.TRANSITION_CLEANUP,
}


def ros_env(domain: int | None = None) -> dict:
    """Loopback DDS in a private domain; also applied to this process (the client)."""
    domain = domain if domain is not None else private_domain_id()
    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               ROS_DOMAIN_ID=str(domain), PYTHONUNBUFFERED="1")
    os.environ.update(ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", ROS_DOMAIN_ID=str(domain))
    return env


def tiny_params(tmp: Path, **extra: object) -> Path:
    """A params file for the TINY SAN with random weights (plumbing, not recognition)."""
    values = {
        "allow_random_weights": "true",
        "variant": "tiny",
        "device": "cpu",
        "vocabulary": "[" + ", ".join(f'"{w}"' for w in VOCAB) + "]",
        "concept_store": f'"{tmp / "concepts"}"',
        "teach_iterations": 1500,
        "capture_buffer_size": 8,
        "teach_default_frames": 2,
        "teach_auto_min_score": 0.0,
        "teach_auto_dominance": 1.0,
        "diagnostics_period": 0.5,
    }
    values.update(extra)
    return write_params(tmp / "params.yaml", {k: str(v) for k, v in values.items()})


def start_node(params: Path, env: dict, ns: str, image: str = "/cam/image") -> subprocess.Popen:
    """The node as its own process, in namespace `ns`, reading `image` and its camera_info."""
    remaps = {"__ns": ns, "image": image, "camera_info": image.rsplit("/", 1)[0] + "/camera_info"}
    return subprocess.Popen(node_command(params, remaps), cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_camera(env: dict, topic: str = "/cam/image", *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, str(ROOT / "test" / "_image_publisher.py"), topic, "8", "600", *flags]
    return subprocess.Popen(cmd, cwd=ROOT, env=env)


def stop(*procs: subprocess.Popen) -> None:
    """SIGINT (as ros2 launch does), then wait; kill what hangs."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(2)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def end_session(client: Client, camera: subprocess.Popen, node: subprocess.Popen) -> None:
    """A test module's end: the client goes, then SIGINT to camera and node; the node must
    exit with status 0 and log no error or traceback (its shutdown is part of every test)."""
    client.close()
    rclpy.try_shutdown()
    stop(camera, node)
    log = node.stdout.read()
    assert node.returncode == 0, log[-3000:]
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]


class Client:
    """Subscribes to the node's outputs, calls its services, transitions and parameters."""

    def __init__(self, ns: str, name: str = "test_client") -> None:
        self.ns, self.name = ns, f"{ns}/povss"
        self.node = rclpy.create_node(name)
        self.labels: list[Image] = []
        self.class_maps: list[ClassMap] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.camera_infos: list[CameraInfo] = []
        self.reviews: list[Image] = []
        self.masks: dict[str, list[Image]] = {}
        sub = self.node.create_subscription
        sub(Image, f"{self.name}/labels", self.labels.append, 10)
        sub(ClassMap, f"{self.name}/class_map", self.class_maps.append, LATCHED)
        sub(Image, f"{self.name}/teach_review", self.reviews.append, LATCHED)
        sub(CameraInfo, f"{self.name}/camera_info", self.camera_infos.append, 10)
        sub(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.teach_cli = self.node.create_client(TeachConcept, f"{ns}/teach_concept")
        self.forget_cli = self.node.create_client(ForgetConcept, f"{ns}/forget_concept")
        self.list_cli = self.node.create_client(ListConcepts, f"{ns}/list_concepts")
        self.change_cli = self.node.create_client(ChangeState, f"{self.name}/change_state")
        self.state_cli = self.node.create_client(GetState, f"{self.name}/get_state")
        self.params = AsyncParameterClient(self.node, self.name)
        self.raw_pub = self.node.create_publisher(Image, "/cam/image", 10)
        self.executor = rclpy.executors.MultiThreadedExecutor(num_threads=2)
        self.executor.add_node(self.node)
        self._spin = threading.Thread(target=self.executor.spin, daemon=True)
        self._spin.start()

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        # "node: task", the node's name with or without its leading slash
        if msg.status and msg.status[0].name.lstrip("/").startswith(f"{self.name[1:]}:"):
            self.diagnostics.append(msg)

    def watch_camera(self, topic: str = "/cam/image") -> None:
        """Record the stamps (sec) of the camera's frames as this client receives them."""
        self.camera_stamps: list[int] = []
        self.node.create_subscription(
            Image, topic, lambda m: self.camera_stamps.append(m.header.stamp.sec),
            qos_profile_sensor_data)

    def quiet(self, frames: int = 12, timeout: float = 30.0) -> bool:
        """True if the node publishes labels for none of the camera's next `frames` frames
        (needs `watch_camera`). The window is the camera's frames, awaited with a bound, not
        a span of time: a stalled camera fails the wait instead of passing as quiet. Labels
        of frames the node took before the call (up to two frames ahead of this client) may
        still land."""
        self.wait_for(lambda: self.camera_stamps, timeout, what="a camera frame")
        start = self.camera_stamps[-1]
        self.wait_for(lambda: self.camera_stamps[-1] >= start + frames, timeout,
                      what=f"{frames} more camera frames")
        return not any(m.header.stamp.sec > start + 2 for m in self.labels)

    def watch_mask(self, concept_id: str) -> None:
        self.masks[concept_id] = []
        self.node.create_subscription(
            Image, f"{self.name}/concepts/{concept_id}/mask", self.masks[concept_id].append, 10
        )

    def wait_for(self, predicate, timeout: float, proc=None, what: str = "") -> None:  # noqa: ANN001
        """`_waiting.wait_until`; if the node process `proc` ends first, fail with its log."""
        try:
            wait_until(predicate, timeout, what, proc)
        except AssertionError as exc:
            if proc is not None and proc.poll() is not None:
                raise AssertionError(f"node exited early:\n{proc.stdout.read()[-3000:]}") from exc
            raise

    def call(self, client, request, timeout: float = 120.0):  # noqa: ANN001, ANN201
        assert client.wait_for_service(timeout_sec=30.0), "service not available"
        future = client.call_async(request)
        self.wait_for(future.done, timeout)
        return future.result()

    def teach(self, **fields: object) -> TeachConcept.Response:
        req = TeachConcept.Request()
        for k, v in fields.items():
            setattr(req, k, v)
        return self.call(self.teach_cli, req)

    def teach_async(self, **fields: object):  # noqa: ANN201 - rclpy Future
        assert self.teach_cli.wait_for_service(timeout_sec=30.0)
        return self.teach_cli.call_async(TeachConcept.Request(**fields))

    def forget(self, name: str) -> ForgetConcept.Response:
        return self.call(self.forget_cli, ForgetConcept.Request(name=name))

    def listing(self) -> ListConcepts.Response:
        return self.call(self.list_cli, ListConcepts.Request())

    def state(self) -> str:
        return self.call(self.state_cli, GetState.Request()).current_state.label

    def transition(self, name: str) -> bool:
        """configure | activate | deactivate | cleanup | shutdown (from any primary state)."""
        req = ChangeState.Request()
        if name == "shutdown":
            req.transition.label = "shutdown"
        else:
            req.transition.id = TRANSITIONS[name]
        return self.call(self.change_cli, req).success

    def set(self, name: str, value: object):  # noqa: ANN201 - SetParametersResult
        assert self.params.wait_for_services(timeout_sec=30.0)
        future = self.params.set_parameters([Parameter(name, value=value)])
        self.wait_for(future.done, 60)
        return future.result().results[0]

    def get(self, name: str) -> object:
        future = self.params.get_parameters([name])
        self.wait_for(future.done, 30)
        return parameter_value_to_python(future.result().values[0])

    def diagnostic(self, key: str) -> str:
        """The newest diagnostics' value for `key`; "" before any diagnostics arrived."""
        if not self.diagnostics:
            return ""
        values = {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values}
        return values.get(key, "")

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()


def labels_array(msg: Image) -> np.ndarray:
    return np.frombuffer(msg.data, np.uint16).reshape(msg.height, msg.width)
