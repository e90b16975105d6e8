"""End-to-end latency, FLOPs and peak memory of one camera frame through SAN.

Prints a markdown table: one 640x480 RGB frame -> label map (preprocess, model, SAN's
semantic inference at full resolution, argmax), median of repeated runs after warm-up, with
the model's FLOPs and the achieved fraction of this machine's own measured matmul
throughput in that precision. A precision whose own matmul runs at under a quarter of fp32's
is emulated on this hardware (`povss_ros.precision`): its row says so instead of a percentage.
The precision `auto` picks on each device is marked. Random weights at the real ViT-B/16
shapes: speed does not depend on values.

    python bench/bench_segment.py [--variant vit_b16] [--repeats 7] [--device all|cpu|cuda]
        [--out FILE.md]

A second table cuts the same frame at SAN's stage boundaries, for each precision the device
runs natively: preprocessing, the CLIP blocks before the split, the side adapter network,
the recognition head (with the class-row product) and the decode, each with its median time,
FLOPs and share of the matmul peak. The stages are SAN's own calls, made one by one in
`Segmenter.segment`'s order (`frame_stages`); each repeat times the stages right after one
end-to-end `Segmenter.segment`, so the two can be compared, and the staged labels and scores
are checked against `Segmenter.segment`'s.

FLOPs are counted by torch's FLOP counter, taught here the CPU's fused attention kernel,
which it leaves at zero (`FLOP_FORMULAS`).

It also times start-up: the vocabulary's text rows through the text tower vs from the disk
cache (`povss_ros.text_cache`).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import date

import numpy as np
import torch
import torch.nn.functional as F
from hardware import cpu_name, sync  # noqa: E402 - bench/ sibling
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from povss_ros.personal.concept import personal_logits
from povss_ros.precision import PRECISIONS, auto_precision, is_emulated, matmul_ratio
from povss_ros.san import semantic
from povss_ros.san.config import SANConfig, get_config
from povss_ros.san.model import build_san
from povss_ros.segmenter import Segmentation, Segmenter


def stage_names(cfg: SANConfig) -> list[str]:
    """The stage table's names of `frame_stages`' stages, with the variant's block counts."""
    split, last = cfg.feature_last_layer, cfg.clip_layers
    rec = f"block {last}" if split + 1 == last else f"blocks {split + 1}-{last}"
    return [
        "preprocess (resize, normalize, pad)",
        f"CLIP blocks 1-{split} (half-scale input, patch embed)",
        f"side adapter ({cfg.side_depth}-block side ViT, {len(cfg.fusion_map)} fusions, "
        "mask decoder)",
        f"recognition head (CLIP {rec} with attention bias, class logits)",
        "decode (masks to image size, softmax x sigmoid, argmax, to numpy)",
    ]


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of the CPU's fused attention (QK^T and PV), as torch counts its GPU kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


# Ops torch's FLOP counter leaves at zero: the CPU's fused scaled-dot-product attention.
FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
}


@contextlib.contextmanager
def flop_counter() -> Iterator[FlopCounterMode]:
    """torch's FLOP counter with `FLOP_FORMULAS` added, printing nothing. It counts SAN's
    work: the decode's zero columns (`semantic.CLASS_PAD`) are left out, which change no
    result."""
    pad, semantic.CLASS_PAD = semantic.CLASS_PAD, 1
    try:
        with FlopCounterMode(display=False, custom_mapping=FLOP_FORMULAS) as counter:
            yield counter
    finally:
        semantic.CLASS_PAD = pad


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


def precision_peak(device: torch.device, precision: str) -> float | str:
    """The precision's own matmul peak in GFLOP/s, or the peak cell's text when it is emulated.
    An emulated precision's matmul is no ceiling (autocast keeps part of the model in fp32,
    which can run many times faster than it), so its cell names the probe's slowdown against
    fp32 instead, and the slow full-size matmul is not timed."""
    dtype = PRECISIONS[precision] or torch.float32
    if dtype != torch.float32:
        ratio = matmul_ratio(device, dtype)
        if is_emulated(ratio):
            return f"emulated ({1 / ratio:.0f}x slower than fp32)"
    return matmul_peak(device, dtype)


