"""`povss` command line: segment images and teach concepts without ROS.

    povss segment IMAGE... --weights san_vit_b_16.pth [--vocab auto] [--concepts DIR]
    povss teach "my mug" --base-class cup --shots a.png:a_mask.png b.png --weights W
    povss bag RECORDING [--out OUT] [--image-topic T] --weights W [--concepts DIR]
    povss node teach|forget|list ...   (a running povss node's services, over ROS 2)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

log = logging.getLogger("povss")

SCORE_MEANING = (
    "mean SAN score of the class's pixels: per pixel, the sum over mask proposals of "
    "P(class | proposal) x sigmoid(proposal); it ranks classes, it is not a probability "
    "(overlapping proposals take it above 1)"
)


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", help="SAN checkpoint (.pth official or .safetensors)")
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="run with seeded random weights (plumbing checks only: the labels are meaningless)",
    )
    p.add_argument("--variant", help="vit_b16 | vit_l14_336 | tiny (default: from the file)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                   help="arithmetic of SAN's forward; auto (default) = the fastest the device "
                   "has natively: bf16 on a GPU from compute capability 8.0 (else fp16) or on a "
                   "CPU with avx512_bf16/amx_bf16, else fp32; fp16 needs CUDA")
    p.add_argument(
        "--vocab",
        default="auto",
        help="'auto' (the words the weights declare, else COCO-Stuff's 171), 'coco_stuff', a "
        "comma-separated list, or a .txt file with one word per line",
    )
    p.add_argument(
        "--text-cache",
        default="auto",
        help="folder keeping the vocabulary's text embeddings between runs; 'auto' = "
        "$XDG_CACHE_HOME/povss_ros (else ~/.cache/povss_ros), '' = none",
    )
    resize = setting_field("resize")
    p.add_argument("--resize", default=resize.default, choices=resize.metadata["choices"],
                   help=f"{resize.metadata['help']} (default: {resize.default})")


def setting_field(name: str):  # noqa: ANN201 - lazy import keeps --help fast
    """The user field `name` of `EngineSettings` (its default, help and choices)."""
    from .options import user_fields
    from .settings import EngineSettings

    return next(f for f in user_fields(EngineSettings) if f.name == name)


def add_teach_args(p: argparse.ArgumentParser) -> None:
    """One flag per user-facing `TeachConfig` field, named after it (defaults shown)."""
    from .options import user_fields
    from .personal.teach import TeachConfig

    group = p.add_argument_group("teaching (defaults: TeachConfig)")
    defaults = TeachConfig()
    for f in user_fields(TeachConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        text = f"{f.metadata['help']} (default: {default})"
        if isinstance(default, bool):
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=None, help=text)
        else:
            group.add_argument(flag, dest=f.name, type=type(default), default=None, help=text)


def teach_config(args: argparse.Namespace):  # noqa: ANN201 - lazy import keeps --help fast
    """`TeachConfig` with the flags the user gave applied over its defaults."""
    from .options import user_fields
    from .personal.teach import TeachConfig

    given = {f.name: getattr(args, f.name, None) for f in user_fields(TeachConfig)}
    return TeachConfig(**{k: v for k, v in given.items() if v is not None})


def folder_problem(flag: str, value: str | None) -> str | None:
    """Why `value` cannot be the folder `flag` names (it, or a folder above it, is a file)."""
    if not value:
        return None
    path = Path(value).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            return None if p.is_dir() else (
                f"{flag} {value}: {p} is a file, not a folder; name a folder (it is created "
                "if missing)")
    return None


def argument_problem(args: argparse.Namespace) -> str | None:
    """The first invalid argument, in words, before anything loads, runs or is stored: a
    folder flag naming a file, shots with and without masks, a teach flag outside its field's
    limits (`options.check`)."""
    from .io import shots_have_masks
    from .options import check, user_fields
    from .personal.teach import TeachConfig

    for flag in ("out", "concepts"):
        problem = folder_problem(f"--{flag}", getattr(args, flag, None))
        if problem:
            return problem
    try:
        shots_have_masks(getattr(args, "shots", None) or [])
    except ValueError as exc:
        return str(exc)
    for f in user_fields(TeachConfig):
        value = getattr(args, f.name, None)
        why = None if value is None else check(f, value)
        if why:
            return f"--{f.name.replace('_', '-')} {why}"
    return None


def make_segmenter(args: argparse.Namespace):  # noqa: ANN201 - lazy import keeps --help fast
    from .segmenter import Segmenter
    from .text_cache import resolve_cache_dir

    if not args.weights and not args.random_weights:
        raise SystemExit(
            "error: no weights: pass --weights PATH to the SAN checkpoint "
            "(san_vit_b_16.pth from SAN's authors' Hugging Face page, Mendel192/san), "
            "or --random-weights for a plumbing check"
        )
    return Segmenter.from_weights(
        args.weights, args.vocab, args.variant, args.device, args.precision,
        text_cache_dir=resolve_cache_dir(args.text_cache), resize=args.resize,
    )


def make_engine(args: argparse.Namespace):  # noqa: ANN201
    """Segmenter + the concept store in --concepts (loaded, problems reported)."""
    from .perception import PerceptionEngine
    from .personal.store import ConceptStore
    from .settings import EngineSettings

    seg = make_segmenter(args)
    settings = EngineSettings(concept_store=args.concepts, resize=args.resize,
                              teach=teach_config(args))
    engine = PerceptionEngine(seg, ConceptStore(Path(args.concepts).expanduser()), settings)
    for problem in engine.load_problems:
        log.warning("concept store: %s", problem)
    return engine


def cmd_segment(args: argparse.Namespace) -> int:
    from .io import read_rgb, write_json, write_png
    from .vis import overlay

    engine = make_engine(args) if args.concepts else None
    seg = engine.segmenter if engine else make_segmenter(args)
    if seg.random_weights:
        log.warning("RANDOM WEIGHTS: these overlays show plumbing, not recognition")
    out = Path(args.out)
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
        write_png(out / f"{stem}_overlay.png",
                  overlay(image, result.labels, result.class_names, result.personal_ids))
        ids = {e.name: e.class_id for e in engine.class_table()} if engine else {}
        write_json(out / f"{stem}_classes.json", {
            "image": str(path),
            "size_hw": list(image.shape[:2]),
            "random_weights": seg.random_weights,
            "mean_score": SCORE_MEANING,
            "classes": {
                str(ids.get(result.class_names[k], k)): {
                    "name": result.class_names[k],
                    "mean_score": round(score, 4),
                    "personal": k in result.personal_ids,
                }
                for k, score in result.class_scores.items()
            },
        })
        names = ", ".join(result.class_names[c] for c in result.present()[:6])
        log.info("[%d/%d] %s %dx%d in %.2fs: %s", i, len(args.images), path, image.shape[1],
                 image.shape[0], dt, names)
    log.info("wrote label PNGs (uint16 class ids), overlays and class tables to %s", out)
    return 0


def bar(label: str, it: int, n: int, note: str = "", width: int = 30) -> None:
    """A one-line progress bar on stderr, redrawn in place; the line ends at `it` == `n`."""
    done = int(width * min(it, n) / n) if n > 0 else width
    end = "\n" if it >= n else ""
    sys.stderr.write(f"\r{label} [{'#' * done}{'.' * (width - done)}] {it}/{n} {note}{end}")
    sys.stderr.flush()


def progress_bar(it: int, n: int, loss: float, width: int = 30) -> None:
    """The teach loop's progress callback: `bar` with the loss."""
    bar("teaching", it, n, f"loss {loss:.4f}", width)


