"""Tests for the povss_interfaces services (TeachConcept, ForgetConcept, ListConcepts).

Three kinds of checks:
- the .srv files declare exactly the fields the node is written against, and document every
  field with a comment (pure text parsing, runs without ROS);
- the generated Python types (built by scripts/build_interfaces.sh) have those fields with
  those types and accept values of every field, a sensor_msgs/Image included;
- a real ListConcepts (and TeachConcept) service round trip between two rclpy nodes in one
  process, over loopback only and on a private ROS_DOMAIN_ID.
Everything that needs the generated types skips when povss_interfaces does not import.
"""

import array
import importlib
import random
import re
import time
from pathlib import Path

import pytest

# rclpy's type-description code imports lark, which imports deprecated stdlib modules.
pytestmark = pytest.mark.filterwarnings("ignore:module 'sre_:DeprecationWarning")

SRV_DIR = Path(__file__).resolve().parents[1] / "povss_interfaces" / "srv"

# The contract: service -> (request fields, response fields), each field -> .srv type.
SPEC: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "TeachConcept": (
        {
            "name": "string",
            "base_class": "string",
            "num_frames": "uint32",
            "images": "sensor_msgs/Image[]",
            "masks": "sensor_msgs/Image[]",
            "boxes": "float32[]",
            "points": "float32[]",
            "overwrite": "bool",
            "negative_boxes": "float32[]",
            "negative_points": "float32[]",
            "negative_masks": "sensor_msgs/Image[]",
            "correct": "bool",
            "category": "bool",
            "camera": "string",
        },
        {
            "success": "bool",
            "message": "string",
            "concept_id": "string",
            "class_id": "uint16",
            "shots_used": "uint32",
            "negatives_used": "uint32",
            "frames_rejected": "uint32",
            "rejected_frames": "string[]",
            "training_seconds": "float32",
            "fit_iou": "float32",
        },
    ),
    "ForgetConcept": (
        {"name": "string"},
        {"success": "bool", "message": "string"},
    ),
    "ListConcepts": (
        {},
        {
            "concept_ids": "string[]",
            "names": "string[]",
            "base_classes": "string[]",
            "class_ids": "uint16[]",
            "shot_counts": "uint32[]",
        },
    ),
}

# How rosidl_generator_py names the .srv types in get_fields_and_field_types().
PY_TYPE = {
    "string": "string",
    "bool": "boolean",
    "uint16": "uint16",
    "uint32": "uint32",
    "float32": "float",
    "sensor_msgs/Image": "sensor_msgs/Image",
}


def _py_type(srv_type: str) -> str:
    if srv_type.endswith("[]"):
        return f"sequence<{PY_TYPE[srv_type[:-2]]}>"
    return PY_TYPE[srv_type]


# --------------------------------------------------------------------------------------------
# .srv text: fields and their documentation (no ROS needed)

FIELD_RE = re.compile(r"^(?P<type>[A-Za-z][\w/]*(?:\[\d*\]|\[<=\d+\])?)\s+(?P<name>[a-z]\w*)\b")


def _parse_srv(path: Path) -> list[list[tuple[str, str, str]]]:
    """Return [request fields, response fields], each field (type, name, its comment text).

    A field's comment is its trailing `# ...` and/or the block of comment lines directly
    above it (no blank line in between).
    """
    sections: list[list[tuple[str, str, str]]] = [[]]
    block: list[str] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line == "---":
            sections.append([])
            block = []
        elif not line:
            block = []
        elif line.startswith("#"):
            block.append(line.lstrip("#").strip())
        else:
            code, _, trailing = line.partition("#")
            m = FIELD_RE.match(code.strip())
            assert m, f"{path.name}: cannot parse line {raw!r}"
            doc = " ".join([*block, trailing.strip()]).strip()
            sections[-1].append((m["type"], m["name"], doc))
            block = []
    return sections


