"""`povss` command line: the whole product without ROS.

povss segment IMAGE... --weights san_vit_b_16.pth [--vocab coco_stuff] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("povss")


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8, with a clear error for unreadable files."""
    import cv2

    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"error: cannot read image {path} (missing, or not an image format)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def write_png(path: Path, array: np.ndarray) -> None:
    """Atomic PNG write (temp file + rename) so readers never see half an image."""
    import os

    import cv2

    tmp = path.with_name(f".{path.name}.tmp.png")
    if not cv2.imwrite(str(tmp), array):
        raise SystemExit(f"error: cannot write {path}")
    os.replace(tmp, path)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="SAN checkpoint (.pth official or .safetensors)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="run with seeded random weights (plumbing checks only: the labels are meaningless)",
    )
    p.add_argument("--variant", help="vit_b16 | vit_l14_336 | tiny (default: from the file)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument(
        "--vocab",
        default="coco_stuff",
        help="'coco_stuff', a comma-separated list, or a .txt file with one word per line",
    )


def make_segmenter(args: argparse.Namespace):  # noqa: ANN201 - lazy import keeps --help fast
    from .segmenter import Segmenter

    if not args.weights and not args.random_weights:
        raise SystemExit(
            "error: no weights: pass --weights PATH to the SAN checkpoint "
            "(san_vit_b_16.pth from SAN's authors' Hugging Face page, Mendel192/san), "
            "or --random-weights for a plumbing check"
        )
    return Segmenter.from_weights(
        args.weights, args.vocab, args.variant, args.device, args.precision
    )


def cmd_segment(args: argparse.Namespace) -> int:
    from .vis import overlay

    seg = make_segmenter(args)
    if seg.random_weights:
        log.warning("RANDOM WEIGHTS: these overlays show plumbing, not recognition")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(args.images, start=1):
        image = read_rgb(path)
        t0 = time.perf_counter()
        result = seg.segment(image)
        dt = time.perf_counter() - t0
        stem = Path(path).stem
        write_png(out / f"{stem}_labels.png", result.labels)
        picture = overlay(image, result.labels, result.class_names, result.personal_ids)
        write_png(out / f"{stem}_overlay.png", picture[:, :, ::-1])
        table = {
            "image": str(path),
            "size": list(image.shape[:2]),
            "random_weights": seg.random_weights,
            "classes": {
                str(cid): {"name": result.class_names[cid], "mean_confidence": score}
                for cid, score in result.class_scores.items()
            },
        }
        (out / f"{stem}_classes.json").write_text(json.dumps(table, indent=2))
        names = ", ".join(result.class_names[c] for c in result.present()[:6])
        log.info(
            "[%d/%d] %s %dx%d in %.2fs: %s",
            i,
            len(args.images),
            path,
            image.shape[1],
            image.shape[0],
            dt,
            names,
        )
    log.info("wrote label PNGs (uint16 class ids), overlays and class tables to %s", out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="povss", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("segment", help="segment images into labelled PNGs and overlays")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", default="out/segment", help="output folder")
    add_model_args(p)
    p.set_defaults(func=cmd_segment)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    from .san.checkpoint import CheckpointError
    from .segmenter import SegmenterError

    try:
        return args.func(args)
    except (CheckpointError, SegmenterError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
