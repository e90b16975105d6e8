"""Scaled-dot-product attention for SAN's blocks: torch's fused kernel, or the project's bf16
kernel where it is faster.

torch's fused CPU attention takes its packed bf16 path only on CPUs with AMX; on x86 CPUs with
AVX512-BF16 but no AMX its bf16 attention is no faster than its fp32 one (docs/experiments.md,
section 9.1). There, bf16 inputs go to `_bf16_attention.cpp`, which runs both products on the
bf16 dot-product instruction. Its numerics are those of torch's bf16 kernel (fp32 scores and
softmax, bf16 probabilities), and `test_attention.py` holds the two to the same distance from
fp32. Everything else (CUDA, fp32, training: inputs that need gradients, a CPU without the
instructions or one with AMX) goes to `F.scaled_dot_product_attention`. The kernel is a torch
custom op, so `torch.compile` keeps it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:  # built by setup.py on x86-64 with a C++ compiler; absent elsewhere
    from . import _bf16_attention as _kernel
except ImportError:
    _kernel = None
# Asked once, at import: `torch.compile` traces `kernel_available`, not the CPU probe.
_KERNEL_RUNS = _kernel is not None and bool(_kernel.supported())

# The head sizes the kernel takes: even (it multiplies pairs) and at most 4 registers of 16.
MAX_HEAD_SIZE = 64


def kernel_available() -> bool:
    """Whether the bf16 kernel is built and is the one to use on this CPU (AVX512-BF16, no
    AMX)."""
    return _KERNEL_RUNS


def _fits(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> bool:
    """The kernel's memory contract: bf16 strided CPU tensors, q [B, H, Nq, D] and k, v
    [B, H, Nk, D] with an even head size up to 64 and contiguous rows, and a mask (if any)
    that broadcasts to [B, H, Nq, Nk] with contiguous key rows."""
    tensors = (q, k, v) if mask is None else (q, k, v, mask)
    if not all(t.device.type == "cpu" and t.layout == torch.strided
               and t.dtype == torch.bfloat16 for t in tensors):
        return False
    if not q.dim() == k.dim() == v.dim() == 4:
        return False
    b, h, n, d = q.shape
    if (k.shape != v.shape or k.shape[:2] != (b, h) or k.shape[3] != d or d <= 0 or d % 2
            or d > MAX_HEAD_SIZE or k.shape[2] == 0 or any(t.stride(3) != 1 for t in (q, k, v))):
        return False
    if mask is None:
        return True
    target = (b, h, n, k.shape[2])
    if not 2 <= mask.dim() <= 4 or mask.shape[-1] != k.shape[2] or mask.stride(-1) != 1:
        return False
    try:
        return torch.broadcast_shapes(mask.shape, target) == target
    except RuntimeError:
        return False


@torch.library.custom_op("povss_ros::bf16_attention", mutates_args=())
def bf16_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v by the project's kernel, for inputs it fits (else
    ValueError). The result is [B, H, Nq, D] laid out as [B, Nq, H, D], so merging the heads
    back into channels (`out.transpose(1, 2).reshape(B, Nq, H * D)`) is free."""
    if _kernel is None or not _fits(q, k, v, mask):
        raise ValueError("bf16_attention takes bf16 CPU q [B, H, Nq, D], k and v [B, H, Nk, D] "
                         "(D even, at most 64, rows contiguous) and a bf16 mask broadcasting "
                         "to [B, H, Nq, Nk]; attention() takes anything")
    b, h, n, d = q.shape
    out = q.new_empty(b, n, h, d).transpose(1, 2)
    if mask is not None:
        mask = mask.expand(b, h, n, k.shape[2])
    m_ptr, m_strides = (0, (0, 0, 0)) if mask is None else (mask.data_ptr(), mask.stride()[:3])
    _kernel.attention(
        q.data_ptr(), k.data_ptr(), v.data_ptr(), m_ptr, out.data_ptr(),
        b, h, n, k.shape[2], d,
        *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], *m_strides, *out.stride()[:3],
        scale, torch.get_num_threads(),
    )
    return out


@bf16_attention.register_fake
def _bf16_attention_shape(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None, scale: float
) -> torch.Tensor:
    """The output's shape and layout, for `torch.compile`'s tracing."""
    b, h, n, d = q.shape
    return q.new_empty(b, n, h, d).transpose(1, 2)


def takes(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
          mask: torch.Tensor | None = None) -> bool:
    """Whether `attention` runs these inputs on the project's kernel: it runs on this CPU,
    the inputs fit it (`_fits`: bf16 CPU tensors, even head size up to 64, a bf16 mask
    broadcasting to [B, H, Nq, Nk]), and no gradient is wanted (the kernel has no backward)."""
    if not (kernel_available() and _fits(q, k, v, mask)):
        return False
    wanted = (q, k, v) if mask is None else (q, k, v, mask)
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in wanted))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
              attn_mask: torch.Tensor | None = None) -> torch.Tensor:
    """`F.scaled_dot_product_attention(q, k, v, attn_mask)` (default scale, no dropout), on
    the project's kernel where it `takes` the inputs."""
    if takes(q, k, v, attn_mask):
        return bf16_attention(q, k, v, attn_mask, q.shape[-1] ** -0.5)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