def cmd_teach(args: argparse.Namespace) -> int:
    import numpy as np

    from .io import read_shots
    from .teaching.requests import TeachRequest

    if not (args.shots or args.not_shots or args.correct):
        raise SystemExit("error: give --shots (and, for a correction, --not-shots; a correction "
                         "with neither fits a concept taught for other weights again)")
    images, masks = read_shots(args.shots)  # files first: a bad one fails before the model
    others, other_masks = read_shots(args.not_shots)
    if others and not other_masks:
        raise SystemExit("error: --not-shots need their masks (IMAGE:MASK, nonzero = the "
                         "look-alike)")
    if others and images and not masks:
        raise SystemExit("error: with --not-shots, give the shots' masks too (IMAGE:MASK)")
    engine = make_engine(args)
    log.info("teaching %r (a kind of %r) from %d shot(s) and %d look-alike(s), %d iterations",
             args.name, args.base_class, len(images), len(others),
             engine.settings.teach.iterations)
    blank = [np.zeros(m.shape, bool) for m in masks + other_masks]
    request = TeachRequest(
        args.name, args.base_class, images + others, masks + blank[len(masks):],
        overwrite=args.overwrite, unique=False if args.category else None,
        correct=args.correct,
        negative_masks=blank[:len(masks)] + other_masks if others else [])
    outcome = engine.teach(request, progress=progress_bar)
    if not outcome.success:
        print(f"error: {outcome.message}", file=sys.stderr)
        return 1
    log.info("%s; stored in %s", outcome.message, engine.store.path(outcome.concept_id))
    return 0


