"""Attention on the CPU: torch's fused kernel against explicit matmuls, per precision.

Why SAN's attention stays on `F.scaled_dot_product_attention` in bf16 too: one attention of
the side adapter at a 640x480 frame (2260 tokens, 6 heads of 40), the fused kernel against
the explicit form (queries in chunks of 256, softmax in fp32), median of repeats, with the
largest difference from fp32's fused result.

    python bench/bench_attention.py [--tokens 2260] [--heads 6] [--dim 40] [--repeats 9]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from hardware import cpu_name  # noqa: E402 - bench/ sibling


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             chunk: int = 256) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v, a chunk of queries at a time (fp32 softmax)."""
    out, kt = torch.empty_like(q), k.transpose(-2, -1)
    for i in range(0, q.shape[-2], chunk):
        s = (q[..., i : i + chunk, :] * q.shape[-1] ** -0.5) @ kt
        out[..., i : i + chunk, :] = torch.softmax(s, -1, dtype=torch.float32).to(q.dtype) @ v
    return out


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=2260)
    parser.add_argument("--heads", type=int, default=6)
    parser.add_argument("--dim", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, args.heads, args.tokens, args.dim, generator=gen)
               for _ in range(3))
    ref = F.scaled_dot_product_attention(q, k, v)
    print(f"Attention, {args.tokens} tokens, {args.heads} heads of {args.dim}; {cpu_name()} "
          f"(torch CPU capability {torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| precision | fused (ms) | explicit (ms) | fused max diff | explicit max diff |")
    print("|---|---:|---:|---:|---:|")
    for dtype in (torch.float32, torch.bfloat16):
        a, b, c = (t.to(dtype) for t in (q, k, v))
        fused = median_ms(lambda a=a, b=b, c=c: F.scaled_dot_product_attention(a, b, c),
                          args.repeats)
        manual = median_ms(lambda a=a, b=b, c=c: explicit(a, b, c), args.repeats)
        d_fused = (F.scaled_dot_product_attention(a, b, c).float() - ref).abs().max().item()
        d_manual = (explicit(a, b, c).float() - ref).abs().max().item()
        name = str(dtype).removeprefix("torch.")
        print(f"| {name} | {fused:.1f} | {manual:.1f} | {d_fused:.1e} | {d_manual:.1e} |")


if __name__ == "__main__":
    main()
