"""The training loop of the small SAN: start or resume, step, checkpoint, evaluate, write.

Every random draw (scenes, loss points) stays on the CPU and is checkpointed with the weights
every `ckpt_every` steps, so a killed run resumed with `resume=True` sees the same data and
reaches the same weights. With several data-parallel workers (`parallel.launch`) each trains
on scenes of its own; only rank 0 logs and writes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from povss_lab.eval.runner import fmt_time
from povss_lab.synthetic.world import World
from povss_lab.training.losses import IdentityHead
from povss_lab.training.parallel import (
    SINGLE,
    Workers,
    broadcast_parameters,
    gather_objects,
)
from povss_lab.training.recipe import (
    TrainOptions,
    input_side,
    lr_at,
    make_criterion,
    make_optimizer,
    reinit_mask_decoder,
    resolve_precision,
)
from povss_lab.training.step import TrainParts, train_step
from povss_lab.training.text_prior import fit_word_prior, row_similarity
from povss_lab.training.train_data import SceneStream
from povss_lab.training.train_eval import (
    evaluate,
    held_out_scenes,
    save_loss_curve,
    save_sample_grid,
)
from povss_lab.training.weight_average import WeightAverage
from povss_ros.io import atomic_path
from povss_ros.san.checkpoint import load_weights
from povss_ros.san.config import SANConfig
from povss_ros.san.model import SAN, build_san
from povss_ros.weights import save_weights

Log = Callable[[str], None]

# Loss terms beyond SAN's own, in the order the progress lines show them.
_EXTRA_TERMS = ("aux", "sem", "patch", "identity", "qidentity")

# Worker r draws its point samples from torch seed `seed + r * stride` (worker 0: `seed`).
_GENERATOR_STRIDE = 7919


@dataclass
class _Run:
    """A run's live state: what a checkpoint saves and a resume restores."""

    parts: TrainParts
    stream: SceneStream
    history: dict[str, list[float]]
    average: WeightAverage | None
    prior: dict
    class_names: list[str]
    step: int = 0
    elapsed_before: float = 0.0


def train(
    cfg: SANConfig,
    opts: TrainOptions,
    out: str | os.PathLike,
    resume: bool = False,
    log: Log = print,
    device: str = "cpu",
    workers: Workers = SINGLE,
) -> dict:
    """Train, checkpoint, evaluate and write every output; returns the metrics dict.

    The scene stream and every random draw stay on the CPU, so a CUDA run sees the same data
    (its arithmetic, and so its weights, differ slightly). Run by each of `opts.workers`
    data-parallel processes (`launch`), every worker trains on scenes of its own and only
    rank 0 logs and writes; the others return an empty dict.
    """
    if workers.size != opts.workers or opts.batch_size % opts.workers:
        raise ValueError(f"{opts.workers} workers (running: {workers.size}) must split the "
                         f"batch of {opts.batch_size} evenly")
    if workers.parallel and device != "cpu":
        raise ValueError("data-parallel workers are for CPU cores; train on one GPU instead")
    # "auto" decided here, once (an unknown precision fails before any work)
    opts, precision_line = resolve_precision(opts, device)
    if not workers.leader:
        log = _silent
    log(precision_line)
    out = Path(out)
    torch.manual_seed(opts.seed)
    world = World(opts.world_seed, opts.identities_per_class)
    t_start = time.perf_counter()
    run = _start(cfg, opts, out, world, resume, log, device, workers)
    _loop(run, opts, out, log, t_start)
    if not workers.leader:
        return {}
    return _finish(run, cfg, opts, out, world, log, time.perf_counter() - t_start)


