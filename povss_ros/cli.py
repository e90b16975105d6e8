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
    p.add_argument(
        "--text-cache",
        default="auto",
        help="folder keeping the vocabulary's text embeddings between runs; 'auto' = "
        "$XDG_CACHE_HOME/povss_ros (else ~/.cache/povss_ros), '' = none",
    )


def make_segmenter(args: argparse.Namespace):  # noqa: ANN201 - lazy import keeps --help fast
    from .segmenter import Segmenter

    if not args.weights and not args.random_weights:
        raise SystemExit(
            "error: no weights: pass --weights PATH to the SAN checkpoint "
            "(san_vit_b_16.pth from SAN's authors' Hugging Face page, Mendel192/san), "
            "or --random-weights for a plumbing check"
        )
    from .text_cache import resolve_cache_dir

    return Segmenter.from_weights(
        args.weights, args.vocab, args.variant, args.device, args.precision,
        text_cache_dir=resolve_cache_dir(args.text_cache),
    )


def make_engine(args: argparse.Namespace):  # noqa: ANN201
    """Segmenter + the concept store in --concepts (loaded, problems reported)."""
    from .perception import EngineSettings, PerceptionEngine
    from .personal.store import ConceptStore

    seg = make_segmenter(args)
    settings = EngineSettings(concept_store=Path(args.concepts).expanduser())
    for key in ("iterations", "lr", "alpha", "lambda_m", "lambda_z", "even_negative"):
        if getattr(args, key, None) is not None:
            setattr(settings, "learning_rate" if key == "lr" else key, getattr(args, key))
    engine = PerceptionEngine(seg, ConceptStore(settings.concept_store), settings)
    for problem in engine.load_problems:
        log.warning("concept store: %s", problem)
    return engine


def cmd_segment(args: argparse.Namespace) -> int:
    from .vis import overlay

    engine = make_engine(args) if args.concepts else None
    seg = engine.segmenter if engine else make_segmenter(args)
    if seg.random_weights:
        log.warning("RANDOM WEIGHTS: these overlays show plumbing, not recognition")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(args.images, start=1):
        image = read_rgb(path)
        t0 = time.perf_counter()
        if engine:
            frame = engine.segment(image)
            result, labels = frame.segmentation, frame.labels
        else:
            result = seg.segment(image)
            labels = result.labels
        dt = time.perf_counter() - t0
        stem = Path(path).stem
        write_png(out / f"{stem}_labels.png", labels)
        picture = overlay(image, result.labels, result.class_names, result.personal_ids)
        write_png(out / f"{stem}_overlay.png", picture[:, :, ::-1])
        ids = {e.name: e.class_id for e in engine.class_table()} if engine else {}
        table = {
            "image": str(path),
            "size": list(image.shape[:2]),
            "random_weights": seg.random_weights,
            "classes": {
                str(ids.get(result.class_names[k], k)): {
                    "name": result.class_names[k],
                    "mean_score": score,
                    "personal": k in result.personal_ids,
                }
                for k, score in result.class_scores.items()
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


def parse_shot(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """IMAGE:MASK -> (RGB image, bool mask); the mask is any image, nonzero = the concept."""
    import cv2

    if ":" not in spec:
        raise SystemExit(f"error: --shots takes IMAGE:MASK pairs, got {spec!r}")
    image_path, mask_path = spec.rsplit(":", 1)
    mask = cv2.imread(mask_path, cv2.IMREAD_GRAYSCALE)
    if mask is None:
        raise SystemExit(f"error: cannot read mask {mask_path}")
    return read_rgb(image_path), mask > 0


def cmd_teach(args: argparse.Namespace) -> int:
    from .perception import TeachRequest

    engine = make_engine(args)
    pairs = [parse_shot(s) for s in args.shots]
    total = engine.settings.iterations
    width = 30

    def bar(it: int, n: int, loss: float) -> None:
        done = int(width * it / n)
        end = "\n" if it == n else ""
        sys.stderr.write(
            f"\rteaching [{'#' * done}{'.' * (width - done)}] {it}/{n} loss {loss:.4f}{end}"
        )
        sys.stderr.flush()

    log.info(
        "teaching %r (a kind of %r) from %d shot(s), %d iterations",
        args.name,
        args.base_class,
        len(pairs),
        total,
    )
    outcome = engine.teach(
        TeachRequest(
            args.name,
            args.base_class,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            overwrite=args.overwrite,
        ),
        progress=bar,
    )
    if not outcome.success:
        print(f"error: {outcome.message}", file=sys.stderr)
        return 1
    log.info("%s; stored in %s", outcome.message, engine.store.path(outcome.concept_id))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="povss", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("segment", help="segment images into labelled PNGs and overlays")
    p.add_argument("images", nargs="+")
    p.add_argument("--out", default="out/segment", help="output folder")
    p.add_argument("--concepts", help="concept store folder: also segment personal concepts")
    add_model_args(p)
    p.set_defaults(func=cmd_segment)

    t = sub.add_parser("teach", help="learn a personal concept from image:mask shots")
    t.add_argument("name", help='the concept\'s name, e.g. "my mug"')
    t.add_argument("--base-class", required=True, help="a vocabulary word it is a kind of")
    t.add_argument("--shots", nargs="+", required=True, metavar="IMAGE:MASK")
    t.add_argument("--concepts", default="concepts", help="concept store folder")
    t.add_argument("--overwrite", action="store_true", help="replace a concept of this name")
    t.add_argument("--iterations", type=int)
    t.add_argument("--lr", type=float)
    t.add_argument("--alpha", type=float)
    t.add_argument("--lambda-m", dest="lambda_m", type=float)
    t.add_argument("--lambda-z", dest="lambda_z", type=float)
    t.add_argument("--even-negative", dest="even_negative", action=argparse.BooleanOptionalAction,
                   help="negative proposal's words evened out at inference (ours; the "
                        "paper's rule: --no-even-negative)")
    add_model_args(t)
    t.set_defaults(func=cmd_teach)
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
