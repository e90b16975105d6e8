"""The bf16 attention kernel (`povss_ros.san.attention`) against torch's attention.

The kernel's cases run where the CPU has AVX512-BF16 and are skipped with the reason
elsewhere; the dispatch cases (what falls back to torch, and that it then is torch) run
everywhere. The yardstick is torch's own bf16 kernel: on the same bf16 inputs, the project's
kernel must stay as close to a float64 reference as torch's does.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from povss_ros.san import attention as attn
from povss_ros.san.config import get_config
from povss_ros.san.model import build_san

KERNEL = pytest.mark.skipif(not attn.kernel_available(),
                            reason="the CPU has no AVX512-BF16 (or the kernel is not built)")


def _qkv(batch: int, heads: int, tokens: int, dim: int, seed: int = 0) -> tuple:
    """bf16 q, k, v as views of one packed projection, as SAN's blocks make them."""
    gen = torch.Generator().manual_seed(seed)
    qkv = torch.randn(batch, tokens, 3, heads, dim, generator=gen).bfloat16()
    qkv = qkv.permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]


def _reference(q, k, v, mask=None) -> torch.Tensor:
    q, k, v = (t.double() for t in (q, k, v))
    mask = None if mask is None else mask.double()
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _assert_as_close_as_torch(q, k, v, mask=None) -> torch.Tensor:
    assert attn.takes(q, k, v, mask)
    got = attn.attention(q, k, v, mask)
    torch_bf16 = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    want = _reference(q, k, v, mask)
    assert got.shape == want.shape and got.dtype == torch.bfloat16
    err = (got.double() - want).abs().max().item()
    torch_err = (torch_bf16.double() - want).abs().max().item()
    assert err <= 1.25 * torch_err + 1e-3, (err, torch_err)
    return got


def test_the_kernel_is_built_on_x86_64():
    """CI builds it: a silent fallback to torch would hide a broken build."""
    if platform.machine() != "x86_64":
        pytest.skip("the kernel is x86-64 code")
    assert attn._kernel is not None


@KERNEL
@pytest.mark.parametrize("tokens", [1, 15, 16, 17, 255, 256, 257, 600])
@pytest.mark.parametrize("dim", [2, 8, 40, 64])
def test_the_kernel_agrees_with_torch(tokens, dim):
    _assert_as_close_as_torch(*_qkv(2, 3, tokens, dim))


@KERNEL
def test_the_kernel_at_the_side_adapters_shape():
    """A 640x480 frame: 2160 patches and 100 queries, 6 heads of 40."""
    _assert_as_close_as_torch(*_qkv(1, 6, 2260, 40))


@KERNEL
@pytest.mark.parametrize("shape", ["4d", "per-head", "2d", "causal", "late keys only"])
def test_the_kernel_adds_the_mask(shape):
    q, k, v = _qkv(2, 3, 300, 64, seed=1)
    gen = torch.Generator().manual_seed(2)
    sizes = {"4d": (2, 3, 300, 300), "per-head": (1, 3, 300, 300), "2d": (300, 300)}
    if shape == "causal":
        mask = torch.full((300, 300), float("-inf")).triu(1)
    elif shape == "late keys only":  # a first block of keys all -inf for some rows
        mask = torch.zeros(300, 300)
        mask[::3, :280] = float("-inf")
    else:  # SAN's attention bias: -100 where a query may not look
        mask = torch.where(torch.rand(sizes[shape], generator=gen) < 0.7, -100.0, 0.0)
    _assert_as_close_as_torch(q, k, v, mask.bfloat16())


@KERNEL
def test_queries_and_keys_may_differ_in_number():
    q, _, _ = _qkv(1, 2, 70, 40, seed=3)
    _, k, v = _qkv(1, 2, 333, 40, seed=4)
    _assert_as_close_as_torch(q, k, v)


@KERNEL
def test_the_result_does_not_depend_on_the_thread_count():
    q, k, v = _qkv(1, 6, 500, 40)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = attn.attention(q, k, v)
        torch.set_num_threads(2)
        two = attn.attention(q, k, v)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, two)


@KERNEL
def test_the_output_merges_heads_without_a_copy():
    out = attn.attention(*_qkv(1, 6, 50, 40))
    assert out.transpose(1, 2).is_contiguous()


@KERNEL
def test_compile_traces_the_kernel_as_one_op():
    q, k, v = _qkv(1, 2, 40, 8)
    compiled = torch.compile(attn.attention, backend="aot_eager", fullgraph=True)
    assert torch.equal(compiled(q, k, v), attn.attention(q, k, v))


@pytest.mark.parametrize("case", [
    "fp32", "gradients", "odd head", "head over 64", "bool mask", "mask broadcast over keys",
])
def test_what_the_kernel_does_not_take_goes_to_torch(case):
    q, k, v = _qkv(1, 2, 20, 66 if case == "head over 64" else 7 if case == "odd head" else 8)
    mask = None
    if case == "fp32":
        q, k, v = q.float(), k.float(), v.float()
    elif case == "gradients":
        q = q.detach().requires_grad_()
    elif case == "bool mask":
        mask = torch.rand(20, 20, generator=torch.Generator().manual_seed(0)) < 0.8
        mask.fill_diagonal_(True)
    elif case == "mask broadcast over keys":
        mask = torch.zeros(1, 2, 20, 1, dtype=torch.bfloat16)
    assert not attn.takes(q, k, v, mask)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(attn.attention(q, k, v, mask), want)


@KERNEL
def test_san_in_bf16_gives_what_it_gives_on_torchs_attention(monkeypatch):
    """The whole tiny SAN: same outputs within bf16's reach, with and without the kernel."""
    model = build_san(get_config("tiny"), seed=0).eval()
    image = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    pixels, geometry = model.preprocess(image)
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16):
        mine = model.encode(pixels, geometry)
        monkeypatch.setattr(attn, "kernel_available", lambda: False)
        theirs = model.encode(pixels, geometry)
    for name in ("mask_embeddings", "mask_logits", "dense_features"):
        a, b = getattr(mine, name), getattr(theirs, name)
        assert not torch.equal(a, b)  # the kernel did run
        torch.testing.assert_close(a, b, rtol=0.05, atol=0.05)
