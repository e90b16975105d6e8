"""SAN must be the official architecture: key layout, block maths and shapes.

The key/shape lists of the official checkpoints (test/data/*.keys.json, read from the released
san_vit_b_16.pth and san_vit_large_14.pth) are the contract for loading them strictly;
open_clip's own CLIP implementation is the reference for the CLIP blocks we rewrote.
"""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from povss_ros.san.clip import MultiheadSelfAttention
from povss_ros.san.config import TINY, VIT_B16, VIT_L14_336, SANConfig
from povss_ros.san.model import SAN, build_san, resized_shape
from povss_ros.san.semantic import masks_to_image, semantic_scores

KEY_LISTS = Path(__file__).resolve().parent / "data"


def _shapes(cfg: SANConfig) -> dict[str, list[int]]:
    with torch.device("meta"):
        model = SAN(cfg)
    return {k: list(v.shape) for k, v in model.state_dict().items()}


@pytest.mark.parametrize(
    "cfg, keys_file",
    [(VIT_B16, "san_vit_b_16.keys.json"), (VIT_L14_336, "san_vit_large_14.keys.json")],
)
def test_state_dict_matches_official_key_list(cfg, keys_file):
    expected = json.loads((KEY_LISTS / keys_file).read_text())
    got = _shapes(cfg)
    assert sorted(set(expected) - set(got)) == [], "keys the model lacks"
    assert sorted(set(got) - set(expected)) == [], "keys the checkpoint lacks"
    bad = {k: (got[k], v) for k, v in expected.items() if got[k] != v}
    assert bad == {}


def test_official_vit_b16_parameter_count():
    with torch.device("meta"):
        model = SAN(VIT_B16)
    total = sum(p.numel() for p in model.parameters())
    assert 150e6 < total < 160e6  # the official checkpoint: about 158M


def test_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = MultiheadSelfAttention(64, 4)
    ref = torch.nn.MultiheadAttention(64, 4, batch_first=True)
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(2, 11, 64)
    bias = torch.randn(2 * 4, 11, 11)
    expected, _ = ref(x, x, x, attn_mask=bias, need_weights=False)
    got = ours(x, bias.view(2, 4, 11, 11))
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def open_clip_b16():
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None)
    return model.eval()


def test_text_tower_equals_open_clip(open_clip_b16):
    from povss_ros.san.text import tokenize

    ours = build_san(VIT_B16, seed=1)
    text_state = {
        k: v for k, v in open_clip_b16.state_dict().items() if not k.startswith("visual.")
    }
    missing, unexpected = ours.ov_classifier.load_state_dict(text_state, strict=False)
    # open_clip keeps its causal mask non-persistent; ours is in the checkpoint (same values).
    assert unexpected == [] and set(missing) <= {"bg_embed", "attn_mask"}
    tokens = tokenize(["a photo of a mug.", "There is a large cat in the scene."])
    with torch.no_grad():
        expected = open_clip_b16.encode_text(tokens, normalize=True)
        got = ours.ov_classifier.encode_text(tokens)
    torch.testing.assert_close(got, expected, atol=2e-5, rtol=1e-4)


def test_visual_tower_equals_open_clip(open_clip_b16):
    """Extractor + rec head reproduce CLIP's patch tokens; SOS tokens see only their region."""
    ours = build_san(VIT_B16, seed=1)
    visual = {
        k[len("visual.") :]: v
        for k, v in open_clip_b16.state_dict().items()
        if k.startswith("visual.")
    }
    split = VIT_B16.feature_last_layer
    ext, rec = {}, {}
    for k, v in visual.items():
        if k.startswith("transformer.resblocks."):
            idx, rest = k[len("transformer.resblocks.") :].split(".", 1)
            if int(idx) < split:
                ext[f"resblocks.{idx}.{rest}"] = v
            else:
                rec[f"resblocks.{int(idx) - split}.{rest}"] = v
        elif k in ("ln_post.weight", "ln_post.bias", "proj"):
            rec[k] = v
        else:
            ext[k] = v
    ours.clip_visual_extractor.load_state_dict(ext, strict=True)
    ours.clip_rec_head.load_state_dict(rec, strict=True)
    image = torch.randn(1, 3, 224, 224)
    v = open_clip_b16.visual
    with torch.no_grad():
        x = v.conv1(image).flatten(2).transpose(1, 2)
        x = torch.cat([v.class_embedding.expand(1, 1, -1), x], dim=1) + v.positional_embedding
        x = v.transformer(v.ln_pre(x))
        expected_dense = v.ln_post(x[:, 1:]) @ v.proj
        tokens, hw = ours.clip_visual_extractor(image, {split})
        bias = torch.zeros(1, VIT_B16.clip_heads, 3, 14, 14)
        queries, dense = ours.clip_rec_head(tokens[split], hw, bias)
    torch.testing.assert_close(
        dense.flatten(2).transpose(1, 2), expected_dense, atol=1e-4, rtol=1e-4
    )
    assert queries.shape == (1, 3, 512)


