"""End-to-end latency, FLOPs and peak memory of one camera frame through SAN.

Prints a markdown table: one 640x480 RGB frame -> label map (preprocess, model, SAN's
semantic inference at full resolution, argmax), median of repeated runs after warm-up, with
the model's FLOPs and the achieved fraction of this machine's own measured matmul
throughput in that precision. A precision whose own matmul runs at under a quarter of fp32's
is emulated on this hardware (`povss_ros.precision`): its row says so instead of a percentage.
The precision `auto` picks on each device is marked. Random weights at the real ViT-B/16
shapes: speed does not depend on values.

    python bench/bench_segment.py [--variant vit_b16] [--repeats 7] [--out FILE.md]

It also times start-up: the vocabulary's text rows through the text tower vs from the disk
cache (`povss_ros.text_cache`).
"""

from __future__ import annotations

import argparse
import resource
import statistics
import tempfile
import time
from datetime import date

import numpy as np
import torch
from hardware import cpu_name, sync  # noqa: E402 - bench/ sibling
from torch.utils.flop_counter import FlopCounterMode

from povss_ros.precision import PRECISIONS, auto_precision, is_emulated, matmul_ratio
from povss_ros.san.config import get_config
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmenter


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Measured GFLOP/s of a large square matmul: the hardware ceiling we compare against."""
    if device.type == "cpu":
        n = 2048
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / statistics.median(times) / 1e9


def peak_cell(device: torch.device, precision: str, achieved: float) -> tuple[str, str]:
    """(matmul peak GFLOP/s, share of it achieved) cells, against the precision's own matmul.
    An emulated precision's matmul is no ceiling (autocast keeps part of the model in fp32:
    an AVX2 CPU once showed "5137% of peak"), so its cells name the probe's slowdown against
    fp32 instead, and the slow full-size matmul is not timed."""
    dtype = PRECISIONS[precision] or torch.float32
    if dtype != torch.float32:
        ratio = matmul_ratio(device, dtype)
        if is_emulated(ratio):
            return f"emulated ({1 / ratio:.0f}x slower than fp32)", "emulated"
    peak = matmul_peak(device, dtype)
    return f"{peak:.1f}", f"{100 * achieved / peak:.0f}%"


def count_flops(seg: Segmenter, image: np.ndarray) -> tuple[float, float]:
    """(model GFLOP, postprocess GFLOP) of one frame, counted by torch's FLOP counter."""
    with FlopCounterMode(display=False) as counter:
        feats = seg.encode(image)
    model_flops = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:
        seg.decode(feats)
    return model_flops / 1e9, counter.get_total_flops() / 1e9


def time_frame(seg: Segmenter, image: np.ndarray, repeats: int) -> dict[str, float]:
    device = seg.device
    seg.segment(image)  # warm-up (allocator, kernels, autotuning)
    seg.segment(image)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    totals, encodes, decodes = [], [], []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        feats = seg.encode(image)
        sync(device)
        t1 = time.perf_counter()
        seg.decode(feats)
        sync(device)
        t2 = time.perf_counter()
        totals.append(t2 - t0)
        encodes.append(t1 - t0)
        decodes.append(t2 - t1)
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    return {
        "median_s": statistics.median(totals),
        "p90_s": float(np.percentile(totals, 90)),
        "encode_s": statistics.median(encodes),
        "decode_s": statistics.median(decodes),
        "peak_mib": peak,
    }


def time_startup(model, repeats: int = 2) -> dict[str, float]:
    """Median seconds to get COCO-Stuff's text rows at start-up: through the text tower, with
    an empty disk cache (tower + write), and from a warm disk cache (fingerprint + read)."""
    times: dict[str, list[float]] = {"tower": [], "cold cache": [], "warm cache": []}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            for key, cache in (("tower", None), ("cold cache", tmp), ("warm cache", tmp)):
                model.ov_classifier.clear_cache()
                t0 = time.perf_counter()
                Segmenter(model, "coco_stuff", device="cpu", text_cache_dir=cache)
                times[key].append(time.perf_counter() - t0)
    model.ov_classifier.clear_cache()
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="vit_b16")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()

    cfg = get_config(args.variant)
    image = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), np.uint8)
    runs = [("cpu", "fp32"), ("cpu", "bf16")]
    if torch.cuda.is_available():
        runs += [("cuda", "fp32"), ("cuda", "fp16"), ("cuda", "bf16")]
    model = build_san(cfg, seed=0)
    t0 = time.perf_counter()
    model.text_rows(["warm-up"])  # tokenizer load
    t_tok = time.perf_counter() - t0
    lines = [
        f"SAN {cfg.name}, one {args.width}x{args.height} frame end to end "
        f"({date.today().isoformat()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
        "",
        "| device | precision | median ms | p90 ms | model+pre ms | postproc ms | GFLOP | "
        "achieved GFLOP/s | matmul peak GFLOP/s | % of peak | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    hardware = {"cpu": cpu_name()}
    for device, precision in runs:
        dev = torch.device(device)
        if device == "cuda":
            hardware["cuda"] = torch.cuda.get_device_name(dev)
        seg = Segmenter(model, "coco_stuff", device=device, precision=precision)
        gflop_model, gflop_post = count_flops(seg, image)
        stats = time_frame(seg, image, args.repeats)
        gflop = gflop_model + gflop_post
        achieved = gflop / stats["median_s"]
        peak, share = peak_cell(dev, precision, achieved)
        mark = " (auto)" if auto_precision(dev).precision == precision else ""
        lines.append(
            f"| {device} | {precision}{mark} | {stats['median_s'] * 1e3:.1f} "
            f"| {stats['p90_s'] * 1e3:.1f} | {stats['encode_s'] * 1e3:.1f} "
            f"| {stats['decode_s'] * 1e3:.1f} | {gflop:.1f} | {achieved:.1f} | {peak} "
            f"| {share} | {stats['peak_mib']:.0f} |"
        )
        print(f"[{device} {precision}] done", flush=True)
        model = seg.model.cpu()
    startup = time_startup(model)
    lines += [
        "",
        "Start-up, COCO-Stuff's 171 words x 14 templates through the text tower (cpu, median of "
        "2): " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items())
        + f" (warm cache = {startup['tower'] / startup['warm cache']:.0f}x faster).",
        "",
        "Hardware: " + "; ".join(f"{k}: {v}" for k, v in hardware.items())
        + f" (torch CPU capability {torch.backends.cpu.get_cpu_capability()}); precision auto: "
        + "; ".join(f"{d}: {auto_precision(torch.device(d)).reason}" for d in dict(runs)),
        f"FLOPs: model+preprocess {gflop_model:.1f} GFLOP, SAN semantic inference "
        f"(masks to full size, softmax x sigmoid, argmax) {gflop_post:.1f} GFLOP. "
        "CPU peak memory is the process's maximum resident set (weights included); "
        "CUDA peak is torch's max allocated. "
        f"One-time: tokenizer load {t_tok:.1f}s.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