def share_cell(peak: float | str, achieved: float) -> str:
    """Achieved GFLOP/s as a share of `precision_peak`'s peak ("emulated" when it has none)."""
    return "emulated" if isinstance(peak, str) else f"{100 * achieved / peak:.0f}%"


def peak_cell(peak: float | str) -> str:
    """The matmul peak column: GFLOP/s, or why there is none."""
    return peak if isinstance(peak, str) else f"{peak:.1f}"


def runs_natively(device: torch.device, precision: str) -> bool:
    """Whether `povss_ros.precision` counts `precision` as native on `device`: fp32 always,
    fp16 on CUDA, bf16 where auto would choose it."""
    return (precision == "fp32" or (device.type == "cuda" and precision == "fp16")
            or auto_precision(device).precision == precision)


def count_flops(seg: Segmenter, image: np.ndarray) -> tuple[float, float]:
    """(model GFLOP, postprocess GFLOP) of one frame, counted by torch's FLOP counter."""
    with flop_counter() as counter:
        feats = seg.encode(image)
    model_flops = counter.get_total_flops()
    with flop_counter() as counter:
        seg.decode(feats)
    return model_flops / 1e9, counter.get_total_flops() / 1e9


Stage = Callable[[dict], None]


def frame_stages(seg: Segmenter, image: np.ndarray) -> list[Stage]:
    """`seg.segment(image)` as one function per `stage_names` entry: the calls `Segmenter.encode`,
    `SAN.encode` and `Segmenter.decode` (no personal concepts) make, in their order, each under
    the precision's autocast where the segmenter has it. They pass what they compute on in a
    dict; the last leaves the `Segmentation` under "result". The forward stages run the model
    an eager frame runs (`Encoder.frozen_model`: its weights cast once in a reduced precision)."""
    model, cfg = seg.model, seg.model.cfg
    net = seg.encoder.frozen_model()
    keep = {src for _, src in cfg.fusion_map} | {cfg.feature_last_layer}
    dtype = PRECISIONS[seg.precision]

    def autocast() -> contextlib.AbstractContextManager:
        return torch.autocast(seg.device.type, dtype=dtype) if dtype else contextlib.nullcontext()

    def preprocess(s: dict) -> None:
        s["pixels"], s["geometry"] = model.preprocess(image)

    def clip_blocks(s: dict) -> None:
        with autocast():
            clip_in = F.interpolate(
                s["pixels"], scale_factor=cfg.clip_scale, mode="bilinear", align_corners=False)
            s["tokens"], s["hw"] = net.clip_visual_extractor(clip_in, keep)

    def side_adapter(s: dict) -> None:
        with autocast():
            (s["masks"], s["bias"]), _ = net.side_adapter_network.forward_with_aux(
                s["pixels"], s["tokens"], s["hw"])

    def recognition_head(s: dict) -> None:
        with autocast():
            queries, dense = net.clip_rec_head(
                s["tokens"][cfg.feature_last_layer], s["hw"], s["bias"])
            z = F.normalize(queries.float(), dim=-1)
            m = s["masks"].float()
            F.normalize(dense.float(), dim=1)  # SANFeatures' dense map: computed, unused here
        s["logits"], s["m"], s["ids"] = personal_logits(model, seg.text_rows, (), z, m)

    def decode(s: dict) -> None:
        conf, labels = semantic.semantic_argmax(s["logits"][0], s["m"][0], s["geometry"])
        s["result"] = Segmenter._to_segmentation(conf, s["ids"][labels], seg.class_names)

    return [preprocess, clip_blocks, side_adapter, recognition_head, decode]


@torch.no_grad()
def run_stages(stages: list[Stage], device: torch.device) -> tuple[list[float], Segmentation]:
    """Seconds of each stage of one frame (the device synchronized after each), and its result."""
    state: dict = {}
    times = []
    for stage in stages:
        sync(device)
        t0 = time.perf_counter()
        stage(state)
        sync(device)
        times.append(time.perf_counter() - t0)
    return times, state["result"]


@torch.no_grad()
def count_stage_flops(stages: list[Stage]) -> list[float]:
    """GFLOP of each stage of one frame, each counted on its own."""
    state: dict = {}
    flops = []
    for stage in stages:
        with flop_counter() as counter:
            stage(state)
        flops.append(counter.get_total_flops() / 1e9)
    return flops