def test_rec_head_mask_layout():
    model = build_san(TINY)
    rec = model.clip_rec_head
    n, hw = 3, (2, 2)
    bias = torch.arange(1 * TINY.clip_heads * n * 4 * 4, dtype=torch.float32).view(
        1, TINY.clip_heads, n, 4, 4
    )
    mask = rec.build_attn_mask(bias, hw)[0, 0]
    assert mask.shape == (n + 1 + 4, n + 1 + 4)
    assert torch.all(mask[:, :n][~torch.eye(n + 1 + 4, n, dtype=torch.bool)] == -100)
    assert torch.all(torch.diagonal(mask[:n, :n]) == 0)
    assert torch.all(mask[:n, n] == -100)
    assert torch.all(mask[n:, n:] == 0)
    pooled = torch.nn.functional.adaptive_max_pool2d(bias[0, 0], hw).reshape(n, 4)
    torch.testing.assert_close(mask[:n, n + 1 :], pooled)


@pytest.mark.parametrize(
    "hw", [(128, 128), (100, 150), (151, 97), (333, 251), (64, 300), (480, 640)]
)
def test_output_shapes_follow_the_input(hw):
    model = build_san(TINY)
    image = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
    pixels, geo = model.preprocess(image)
    rh, rw = resized_shape(*hw, TINY.min_size, TINY.max_size)
    assert geo.resized_hw == ((rh, rw),)
    assert pixels.shape[-2] % 32 == 0 and pixels.shape[-1] % 32 == 0
    assert pixels.shape[-2] - rh < 32 and pixels.shape[-1] - rw < 32
    with torch.no_grad():
        feats = model.encode(pixels, geo)
        rows = model.class_rows(
            torch.nn.functional.normalize(torch.randn(5, TINY.embed_dim), dim=-1)
        )
        logits = model.class_logits(feats.mask_embeddings, rows)
        scores = semantic_scores(logits[0], feats.mask_logits[0], geo)
    n, d = TINY.num_queries, TINY.embed_dim
    assert feats.mask_embeddings.shape == (1, n, d)
    assert feats.mask_logits.shape == (1, n, pixels.shape[-2] // 16, pixels.shape[-1] // 16)
    clip_hw = (int(pixels.shape[-2] * 0.5) // 16, int(pixels.shape[-1] * 0.5) // 16)
    assert feats.dense_features.shape == (1, d, *clip_hw)
    assert logits.shape == (1, n, 6)
    assert scores.shape == (5, *hw)
    torch.testing.assert_close(feats.mask_embeddings.norm(dim=-1), torch.ones(1, n))


def test_resize_rule_matches_detectron2():
    assert resized_shape(375, 500, 640, 2560) == (640, 853)
    assert resized_shape(480, 640, 640, 2560) == (640, 853)
    assert resized_shape(640, 480, 640, 2560) == (853, 640)
    assert resized_shape(100, 5000, 640, 2560) == (51, 2560)  # long side capped


def test_padding_is_zero_and_bottom_right():
    model = build_san(TINY)
    image = np.full((100, 110, 3), 200, np.uint8)
    pixels, geo = model.preprocess(image)
    (rh, rw), (ph, pw) = geo.resized_hw[0], geo.padded_hw
    assert (ph, pw) != (rh, rw)
    assert torch.all(pixels[..., rh:, :] == 0) and torch.all(pixels[..., :, rw:] == 0)
    expected = (200 - torch.tensor(TINY.pixel_mean)) / torch.tensor(TINY.pixel_std)
    torch.testing.assert_close(pixels[0, :, rh // 2, rw // 2], expected)


def test_masks_are_cropped_before_resizing_to_the_original():
    """A ramp across the padded grid must end where the valid (unpadded) region ends."""
    model = build_san(TINY)
    pixels, geo = model.preprocess(np.zeros((100, 110, 3), np.uint8))
    ph, pw = geo.padded_hw
    rh, rw = geo.resized_hw[0]
    ramp = torch.linspace(0, 1, pw * 4)[None, None, :].expand(1, ph * 4, -1)
    coarse = torch.nn.functional.interpolate(ramp[None], size=(ph // 16, pw // 16), mode="area")[0]
    out = masks_to_image(coarse, geo)[0]
    assert out.shape == (100, 110)
    # The last output column samples the padded map near column rw, not near pw.
    assert abs(float(out[50, -1]) - rw / pw) < 0.06
    assert float(out[50, -1]) < 0.95


def test_same_seed_same_model_and_deterministic_forward():
    a, b = build_san(TINY, seed=3), build_san(TINY, seed=3)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)
    image = np.random.default_rng(1).integers(0, 255, (90, 120, 3), dtype=np.uint8)
    with torch.no_grad():
        fa = a.encode(*a.preprocess(image))
        fb = b.encode(*b.preprocess(image))
        fa2 = a.encode(*a.preprocess(image))
    assert torch.equal(fa.mask_logits, fb.mask_logits)
    assert torch.equal(fa.mask_embeddings, fa2.mask_embeddings)
    assert not torch.equal(
        build_san(TINY, seed=4).state_dict()["clip_rec_head.proj"],
        a.state_dict()["clip_rec_head.proj"],
    )


def test_batch_of_different_sizes_matches_single_images():
    """Images are padded to a common size; the largest one's result must not change."""
    model = build_san(TINY)
    rng = np.random.default_rng(2)
    imgs = [rng.integers(0, 255, s, dtype=np.uint8) for s in [(128, 128, 3), (96, 160, 3)]]
    with torch.no_grad():
        batch = model.encode(*model.preprocess(imgs))
        single = model.encode(*model.preprocess(imgs[1]))
    assert batch.geometry.original_hw == ((128, 128), (96, 160))
    assert batch.geometry.padded_hw == single.geometry.padded_hw
    one = batch.select(1)
    assert one.geometry.original_hw == ((96, 160),)
    torch.testing.assert_close(one.mask_logits, single.mask_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(one.mask_embeddings, single.mask_embeddings, atol=1e-4, rtol=1e-4)


def test_preprocess_short_side_is_the_config_min_size_for_one_call():
    """Training at a lower resolution first resizes as a model built for that size would."""
    image = np.random.default_rng(0).integers(0, 256, (90, 120, 3), np.uint8)
    small = build_san(replace(TINY, min_size=64), seed=None)
    pixels, geo = build_san(TINY, seed=None).preprocess(image, short_side=64)
    expected, expected_geo = small.preprocess(image)
    assert geo == expected_geo and geo.resized_hw == ((64, 85),)
    torch.testing.assert_close(pixels, expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match="short side"):
        small.preprocess(image, short_side=TINY.size_divisibility - 1)


def test_preprocess_rejects_bad_images():
    model = build_san(TINY)
    with pytest.raises(ValueError, match="RGB uint8"):
        model.preprocess(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="RGB uint8"):
        model.preprocess(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="RGB uint8"):
        model.preprocess(np.zeros((10, 10, 4), np.uint8))


@pytest.mark.skipif(
    not torch.cuda.is_available(),
    reason="needs a CUDA GPU: runs where torch sees one (make test on a CUDA machine)",
)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_agrees_with_cpu_fp32(dtype):
    model = build_san(TINY)
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = model.encode(*model.preprocess(image))
        gpu = model.cuda()
        with torch.autocast("cuda", dtype=dtype):
            got = gpu.encode(*gpu.preprocess(image))
    torch.testing.assert_close(got.mask_logits.cpu(), ref.mask_logits, atol=5e-2, rtol=5e-2)
    torch.testing.assert_close(got.mask_embeddings.cpu(), ref.mask_embeddings, atol=2e-2, rtol=2e-2)
