"""Attention on the CPU: torch's fused kernel against explicit matmuls.

SAN's attentions at a 640x480 frame, one at a time: the side adapter's (2260 tokens, 6 heads
of 40) and CLIP's (541 tokens, 12 heads of 64). For each precision: torch's fused kernel
(`F.scaled_dot_product_attention`, what SAN's blocks call) and the explicit form (queries in
chunks of 256, softmax in fp32); median of repeats, with the largest difference from fp32's
fused result.

    python bench/bench_attention.py [--repeats 9]
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


SHAPES = {"side adapter": (2260, 6, 40), "CLIP": (541, 12, 64)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"Attention at a 640x480 frame; {cpu_name()} "
          f"(torch CPU capability {torch.backends.cpu.get_cpu_capability()}), "
          f"{torch.get_num_threads()} threads, median of {args.repeats}\n")
    print("| attention | precision | method | ms | GFLOP/s | max diff from fp32 fused | "
          "fused / method |")
    print("|---|---|---|---:|---:|---:|---:|")
    gen = torch.Generator().manual_seed(0)
    for name, (tokens, heads, dim) in SHAPES.items():
        q, k, v = (torch.randn(1, heads, tokens, dim, generator=gen) for _ in range(3))
        ref = F.scaled_dot_product_attention(q, k, v)
        gflop = 4 * heads * tokens * tokens * dim / 1e9  # q k^T and p v
        for dtype in (torch.float32, torch.bfloat16):
            a, b, c = (t.to(dtype) for t in (q, k, v))
            methods = {"torch fused": F.scaled_dot_product_attention, "explicit": explicit}
            fused_ms = None
            for method, fn in methods.items():
                ms = median_ms(lambda fn=fn, a=a, b=b, c=c: fn(a, b, c), args.repeats)
                fused_ms = fused_ms or ms
                diff = (fn(a, b, c).float() - ref).abs().max().item()
                label = str(dtype).removeprefix("torch.")
                print(f"| {name} ({tokens} tokens, {heads} heads of {dim}) | {label} | {method} "
                      f"| {ms:.1f} | {gflop / ms * 1e3:.0f} | {diff:.1e} | {fused_ms / ms:.2f} |")


if __name__ == "__main__":
    main()