def time_frame(
    seg: Segmenter, image: np.ndarray, repeats: int, stages: list[Stage] | None = None
) -> dict:
    """Median end-to-end seconds of a frame (and of its encode and decode), p90, peak memory;
    with `stages`, each repeat also runs them right after the end-to-end frame ("stage_s":
    each stage's median; "staged_s": the median staged frame; "same": whether every staged
    frame's labels and scores equal `Segmenter.segment`'s)."""
    device = seg.device
    seg.segment(image)  # warm-up (allocator, kernels, autotuning)
    seg.segment(image)
    if stages:
        run_stages(stages, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    totals, encodes, decodes, staged = [], [], [], []
    same = True
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        feats = seg.encode(image)
        sync(device)
        t1 = time.perf_counter()
        result = seg.decode(feats)
        sync(device)
        t2 = time.perf_counter()
        totals.append(t2 - t0)
        encodes.append(t1 - t0)
        decodes.append(t2 - t1)
        if stages:
            times, mine = run_stages(stages, device)
            staged.append(times)
            same = (same and np.array_equal(mine.labels, result.labels)
                    and np.array_equal(mine.score, result.score))
    peak = (
        torch.cuda.max_memory_allocated(device) / 2**20
        if device.type == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    stats = {
        "median_s": statistics.median(totals),
        "p90_s": float(np.percentile(totals, 90)),
        "encode_s": statistics.median(encodes),
        "decode_s": statistics.median(decodes),
        "peak_mib": peak,
    }
    if stages:
        stats["stage_s"] = [statistics.median(column) for column in zip(*staged)]
        stats["staged_s"] = statistics.median(sum(times) for times in staged)
        stats["same"] = same
    return stats


def stage_rows(
    names: list[str], device: str, precision: str, stats: dict, gflops: list[float],
    peak: float | str,
) -> list[str]:
    """The stage table's rows of one run: one per stage, then the staged frame's total."""
    rows = []
    total_s = sum(stats["stage_s"])
    for name, seconds, gflop in zip(names, stats["stage_s"], gflops):
        achieved = gflop / seconds
        # a stage without counted FLOPs (resizing, normalizing) has no throughput to compare
        cells = f"{achieved:.1f} | {share_cell(peak, achieved)}" if gflop else "- | -"
        rows.append(
            f"| {device} | {precision} | {name} | {seconds * 1e3:.1f} "
            f"| {100 * seconds / total_s:.0f}% | {gflop:.2f} | {cells} |"
        )
    gflop = sum(gflops)
    achieved = gflop / stats["staged_s"]
    rows.append(
        f"| {device} | {precision} | **total** (median staged frame; end to end "
        f"{stats['median_s'] * 1e3:.1f}) | {stats['staged_s'] * 1e3:.1f} | 100% | {gflop:.2f} "
        f"| {achieved:.1f} | {share_cell(peak, achieved)} |"
    )
    return rows


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
    parser.add_argument("--compile-cpu", action="store_true",
                        help="also time the CPU's auto precision with the forward compiled "
                        "(several minutes of compiling at ViT-B/16)")
    parser.add_argument("--device", default="all", choices=["cpu", "cuda", "all"],
                        help="which devices' rows (all: the CPU's, and a GPU's where present)")
    args = parser.parse_args()

    cfg = get_config(args.variant)
    image = np.random.default_rng(0).integers(0, 255, (args.height, args.width, 3), np.uint8)
    # (device, precision, compile mode): a GPU also gets its fp16 frame compiled with CUDA
    # graphs (`compile: reduce-overhead`), the node's fastest setting there.
    runs = [] if args.device == "cuda" else [("cpu", "fp32", "off"), ("cpu", "bf16", "off")]
    if args.compile_cpu and args.device != "cuda":
        runs.append(("cpu", auto_precision(torch.device("cpu")).precision, "default"))
    if args.device != "cpu" and torch.cuda.is_available():
        runs += [("cuda", "fp32", "off"), ("cuda", "fp16", "off"), ("cuda", "bf16", "off"),
                 ("cuda", "fp16", "reduce-overhead")]
    if not runs:
        parser.error("--device cuda: no CUDA GPU here")
    flops: dict[tuple[str, str], tuple[float, float]] = {}
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
    stage_lines = [
        "Per stage: the same frame cut at SAN's stage boundaries (`frame_stages`), for each "
        "precision the device runs natively",
        "",
        "| device | precision | stage | median ms | share of frame | GFLOP | achieved GFLOP/s "
        "| % of matmul peak |",
        "|---|---|---|---|---|---|---|---|",
    ]
    staged_notes = []
    hardware = {"cpu": cpu_name()}
    for device, precision, mode in runs:
        dev = torch.device(device)
        if device == "cuda":
            hardware["cuda"] = torch.cuda.get_device_name(dev)
        seg = Segmenter(model, "coco_stuff", device=device, precision=precision,
                        compile_mode=mode, resize="fast")  # the frame docs/bench/segment.md timed
        if mode == "off":
            flops[device, precision] = count_flops(seg, image)
        else:  # compiled: the eager row's arithmetic, compiled before timing
            print(f"[{device} {precision}] compiling ({mode}) ...", flush=True)
            seg.warm_up(args.height, args.width)
        gflop_model, gflop_post = flops[device, precision]
        stages = (frame_stages(seg, image)
                  if mode == "off" and runs_natively(dev, precision) else None)
        stats = time_frame(seg, image, args.repeats, stages)
        gflop = gflop_model + gflop_post
        achieved = gflop / stats["median_s"]
        peak = precision_peak(dev, precision)
        mark = " (auto)" if auto_precision(dev).precision == precision else ""
        mark += "" if mode == "off" else f", compiled {mode}"
        lines.append(
            f"| {device} | {precision}{mark} | {stats['median_s'] * 1e3:.1f} "
            f"| {stats['p90_s'] * 1e3:.1f} | {stats['encode_s'] * 1e3:.1f} "
            f"| {stats['decode_s'] * 1e3:.1f} | {gflop:.1f} | {achieved:.1f} | {peak_cell(peak)} "
            f"| {share_cell(peak, achieved)} | {stats['peak_mib']:.0f} |"
        )
        if stages:
            gflops = count_stage_flops(stages)
            stage_lines += stage_rows(
                stage_names(cfg), device, precision + mark, stats, gflops, peak)
            staged_notes.append(
                f"{device} {precision}: sum of stage medians {sum(stats['stage_s']) * 1e3:.1f} ms, "
                f"median staged frame {stats['staged_s'] * 1e3:.1f} ms vs end to end "
                f"{stats['median_s'] * 1e3:.1f} ms "
                f"({100 * (stats['staged_s'] / stats['median_s'] - 1):+.1f}%), stage GFLOP sum "
                f"{sum(gflops):.2f} vs {gflop:.2f} end to end, labels and scores "
                + ("identical" if stats["same"] else "DIFFERENT"))
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
        + "; ".join(f"{d}: {auto_precision(torch.device(d)).reason}"
                    for d in dict.fromkeys(r[0] for r in runs)),
        f"FLOPs: model+preprocess {gflop_model:.1f} GFLOP, SAN semantic inference "
        f"(masks to full size, softmax x sigmoid, argmax) {gflop_post:.1f} GFLOP; attention's "
        "two products included (torch's counter leaves the CPU's fused attention at zero; "
        "counted here as it counts a GPU's). "
        "CPU peak memory is the process's maximum resident set (weights included); "
        "CUDA peak is torch's max allocated. "
        f"One-time: tokenizer load {t_tok:.1f}s.",
        "",
        *stage_lines,
        "",
        f"Each of {args.repeats} repeats runs the stages right after one end-to-end "
        "`Segmenter.segment` (first table), so both see the same machine. Staged vs end to "
        "end: " + "; ".join(staged_notes)
        + ". A stage's share and its % of peak use its own median; the total row uses the "
        "median staged frame. "
        "The CLIP stage includes scaling the padded input by half for CLIP; the recognition "
        "head includes L2-normalizing its outputs and the mask-embedding x class-row product "
        "(SAN's class logits); the decode starts from those logits and runs in fp32 in every "
        "precision (outside autocast, as `Segmenter.decode`), so a reduced precision's peak is "
        "a ceiling it does not use.",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