def _start(
    cfg: SANConfig, opts: TrainOptions, out: Path, world: World, resume: bool, log: Log,
    device: str, workers: Workers,
) -> _Run:
    """A fresh model (mask decoder reinit, text prior) or the checkpointed one, and its parts."""
    class_names = list(world.class_names)
    state_path = _state_path(out)
    state = None
    if resume and state_path.is_file() and out.is_file():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state["options"] != asdict(opts) or state["config"] != cfg.to_dict():
            raise SystemExit(f"{state_path} was written with other options or config: not resumed")
        model = load_weights(build_san(cfg, seed=None), out)
        prior = state["text_prior"]
        log(f"resuming from step {state['step']} ({state_path})")
    else:
        model = build_san(cfg, seed=opts.seed)
        reinit_mask_decoder(model, opts.seed)
        before = row_similarity(model, class_names)
        prior_losses = fit_word_prior(model, opts.text_prior_steps, opts.seed, exclude=class_names)
        after = row_similarity(model, class_names)
        prior = {"steps": opts.text_prior_steps, "class_rows_before": before,
                 "class_rows_after": after, "final_loss": prior_losses[-1:] or None}
        log(f"text prior: class-row cosine mean {before['mean_cos']:.3f} -> "
            f"{after['mean_cos']:.3f} (max {after['max_cos']:.3f})")
    model.to(device).train()
    text_rows = model.text_rows(class_names)
    head = None
    if opts.identity_weight > 0 or opts.query_identity_weight > 0:
        gen = torch.Generator().manual_seed(opts.seed + 11)
        head = IdentityHead(len(class_names) * opts.identities_per_class, cfg.embed_dim,
                            generator=gen)
        head.to(device)
        if state is not None and state.get("identity_head") is not None:
            head.load_state_dict(state["identity_head"])
    broadcast_parameters([model] if head is None else [model, head], workers)
    average = WeightAverage(model, opts.ema_decay) if opts.ema_decay > 0 else None
    parts = TrainParts(
        model, make_criterion(len(class_names), opts).to(device), text_rows,
        make_optimizer(model, opts, head),
        torch.Generator().manual_seed(opts.seed + _GENERATOR_STRIDE * workers.rank),
        head, workers,
    )
    stream = SceneStream(world, opts.seed, shard=workers.rank, n_objects=opts.train_objects)
    run = _Run(parts, stream, _new_history(opts), average, prior, class_names)
    if state is not None:
        parts.optimizer.load_state_dict(state["optimizer"])
        stream.restore(state["streams"][workers.rank])
        parts.generator.set_state(state["generators"][workers.rank])
        run.history = state["history"]
        if average is not None:
            average.load_state_dict(state["weight_average"])
        run.step, run.elapsed_before = int(state["step"]), float(state["elapsed_s"])
    return run


def _new_history(opts: TrainOptions) -> dict[str, list[float]]:
    """Per-step loss lists: SAN's terms, plus each extra term the options switch on."""
    history: dict[str, list[float]] = {"total": [], "ce": [], "mask": [], "dice": []}
    extra = {"aux": bool(opts.aux_blocks), "sem": opts.semantic_weight > 0,
             "patch": opts.patch_text_weight > 0, "identity": opts.identity_weight > 0,
             "qidentity": opts.query_identity_weight > 0}
    history.update({k: [] for k in _EXTRA_TERMS if extra[k]})
    return history


def _loop(run: _Run, opts: TrainOptions, out: Path, log: Log, t_start: float) -> None:
    """Steps until `opts.steps`, with a progress line every `log_every` and checkpoints."""
    parts = run.parts
    per_worker = opts.batch_size // opts.workers
    t_loop, step0 = time.perf_counter(), run.step
    while run.step < opts.steps:
        lr = lr_at(run.step, opts)
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        losses = train_step(parts, run.stream.next(per_worker), opts, input_side(run.step, opts))
        if run.average is not None:
            run.average.update(parts.model)
        for key in run.history:
            run.history[key].append(losses[key])
        run.step += 1
        if run.step % opts.ckpt_every == 0 and run.step < opts.steps:
            _checkpoint(run, opts, out, time.perf_counter() - t_start)
        if run.step % opts.log_every == 0 or run.step == opts.steps:
            rate = (run.step - step0) / (time.perf_counter() - t_loop)
            log(_progress_line(run, opts, lr, rate, time.perf_counter() - t_start))


def _progress_line(run: _Run, opts: TrainOptions, lr: float, rate: float, elapsed: float) -> str:
    window = {k: sum(v[-opts.log_every:]) / len(v[-opts.log_every:])
              for k, v in run.history.items()}
    return (f"step {run.step}/{opts.steps} loss {window['total']:.3f} (ce {window['ce']:.3f} "
            f"mask {window['mask']:.3f} dice {window['dice']:.3f}"
            + "".join(f" {k} {window[k]:.3f}" for k in _EXTRA_TERMS if k in window)
            + f") lr {lr:.2e} {rate:.2f} it/s elapsed {fmt_time(elapsed)} "
            f"ETA {fmt_time((opts.steps - run.step) / max(rate, 1e-9))} "
            f"({opts.precision} forward)")


