"""The frozen forward compiled (`compile`), and a GPU frame free of host synchronisation.

The CPU test compiles the TINY SAN with Inductor (about a minute on two cores: the same code
path a GPU takes, with its C++ kernels instead of Triton's). The CUDA tests run where a GPU is
(`make test` on a CUDA machine, or the device tool) and are skipped with the reason elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _tiny_san import proposal_following_tiny_san, random_concept

from povss_ros import Segmenter
from povss_ros.personal.fusion import decode_concepts
from povss_ros.san.compiled import COMPILE_MODES, Encoder

WORDS = ["person", "bottle", "chair"]
FRAME = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _segmenter(device: str = "cpu", precision: str = "fp32", mode: str = "off") -> Segmenter:
    return Segmenter(proposal_following_tiny_san(), WORDS, device, precision,
                     random_weights=True, compile_mode=mode)


def test_a_compiled_forward_segments_as_the_eager_one():
    eager, compiled = _segmenter(), _segmenter(mode="default")
    compiled.warm_up(96, 128, times=1)
    want, got = eager.segment(FRAME), compiled.segment(FRAME)
    np.testing.assert_allclose(got.score, want.score, rtol=1e-4, atol=1e-5)
    assert (got.labels == want.labels).mean() > 0.999
    a, b = eager.encode(FRAME), compiled.encode(FRAME)
    assert a.geometry == b.geometry
    torch.testing.assert_close(b.mask_logits, a.mask_logits, rtol=1e-4, atol=1e-4)


def test_an_unknown_compile_mode_is_refused():
    with pytest.raises(ValueError, match="compile must be one of"):
        Encoder(proposal_following_tiny_san(), "fastest", None)
    assert COMPILE_MODES[0] == "off"


@CUDA
def test_a_gpu_frame_synchronises_with_the_host_only_for_its_result():
    """Upload (pinned), forward, and a decode with two concepts (the fusion) under CUDA's
    sync debug mode set to error: any host synchronisation inside raises."""
    seg = _segmenter("cuda", "fp16")
    n = seg.model.cfg.num_queries
    concepts = [random_concept(seg.text_rows[1], "bottle", n, seed=s).to("cuda") for s in (1, 2)]
    seg.warm_up(96, 128, times=1)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        features = seg.encode(FRAME)
        z, m = features.mask_embeddings[:1], features.mask_logits[:1]
        decode_concepts(seg.model, seg.text_rows, concepts, z, m, features.geometry)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@CUDA
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_on_the_gpu_agrees_with_eager(mode):
    eager, compiled = _segmenter("cuda", "fp16"), _segmenter("cuda", "fp16", mode)
    compiled.warm_up(96, 128)
    want, got = eager.segment(FRAME), compiled.segment(FRAME)
    assert (got.labels == want.labels).mean() > 0.995
    again = compiled.segment(FRAME)  # a CUDA graph replay must not hand back stale outputs
    assert np.array_equal(again.labels, got.labels)


def _perturbed_tiny_san():
    """Every weight off its init (no round numbers, which bf16 would hold exactly)."""
    model = proposal_following_tiny_san()
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-2 * torch.randn(p.shape, generator=gen))
    return model


def _plain_autocast(model, pixels, geometry):
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        return model.encode(pixels, geometry)


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(
        (a.mask_embeddings, a.mask_logits, a.dense_features),
        (b.mask_embeddings, b.mask_logits, b.dense_features)))


def test_cast_weights_give_plain_autocasts_outputs_bit_for_bit():
    """A reduced precision runs a copy of the model with its matmul and convolution weights
    cast once; the outputs are those of autocast casting them on every call, bit for bit, also
    after a weight changes in place, and the copy shares every other tensor."""
    model = _perturbed_tiny_san()
    encoder = Encoder(model, "off", torch.bfloat16)
    pixels, geometry = model.preprocess(FRAME)
    with torch.no_grad():
        assert _same(encoder(pixels, geometry), _plain_autocast(model, pixels, geometry))
        copy = encoder.frozen_model()
        assert copy is not model and copy is encoder.frozen_model()  # made once
        assert copy.clip_visual_extractor.resblocks[0].attn.in_proj_weight.dtype == torch.bfloat16
        assert copy.side_adapter_network.mask_decoder.pix_mlp.layers[0].weight.dtype == (
            torch.bfloat16)
        assert copy.clip_visual_extractor.positional_embedding is (
            model.clip_visual_extractor.positional_embedding)
        scaling = model.side_adapter_network.mask_decoder.bias_scaling
        assert copy.side_adapter_network.mask_decoder.bias_scaling.weight is scaling.weight
        before = encoder(pixels, geometry)
        model.clip_rec_head.resblocks[0].mlp.c_fc.weight.mul_(1.5)  # in place: a new copy
        after = encoder(pixels, geometry)
    assert encoder.frozen_model() is not copy
    assert not torch.equal(after.mask_embeddings, before.mask_embeddings)
    assert _same(after, _plain_autocast(model, pixels, geometry))
    assert Encoder(model, "off", None).frozen_model() is model


def test_moving_a_reduced_precision_segmenter_drops_its_cast_copy():
    seg = Segmenter(_perturbed_tiny_san(), WORDS, "cpu", "bf16", random_weights=True)
    want = seg.segment(FRAME)
    copy = seg.encoder.frozen_model()
    seg.move_to(torch.device("cpu"))
    assert seg.encoder._copy is None
    got = seg.segment(FRAME)
    assert seg.encoder.frozen_model() is not copy
    assert np.array_equal(got.labels, want.labels) and np.array_equal(got.score, want.score)