@pytest.mark.parametrize("srv", sorted(SPEC))
def test_srv_declares_contract_fields(srv: str) -> None:
    sections = _parse_srv(SRV_DIR / f"{srv}.srv")
    assert len(sections) == 2, f"{srv}.srv must have exactly one '---' separator"
    for got, want, part in zip(sections, SPEC[srv], ("request", "response")):
        assert {name: typ for typ, name, _ in got} == want, f"{srv} {part} fields"
        assert [name for _, name, _ in got] == list(want), f"{srv} {part} field order"


@pytest.mark.parametrize("srv", sorted(SPEC))
def test_srv_documents_every_field(srv: str) -> None:
    path = SRV_DIR / f"{srv}.srv"
    text = path.read_text(encoding="utf-8")
    assert text.lstrip().startswith("#"), f"{srv}.srv should start with a description"
    for section in _parse_srv(path):
        for typ, name, doc in section:
            assert len(doc) >= 20, f"{srv}.srv: field '{typ} {name}' has no (useful) comment"


# --------------------------------------------------------------------------------------------
# generated Python types


@pytest.fixture(scope="module")
def srv_mod():
    try:
        return importlib.import_module("povss_interfaces.srv")
    except ImportError as e:
        pytest.skip(
            f"povss_interfaces is not importable ({e}); build it first: "
            "scripts/build_interfaces.sh .venv  (or colcon build + source install/setup.bash)"
        )


def _image(width: int = 4, height: int = 3, encoding: str = "rgb8", fill: int = 7):
    from sensor_msgs.msg import Image

    channels = {"rgb8": 3, "bgr8": 3, "mono8": 1}[encoding]
    img = Image(check_fields=True)
    img.header.stamp.sec = 12
    img.header.stamp.nanosec = 345
    img.header.frame_id = "camera"
    img.width, img.height, img.encoding = width, height, encoding
    img.step = width * channels
    img.data = bytes([fill]) * (img.step * height)
    return img


@pytest.mark.ros
@pytest.mark.parametrize("srv", sorted(SPEC))
def test_generated_field_names_and_types(srv_mod, srv: str) -> None:
    cls = getattr(srv_mod, srv)
    for msg_cls, want in zip((cls.Request, cls.Response), SPEC[srv]):
        got = msg_cls.get_fields_and_field_types()
        assert got == {k: _py_type(v) for k, v in want.items()}, msg_cls.__name__


# Kilted's generated setters only type/range-check with check_fields=True (or the environment
# variable ROS_PYTHON_CHECK_FIELDS=1); otherwise a bad value only fails when serialized.


@pytest.mark.ros
def test_teach_concept_all_fields(srv_mod) -> None:
    req = srv_mod.TeachConcept.Request(check_fields=True)
    # defaults the node relies on: empty/zero = "use the node's default"
    assert (req.name, req.base_class, req.num_frames, req.overwrite) == ("", "", 0, False)
    assert list(req.images) == [] and list(req.masks) == []

    req.name = "Jürgens Tasse ☕"  # unicode must survive
    req.base_class = "mug"
    req.num_frames = 8
    req.images = [_image(), _image(fill=9)]
    req.masks = [_image(encoding="mono8", fill=255), _image(encoding="mono8", fill=0)]
    req.overwrite = True
    assert req.name == "Jürgens Tasse ☕"
    assert req.num_frames == 8 and req.overwrite is True
    assert len(req.images) == 2 and req.images[1].data[0] == 9
    assert req.images[0].header.frame_id == "camera" and req.images[0].encoding == "rgb8"
    assert req.masks[0].encoding == "mono8" and len(req.masks[0].data) == 12
    with pytest.raises((AssertionError, TypeError)):
        req.images = [42]  # only sensor_msgs/Image allowed

    res = srv_mod.TeachConcept.Response(check_fields=True)
    assert (res.success, res.message, res.concept_id, res.class_id) == (False, "", "", 0)
    res.success = True
    res.message = "taught 'my mug' from 2 shots; frame 3 rejected: base class ambiguous"
    res.concept_id = "my_mug"
    res.class_id = 65534  # uint16: up to 65535 (65535 = unlabeled in ~/labels)
    res.shots_used = 2
    res.frames_rejected = 1
    res.training_seconds = 1.5
    res.fit_iou = 0.875
    assert (res.class_id, res.shots_used, res.frames_rejected) == (65534, 2, 1)
    assert res.training_seconds == pytest.approx(1.5) and res.fit_iou == pytest.approx(0.875)
    assert isinstance(res.fit_iou, float) and isinstance(res.training_seconds, float)
    with pytest.raises(AssertionError):
        res.class_id = 65536  # out of uint16 range