def _checkpoint(run: _Run, opts: TrainOptions, out: Path, elapsed: float) -> None:
    """Weights and every worker's random state (so a resumed run sees the same data)."""
    parts, workers = run.parts, run.parts.workers
    streams = gather_objects(run.stream.state(), workers)
    generators = gather_objects(parts.generator.get_state(), workers)
    if not workers.leader:
        return
    save_weights(parts.model, out, class_names=run.class_names)
    head, average = parts.identity_head, run.average
    _save_state(_state_path(out), {
        "step": run.step, "optimizer": parts.optimizer.state_dict(), "streams": streams,
        "generators": generators, "history": run.history,
        "identity_head": head.state_dict() if head is not None else None,
        "weight_average": average.state_dict() if average is not None else None,
        "elapsed_s": run.elapsed_before + elapsed,
        "options": asdict(opts), "config": parts.model.cfg.to_dict(), "text_prior": run.prior,
    })


def _finish(
    run: _Run, cfg: SANConfig, opts: TrainOptions, out: Path, world: World, log: Log,
    elapsed: float,
) -> dict:
    """Save the final weights (the average's, if any), evaluate, and return the metrics."""
    model, history = run.parts.model, run.history
    train_s = run.elapsed_before + elapsed
    model.eval()
    raw = None
    if run.average is not None:
        if opts.eval_scenes > 0:  # what the average bought: the last weights, measured alike
            raw = held_out_evaluations(model, opts)
        run.average.copy_to(model)
    save_weights(model, out, class_names=run.class_names)
    log(f"trained {opts.steps} steps in {fmt_time(train_s)}; weights -> {out} "
        f"({out.stat().st_size / 2**20:.1f} MiB)")
    result = {
        "variant": cfg.name, "weights": out.name, "weights_bytes": out.stat().st_size,
        "train": {"options": asdict(opts), "wall_time_s": round(train_s, 1),
                  "torch_threads": torch.get_num_threads(), "workers": opts.workers,
                  "text_prior": run.prior,
                  "final_loss_mean_last_100": sum(history["total"][-100:])
                  / max(len(history["total"][-100:]), 1)},
        "config": cfg.to_dict(), "class_names": run.class_names,
    }
    if history["total"]:
        save_loss_curve(history, out.with_name(out.stem + "_loss.png"),
                        identities=len(world.all_identities()))
        result["train"]["loss_mean_per_50_steps"] = {
            k: [round(sum(v[i:i + 50]) / len(v[i:i + 50]), 4) for i in range(0, len(v), 50)]
            for k, v in history.items()
        }
    result.update(evaluate_outputs(model, opts, out, log))
    if raw:
        result["eval_raw_last_step"] = raw
        log(f"without the weight average: held-out mIoU {100 * raw['eval']['miou']:.1f} "
            f"(unseen identities {100 * raw['eval_new_identities']['miou']:.1f})")
    _state_path(out).unlink(missing_ok=True)
    return result


def evaluate_outputs(model: SAN, opts: TrainOptions, out: Path, log: Log = print) -> dict:
    """Held-out mIoU (same world, unseen identities) and the sample grid."""
    if opts.eval_scenes <= 0:
        return {}
    t0 = time.perf_counter()
    res = held_out_evaluations(model, opts)
    res["eval_time_s"] = round(time.perf_counter() - t0, 1)
    if opts.sample_rows > 0:
        world = World(opts.world_seed)
        class_names = list(world.class_names)
        scenes = held_out_scenes(world, opts.sample_rows, opts.eval_seed)
        save_sample_grid(model, model.text_rows(class_names), class_names, scenes,
                         out.with_name(out.stem + "_samples.png"))
    log(f"held-out mIoU {100 * res['eval']['miou']:.1f} (unseen identities "
        f"{100 * res['eval_new_identities']['miou']:.1f}) over {opts.eval_scenes} scenes")
    for name, iou in res["eval"]["iou"].items():
        log(f"  {name:>9}: {'n/a' if iou is None else f'{100 * iou:.1f}'}")
    return res


def held_out_evaluations(model: SAN, opts: TrainOptions) -> dict:
    """mIoU on `eval_scenes` held-out scenes of the training world and of unseen identities."""
    res = {}
    for key, world_seed, what in (("eval", opts.world_seed, f"stream seed {opts.eval_seed}"),
                                  ("eval_new_identities", opts.world_seed + 1,
                                   "unseen identities")):
        world = World(world_seed)
        class_names = list(world.class_names)
        scenes = held_out_scenes(world, opts.eval_scenes, opts.eval_seed)
        res[key] = evaluate(model, model.text_rows(class_names), class_names, scenes)
        res[key]["protocol"] = f"{opts.eval_scenes} scenes of World({world_seed}), {what}"
    return res


def _state_path(out: Path) -> Path:
    return out.with_name(out.name + ".state.pt")


def _save_state(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _silent(_line: str) -> None:
    """The log of every worker but rank 0."""
