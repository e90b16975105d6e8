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
        Encoder(proposal_following_tiny_san(), "fastest", lambda: None)
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