def cmd_bag(args: argparse.Namespace) -> int:
    """Segment a recording's image topic into a new recording of the node's outputs."""
    from .ros.bag import BagError, default_output, open_input, output_problem, segment_bag

    out = Path(args.out).expanduser() if args.out else default_output(args.recording)
    try:  # the recording and the output first: a bad one fails before the model loads
        problem = output_problem(out, args.overwrite, args.recording)
        if problem:
            raise BagError(problem)
        source = open_input(args.recording, args.image_topic)
        engine = make_engine(args)
        log.info("segmenting %d message(s) of %s (%s) with %d words and %d concept(s)",
                 source.count, source.topic, source.msgtype.rsplit("/", 1)[-1],
                 len(engine.vocabulary), len(engine.concept_entries()))
        report = segment_bag(engine, source, out, storage=args.storage, node=args.node,
                             overlay=args.overlay, overwrite=args.overwrite,
                             progress=lambda i, n, note: bar("segmenting", i, n, note))
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted: {out} not written", file=sys.stderr)
        return 130
    for index, why in report.skipped[:10]:
        log.warning("skipped message %d of %s: %s", index, source.topic, why)
    if len(report.skipped) > 10:
        log.warning("... and %d more skipped", len(report.skipped) - 10)
    log.info("%d frame(s) segmented, %d message(s) skipped; wrote %s (%s): %s", report.frames,
             len(report.skipped), out, args.storage, ", ".join(report.topics))
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

    t = sub.add_parser("teach", help="learn a personal concept from a few shots")
    t.add_argument("name", help='the concept\'s name, e.g. "my mug"')
    t.add_argument("--base-class", required=True, help="a vocabulary word it is a kind of")
    t.add_argument("--shots", nargs="+", default=[], metavar="IMAGE[:MASK]",
                   help="shots with masks (nonzero = the concept), or images alone: the mask "
                   "is then the base class's best region in each")
    t.add_argument("--not-shots", nargs="+", default=[], metavar="IMAGE:MASK",
                   help='"not this one": images of look-alikes, each with its mask (nonzero = '
                   "the look-alike)")
    from .teaching.requests import add_teach_mode_flags  # numpy only: --help stays fast

    add_teach_mode_flags(t, "--not-shots")
    t.add_argument("--concepts", default="concepts", help="concept store folder")
    add_model_args(t)
    add_teach_args(t)
    t.set_defaults(func=cmd_teach)

    b = sub.add_parser("bag", help="segment a rosbag2 recording (MCAP or sqlite3) into a new "
                       "recording of the node's outputs, without ROS")
    b.add_argument("recording", help="rosbag2 folder (with metadata.yaml) or .mcap file")
    b.add_argument("--out", help="the new recording's folder (default: RECORDING_povss)")
    b.add_argument("--image-topic", help="sensor_msgs/Image or CompressedImage topic to "
                   "segment (default: the recording's only one)")
    b.add_argument("--storage", default="mcap", choices=["mcap", "sqlite3"],
                   help="the new recording's storage (default: mcap)")
    b.add_argument("--node", default="/povss",
                   help="the node name its topics go under, as the live node's ~/ (default: "
                   "/povss)")
    b.add_argument("--overlay", action="store_true", help="also record ~/overlay (bgr8)")
    b.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    concepts = setting_field("concept_store")
    b.add_argument("--concepts", default=concepts.default,
                   help=f"concept store folder, as the node's concept_store (default: "
                   f"{concepts.default})")
    add_model_args(b)
    b.set_defaults(func=cmd_bag)

    # Parsed by povss_ros.ros.client (main() hands it everything after `node`); listed here
    # for `povss --help`.
    sub.add_parser("node", add_help=False,
                   help="teach, forget or list the concepts of a running povss node over "
                   "ROS 2 (`povss node --help`)")
    return parser


def cmd_node(argv: list[str]) -> int:
    """`povss node ...`: the ROS client, imported only here (rclpy stays under ros/)."""
    try:
        from .ros.client import main as client_main
    except ImportError as exc:
        print(f"error: `povss node` needs ROS 2's rclpy and the povss_interfaces messages "
              f"({exc}): source your ROS 2 setup (and the workspace's install/setup.bash), "
              "or run `make interfaces` in a venv with the ROS 2 wheels", file=sys.stderr)
        return 1
    return client_main(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["node"]:
        return cmd_node(argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    problem = argument_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    from .san.checkpoint import CheckpointError
    from .segmenter import SegmenterError

    try:
        return args.func(args)
    except (CheckpointError, SegmenterError, ValueError, OSError) as exc:  # io.ImageError too
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