@pytest.mark.ros
def test_forget_concept_all_fields(srv_mod) -> None:
    req = srv_mod.ForgetConcept.Request(name="my mug", check_fields=True)
    assert req.name == "my mug"
    res = srv_mod.ForgetConcept.Response(success=True, message="forgot 'my mug'", check_fields=True)
    assert res.success is True and res.message == "forgot 'my mug'"


@pytest.mark.ros
def test_list_concepts_all_fields(srv_mod) -> None:
    assert srv_mod.ListConcepts.Request.get_fields_and_field_types() == {}
    srv_mod.ListConcepts.Request(check_fields=True)
    res = srv_mod.ListConcepts.Response(check_fields=True)
    assert list(res.concept_ids) == [] and list(res.class_ids) == []
    res.concept_ids = ["my_mug", "tasse"]
    res.names = ["my mug", "Tasse ☕"]
    res.base_classes = ["mug", "cup"]
    res.class_ids = [171, 172]
    res.shot_counts = [5, 3]
    assert res.names[1] == "Tasse ☕"
    assert isinstance(res.class_ids, array.array) and res.class_ids.typecode == "H"
    assert isinstance(res.shot_counts, array.array) and res.shot_counts.typecode == "I"
    assert list(res.class_ids) == [171, 172] and list(res.shot_counts) == [5, 3]


# --------------------------------------------------------------------------------------------
# a real service round trip


@pytest.fixture
def ros_context(srv_mod, monkeypatch):
    """A private rclpy context on loopback only, on a random ROS_DOMAIN_ID in 1..100."""
    rclpy = pytest.importorskip("rclpy", reason="rclpy is not importable")
    domain_id = random.SystemRandom().randint(1, 100)
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain_id))
    monkeypatch.delenv("ROS_LOCALHOST_ONLY", raising=False)
    monkeypatch.delenv("ROS_STATIC_PEERS", raising=False)
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield rclpy, context
    finally:
        context.try_shutdown()


def _call(executor, client, request, timeout_s: float = 10.0):
    assert client.wait_for_service(timeout_sec=timeout_s), "service never appeared"
    future = client.call_async(request)
    executor.spin_until_future_complete(future, timeout_sec=timeout_s)
    assert future.done(), f"no response within {timeout_s} s"
    return future.result()


