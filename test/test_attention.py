"""The bf16 attention kernel (`povss_ros.san.attention`) against torch's attention.

The kernel's cases run where the CPU has AVX512-BF16 and are skipped with the reason
elsewhere; the dispatch cases (what falls back to torch, and that it then is torch) run
everywhere. The yardstick is torch's own bf16 kernel: on the same bf16 inputs, the project's
kernel must stay as close to a float64 reference as torch's does.
"""

from __future__ import annotations

import platform
from pathlib import Path

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
    source = Path(attn.__file__).with_name("_bf16_attention.cpp")
    built = Path(attn._kernel.__file__)
    assert built.stat().st_mtime >= source.stat().st_mtime, "stale build: run make setup"


@KERNEL
@pytest.mark.parametrize("tokens", [1, 15, 16, 17, 255, 256, 257, 600])
@pytest.mark.parametrize("dim", [2, 8, 18, 32, 40, 64])
def test_the_kernel_agrees_with_torch(tokens, dim):
    _assert_as_close_as_torch(*_qkv(2, 3, tokens, dim))


@KERNEL
def test_the_kernel_at_the_side_adapters_shape():
    """A 640x480 frame: 2160 patches and 100 queries, 6 heads of 40."""
    _assert_as_close_as_torch(*_qkv(1, 6, 2260, 40))


@KERNEL
@pytest.mark.parametrize("shape", ["4d", "per-head", "2d", "key padding", "causal",
                                   "late keys only", "finfo.min rows"])
def test_the_kernel_adds_the_mask(shape):
    q, k, v = _qkv(2, 3, 300, 64, seed=1)
    gen = torch.Generator().manual_seed(2)
    sizes = {"4d": (2, 3, 300, 300), "per-head": (1, 3, 300, 300), "2d": (300, 300),
             "key padding": (2, 1, 1, 300)}
    if shape == "causal":
        mask = torch.full((300, 300), float("-inf")).triu(1)
    elif shape == "late keys only":  # a first block of keys all -inf for some rows
        mask = torch.zeros(300, 300)
        mask[::3, :280] = float("-inf")
    elif shape == "finfo.min rows":  # bf16's usual fill: large, finite, must not overflow
        mask = torch.zeros(300, 300)
        mask[5] = mask[7, 3:] = torch.finfo(torch.bfloat16).min
    else:  # SAN's attention bias: -100 where a query may not look
        mask = torch.where(torch.rand(sizes[shape], generator=gen) < 0.7, -100.0, 0.0)
    _assert_as_close_as_torch(q, k, v, mask.bfloat16())


@KERNEL
def test_queries_and_keys_may_differ_in_number():
    q, _, _ = _qkv(1, 2, 70, 40, seed=3)
    _, k, v = _qkv(1, 2, 333, 40, seed=4)
    _assert_as_close_as_torch(q, k, v)
    bias = torch.randn(70, 333, generator=torch.Generator().manual_seed(5)).bfloat16()
    _assert_as_close_as_torch(q, k, v, bias)


@KERNEL
def test_a_row_with_every_key_masked_gives_zeros_as_torch_does():
    q, k, v = _qkv(1, 2, 300, 40)
    mask = torch.zeros(300, 300, dtype=torch.bfloat16)
    mask[4] = float("-inf")
    got = attn.attention(q, k, v, mask)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(got[:, :, 4], want[:, :, 4]) and not got[:, :, 4].any()
    torch.testing.assert_close(got, want, rtol=0.02, atol=0.01)


@KERNEL
def test_nan_in_a_key_comes_out_as_nan():
    """A NaN from a faulty input must not vanish into plausible numbers."""
    q, k, v = _qkv(1, 2, 300, 40)
    k = k.clone()
    k[0, 1, 17, 3] = float("nan")
    got = attn.attention(q, k, v)
    assert torch.equal(got.isnan(), F.scaled_dot_product_attention(q, k, v).isnan())
    assert got[0, 1].isnan().all() and not got[0, 0].isnan().any()


@KERNEL
def test_empty_batches_heads_and_queries():
    for shape in [(0, 2, 20, 8), (1, 0, 20, 8), (1, 2, 0, 8)]:
        q = torch.zeros(shape, dtype=torch.bfloat16)
        k = v = torch.zeros(shape[0], shape[1], 20, 8, dtype=torch.bfloat16)
        got = attn.attention(q, k, v)
        assert got.shape == shape


@KERNEL
@pytest.mark.parametrize("heads", [1, 6])
def test_the_result_does_not_depend_on_the_thread_count(heads):
    """With fewer heads than threads, a head's query tiles are split between threads."""
    q, k, v = _qkv(1, heads, 500, 40)
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3, 7):
            torch.set_num_threads(threads)
            results.append(attn.attention(q, k, v))
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(results[0], r) for r in results[1:])


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
    "fp32", "gradients", "odd head", "head over 64", "bool mask", "fp32 mask",
    "mask broadcast over keys", "mask needing gradients",
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
    elif case == "fp32 mask":  # torch adds it at full precision: so must we
        mask = torch.randn(20, 20, generator=torch.Generator().manual_seed(0)) * 4
    elif case == "mask broadcast over keys":
        mask = torch.zeros(1, 2, 20, 1, dtype=torch.bfloat16)
    elif case == "mask needing gradients":
        mask = torch.zeros(20, 20, dtype=torch.bfloat16, requires_grad=True)
    assert not attn.takes(q, k, v, mask)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.equal(attn.attention(q, k, v, mask), want)


@pytest.mark.parametrize("case", [
    "k on another device", "5-d keys", "head size 0", "1-d mask", "mask larger than the scores",
])
def test_inputs_torch_refuses_are_not_the_kernels(case):
    q, k, v = _qkv(1, 2, 20, 8)
    mask = None
    if case == "k on another device":
        k = k.to("meta")
    elif case == "5-d keys":
        k, v = k[..., None], v[..., None]
    elif case == "head size 0":
        q, k, v = q[..., :0], k[..., :0], v[..., :0]
    elif case == "1-d mask":
        mask = torch.zeros(20, dtype=torch.bfloat16)
    elif case == "mask larger than the scores":
        mask = torch.zeros(2, 2, 20, 20, dtype=torch.bfloat16)
    assert not attn.takes(q, k, v, mask)
    assert not attn._fits(q, k, v, mask)


@KERNEL
def test_the_op_refuses_what_does_not_fit_it():
    q, k, v = _qkv(1, 2, 20, 8)
    with pytest.raises(ValueError, match="bf16_attention takes"):
        attn.bf16_attention(q.float(), k.float(), v.float(), None, 0.3)
    with pytest.raises(ValueError, match="bf16_attention takes"):
        attn.bf16_attention(q, k[:, :, :10], v, None, 0.3)


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
