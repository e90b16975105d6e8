"""Train the synthetic world's small SAN on a CPU (or one GPU), seeded; the command line.

    python -m povss_lab.training.train --out models/syn_small.safetensors --steps 6600 \
        --low-res 128 3300 --precision auto --workers 2 --seed 0

`make train-synthetic` runs exactly this: about 46 minutes on 2 CPU cores with native bf16
(avx512_bf16; auto then runs the forward in bf16, as the committed model was trained); a CPU
without it trains in fp32 (slower, and the weights differ slightly). The recipe is in
`recipe.py`, one step in `step.py`, the loop in `loop.py`. Outputs next to --out: the weights
(config and class words in the metadata, so `Segmenter.from_weights` needs nothing else),
`<stem>.json` (metrics, config, options, times), `<stem>_loss.png` and `<stem>_samples.png`.
`--resume` continues a killed run where it stopped, with the same scenes and the same result;
runs are bit-for-bit repeatable on one machine with the same thread and worker count.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from povss_lab.eval.report import save_json
from povss_lab.interrupt import run_main
from povss_lab.synthetic.world import IDENTITIES_PER_CLASS, SCENE_OBJECTS, STUFF_CLASSES
from povss_lab.training.loop import evaluate_outputs, train
from povss_lab.training.parallel import Workers, launch
from povss_lab.training.recipe import SYN_SMALL, TRAIN_PRECISIONS, TrainOptions
from povss_ros.precision import AUTO
from povss_ros.san.checkpoint import load_weights
from povss_ros.san.config import SANConfig
from povss_ros.san.model import build_san
from povss_ros.weights import config_for_weights


def build_parser() -> argparse.ArgumentParser:
    """Every flag, its default taken from `TrainOptions` or `SYN_SMALL`."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="models/syn_small.safetensors")
    ap.add_argument("--steps", type=int, default=TrainOptions.steps)
    ap.add_argument("--batch-size", type=int, default=TrainOptions.batch_size)
    ap.add_argument("--lr", type=float, default=TrainOptions.lr)
    ap.add_argument("--seed", type=int, default=TrainOptions.seed)
    ap.add_argument("--patch-text-weight", type=float, default=TrainOptions.patch_text_weight,
                    help="weight of the dense patch-text alignment loss on F (0: off)")
    ap.add_argument("--identity-weight", type=float, default=TrainOptions.identity_weight,
                    help="weight of the identity term on instance-pooled F (0: off)")
    ap.add_argument("--query-identity-weight", type=float,
                    default=TrainOptions.query_identity_weight,
                    help="weight of the identity term on the matched queries' Z (0: off)")
    ap.add_argument("--identities-per-class", type=int,
                    default=TrainOptions.identities_per_class,
                    help=f"looks per thing class in the training world (at least "
                         f"{IDENTITIES_PER_CLASS}: the first {IDENTITIES_PER_CLASS} are the "
                         f"held-out scenes' and SYN^per's seen identities)")
    ap.add_argument("--class-targets", action="store_true",
                    help="one target per class (SAN's semantic targets) instead of one per "
                         "object; implies --query-identity-weight 0")
    ap.add_argument("--semantic-weight", type=float, default=TrainOptions.semantic_weight,
                    help="weight of the dense semantic-inference loss (0: SAN's set loss only)")
    ap.add_argument("--class-balance", type=float, default=TrainOptions.class_balance,
                    help="dense losses weight each class by its pixel count^-P (0: per-pixel "
                         "mean, 1: mean over the classes present)")
    ap.add_argument("--deep-supervision", type=int, nargs="+", default=[], metavar="BLOCK",
                    help="also put the set loss on the masks decoded after these side blocks "
                         f"(1 to {SYN_SMALL.side_depth - 1}; SAN's deep supervision)")
    ap.add_argument("--train-objects", type=int, nargs=2, metavar=("MIN", "MAX"),
                    default=TrainOptions.train_objects,
                    help="objects per training scene (held-out scenes keep "
                         f"{SCENE_OBJECTS[0]} to {SCENE_OBJECTS[1]})")
    ap.add_argument("--ema-decay", type=float, default=TrainOptions.ema_decay,
                    help="ship an exponential moving average of the weights with this decay "
                         "(0: the last step's weights); both are evaluated")
    ap.add_argument("--eval-scenes", type=int, default=TrainOptions.eval_scenes)
    ap.add_argument("--min-size", type=int, default=SYN_SMALL.min_size,
                    help="shortest side the scenes are resized to (fewer pixels: faster steps, "
                         "lower mIoU per step); stored in the weights' config")
    ap.add_argument("--low-res", type=int, nargs=2, metavar=("SIZE", "STEPS"),
                    default=(TrainOptions.low_res_size, TrainOptions.low_res_steps),
                    help="progressive resizing: the first STEPS steps resize the scenes to a "
                         "shortest side of SIZE instead of --min-size (cheaper steps early; "
                         "0 0: off)")
    ap.add_argument("--clip-scale", type=float, default=SYN_SMALL.clip_scale,
                    help="factor CLIP's towers see the padded input at (more: more tokens per "
                         "object for recognition, slower steps); stored in the weights' config")
    ap.add_argument("--queries", type=int, default=SYN_SMALL.num_queries,
                    help="mask proposals (SAN's queries) per image, at least one per target (each "
                         "stuff class and object of a training scene); stored in the weights' "
                         "config")
    ap.add_argument("--precision", default=TrainOptions.precision,
                    choices=[AUTO, *sorted(TRAIN_PRECISIONS)],
                    help="bf16: the model's forward under bf16 autocast (losses, gradients "
                         "and weights stay fp32); auto (default): bf16 where --device has it "
                         "natively (a CPU with avx512_bf16/amx_bf16, a GPU from compute "
                         "capability 8.0), else fp32; the log and the metrics name the one used")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads in all")
    ap.add_argument("--workers", type=int, default=None,
                    help="data-parallel CPU processes sharing --threads (default: 2 on the CPU, "
                         "1.44x the steps per second on 2 cores; 1 on a GPU). The scenes, and "
                         "so the weights, depend on it")
    ap.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    ap.add_argument("--resume", action="store_true", help="continue a killed run of --out")
    ap.add_argument("--eval-only", action="store_true", help="evaluate the weights at --out")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.workers is None:
        args.workers = 2 if args.device == "cpu" else 1
    if argv is None and "OMP_WAIT_POLICY" not in os.environ:
        # OpenMP threads spin while they wait for each other; on a shared CPU one starved
        # thread then stalls both. Passive waiting frees the core instead. The OpenMP runtime
        # reads this when torch loads, so start again with it set.
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "povss_lab.training.train", *sys.argv[1:]])
    opts = options_from_args(args)
    out = Path(args.out)
    if args.eval_only:
        torch.set_num_threads(args.threads)
        torch.set_flush_denormal(True)  # see _train_and_save
        model = load_weights(build_san(config_for_weights(out, None), seed=None), out)
        model.to(args.device).eval()
        result = evaluate_outputs(model, replace(opts, eval_scenes=max(opts.eval_scenes, 1)), out)
        if _metrics_path(out).is_file():
            result = {**json.loads(_metrics_path(out).read_text()), **result}
        _write_metrics(out, result)
        return 0
    check_arguments(args)
    cfg = replace(SYN_SMALL, min_size=args.min_size, clip_scale=args.clip_scale,
                  num_queries=args.queries)
    threads = max(1, args.threads // opts.workers)
    launch(_train_and_save, opts.workers, threads, cfg, opts, out, args.resume, args.device)
    return 0


def options_from_args(args: argparse.Namespace) -> TrainOptions:
    """The run's `TrainOptions` from the parsed flags."""
    return TrainOptions(steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                        seed=args.seed, eval_scenes=args.eval_scenes,
                        semantic_weight=args.semantic_weight,
                        patch_text_weight=args.patch_text_weight,
                        identity_weight=args.identity_weight,
                        class_balance=args.class_balance, ema_decay=args.ema_decay,
                        train_objects=tuple(args.train_objects),
                        aux_blocks=tuple(sorted(set(args.deep_supervision))),
                        query_identity_weight=0.0 if args.class_targets
                        else args.query_identity_weight,
                        instance_targets=not args.class_targets, workers=args.workers,
                        low_res_size=args.low_res[0], low_res_steps=args.low_res[1],
                        precision=args.precision,
                        identities_per_class=args.identities_per_class)


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse flags a run cannot honour, before anything is written (SystemExit)."""
    div = SYN_SMALL.size_divisibility
    targets = len(STUFF_CLASSES) + args.train_objects[1]  # the most in one training scene
    problems = [
        (args.min_size < div, f"--min-size must be at least {div}, got {args.min_size}"),
        (args.low_res[1] < 0 or (args.low_res[1] and not div <= args.low_res[0]),
         f"--low-res needs SIZE >= {div} and STEPS >= 0, got {args.low_res}"),
        (any(not 1 <= b < SYN_SMALL.side_depth for b in args.deep_supervision),
         f"--deep-supervision blocks must lie in 1 to {SYN_SMALL.side_depth - 1}, got "
         f"{args.deep_supervision}"),
        (not 1 <= args.train_objects[0] <= args.train_objects[1],
         f"--train-objects needs 1 <= MIN <= MAX, got {args.train_objects}"),
        (args.identities_per_class < IDENTITIES_PER_CLASS,
         f"--identities-per-class must be at least {IDENTITIES_PER_CLASS}, got "
         f"{args.identities_per_class}"),
        (not 0 <= args.ema_decay < 1, f"--ema-decay must be in [0, 1), got {args.ema_decay}"),
        (not 0 < args.clip_scale <= 1, f"--clip-scale must be in (0, 1], got {args.clip_scale}"),
        (args.queries < targets, f"--queries must be at least the {targets} targets of the "
         f"densest training scene, got {args.queries}"),
    ]
    for failed, message in problems:
        if failed:
            raise SystemExit(f"error: {message}")


def _train_and_save(workers: Workers, cfg: SANConfig, opts: TrainOptions, out: Path,
                    resume: bool, device: str) -> None:
    """One training process; rank 0 writes the metrics next to the weights."""
    # SAN's -100 attention masks make subnormal floats that slow CPU matmuls several-fold.
    torch.set_flush_denormal(True)
    result = train(cfg, opts, out, resume=resume, device=device, workers=workers)
    if workers.leader:
        _write_metrics(out, result)


def _metrics_path(out: Path) -> Path:
    """`<stem>.json` next to the weights."""
    return out.with_name(out.stem + ".json")


def _write_metrics(out: Path, result: dict) -> None:
    save_json(_metrics_path(out), result)
    print(f"metrics -> {_metrics_path(out)}")


if __name__ == "__main__":
    run_main(main)