@pytest.mark.ros
def test_service_round_trip(srv_mod, ros_context) -> None:
    rclpy, context = ros_context
    from rclpy.executors import SingleThreadedExecutor

    concepts = {
        "my_mug": ("my mug", "mug", 171, 5),
        "tasse": ("Jürgens Tasse ☕", "cup", 172, 3),
    }
    seen_images = []

    def on_list(request, response):
        for cid, (name, base, class_id, shots) in concepts.items():
            response.concept_ids.append(cid)
            response.names.append(name)
            response.base_classes.append(base)
            response.class_ids.append(class_id)
            response.shot_counts.append(shots)
        return response

    def on_teach(request, response):
        seen_images.extend(request.images)
        response.success = True
        response.message = f"taught {request.name!r}"
        response.concept_id = "tasse"
        response.class_id = 172
        response.shots_used = len(request.images)
        response.training_seconds = 0.25
        response.fit_iou = 0.5
        return response

    server = rclpy.create_node("povss_test_server", context=context)
    client_node = rclpy.create_node("povss_test_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        server.create_service(srv_mod.ListConcepts, "list_concepts", on_list)
        server.create_service(srv_mod.TeachConcept, "teach_concept", on_teach)
        list_client = client_node.create_client(srv_mod.ListConcepts, "list_concepts")
        teach_client = client_node.create_client(srv_mod.TeachConcept, "teach_concept")
        executor.add_node(server)
        executor.add_node(client_node)

        t0 = time.monotonic()
        res = _call(executor, list_client, srv_mod.ListConcepts.Request())
        assert time.monotonic() - t0 < 15.0
        assert list(res.concept_ids) == list(concepts)
        assert list(res.names) == [v[0] for v in concepts.values()]
        assert list(res.base_classes) == [v[1] for v in concepts.values()]
        assert list(res.class_ids) == [v[2] for v in concepts.values()]
        assert list(res.shot_counts) == [v[3] for v in concepts.values()]

        req = srv_mod.TeachConcept.Request(name="Jürgens Tasse ☕", base_class="cup")
        req.images = [_image(width=640, height=480, fill=3)]
        req.masks = [_image(width=640, height=480, encoding="mono8", fill=255)]
        res = _call(executor, teach_client, req)
        assert res.success and res.concept_id == "tasse" and res.class_id == 172
        assert res.shots_used == 1 and res.fit_iou == pytest.approx(0.5)
        assert res.message == "taught 'Jürgens Tasse ☕'"
        (img,) = seen_images
        assert (img.width, img.height, img.encoding) == (640, 480, "rgb8")
        assert img.header.frame_id == "camera" and img.header.stamp.nanosec == 345
        assert len(img.data) == 640 * 480 * 3 and img.data[0] == 3
    finally:
        executor.shutdown()
        client_node.destroy_node()
        server.destroy_node()


@pytest.mark.ros
def test_a_nul_in_a_name_is_cut_by_the_transport_where_no_server_can_see_it(
        srv_mod, ros_context) -> None:
    """Battery failure (c), and why the node cannot refuse it: rosidl copies a Python str into
    its C message with strlen, so "my\\0cup" is serialized exactly as "my" and a server gets
    "my", with no trace of the rest. Only a client can refuse a NUL, before sending; the
    project's one name check (`canonical_name`) refuses it as a control character."""
    rclpy, context = ros_context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.serialization import serialize_message

    from povss_ros.personal.names import canonical_name

    cut = srv_mod.ForgetConcept.Request(name="my\0cup")
    assert cut.name == "my\0cup"  # the Python message still holds it...
    assert serialize_message(cut) == serialize_message(srv_mod.ForgetConcept.Request(name="my"))
    with pytest.raises(ValueError, match="control character .U\\+0000"):
        canonical_name("my\0cup")

    seen = []

    def on_forget(request, response):
        seen.append(request.name)
        response.success, response.message = True, f"forgot {request.name!r}"
        return response

    server = rclpy.create_node("povss_test_nul_server", context=context)
    client_node = rclpy.create_node("povss_test_nul_client", context=context)
    executor = SingleThreadedExecutor(context=context)
    try:
        server.create_service(srv_mod.ForgetConcept, "forget_concept", on_forget)
        client = client_node.create_client(srv_mod.ForgetConcept, "forget_concept")
        executor.add_node(server)
        executor.add_node(client_node)
        res = _call(executor, client, cut)
        assert seen == ["my"] and res.message == "forgot 'my'"  # ...the server never does
        res = _call(executor, client, srv_mod.ForgetConcept.Request(name="Jürgens Tasse ☕"))
        assert seen[-1] == "Jürgens Tasse ☕"  # other text travels whole
    finally:
        executor.shutdown()
        client_node.destroy_node()
        server.destroy_node()
