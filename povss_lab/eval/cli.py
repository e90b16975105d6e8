"""`python -m povss_lab.eval`: the paper's protocol and ablation on SYN^per or a real
benchmark, and its reports.

    python -m povss_lab.eval --weights models/syn_small.safetensors --out docs/results  # SYN^per
    python -m povss_lab.eval --dataset cub --root PATH --weights san_vit_b_16.pth --shots 1 3 5

Writes <out>/<name>.md (tables), <name>.json (every record, the summary, the settings) and
<name>_vs_k.png (IoU^per and mIoU against K, one line per method). SYN^per also gets the
interference check (several concepts taught together).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from povss_lab.eval.report import plot_vs_k, results_table_markdown, save_json
from povss_ros.io import atomic_write

if TYPE_CHECKING:  # torch, the model and the world load only when the command runs
    from povss_lab.eval.runner import EvalRun

LABELS = {
    "none": "SAN alone (none)",
    "prompt": "prompt",
    "prompt+negative": "prompt + negative mask",
    "prompt+visual": "prompt + visual",
    "all": "all three",
    "all+even": "all three, negative evened (ours)",
    "all+even+identity": "all three, evened, one object by identity (the node's)",
}
# Several concepts together are taught as the node teaches them.
INTERFERENCE_METHOD = "all+even"
# Paper, Table 3 (SAN, CUB^per, K=5): mIoU, IoU^per, precision, recall.
PAPER_ABLATION = {
    "none": (77.32, 68.25, 92.25, 72.95),
    "prompt": (77.89, 69.70, 74.75, 91.04),
    "prompt+negative": (77.89, 73.71, 80.07, 90.17),
    "prompt+visual": (77.65, 65.94, 70.06, 91.58),
    "all": (78.29, 76.80, 84.51, 89.07),
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _flat(groups: object) -> tuple[int, ...]:
    """``--shots 1 3 5`` and ``--shots 1,3,5`` alike."""
    if groups and isinstance(next(iter(groups)), tuple):
        return tuple(x for g in groups for x in g)
    return tuple(groups)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `python -m povss_lab.eval` (defaults: the documented full SYN^per run)."""
    p.add_argument("--dataset", default="syn", choices=("syn", "fss", "cub", "ade"),
                   help="syn: the synthetic world; fss/cub/ade: a local copy at --root")
    p.add_argument("--root", help="the dataset's folder (fss, cub, ade)")
    p.add_argument("--ade-names", help="ADE-847 class names file, if not under --root (ade)")
    p.add_argument("--weights", help="models/syn_small.safetensors (syn) or san_vit_b_16.pth")
    p.add_argument("--random-weights", action="store_true", help="TINY random SAN (plumbing)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    p.add_argument("--resize", default="exact", choices=("exact", "fast"),
                   help="exact: SAN's official resize (PIL bilinear on uint8), as its "
                   "published figures; fast: torch's resize on the device, for comparison")
    p.add_argument("--out", default="docs/results", help="output folder")
    p.add_argument("--name", help="stem of the output files (default: synper, cubper, ...)")
    p.add_argument("--shots", "--ks", dest="ks", type=_ints, nargs="+", default=[(1, 3, 5)],
                   help="shot counts K, e.g. --shots 1 3 5")
    p.add_argument("--seeds", type=_ints, nargs="+", default=[(0, 1, 2)], help="episode seeds")
    p.add_argument("--methods", default=",".join(LABELS), help="comma-separated subset")
    p.add_argument("--prompt-init", choices=("base", "name"),
                   help="T_per starts from the base class or the concept's own name "
                   "(default: base for syn, name for the paper's datasets, as the paper)")
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--num-points", type=int, default=12544)
    p.add_argument("--concat", action="store_true", help="positive|negative side by side")
    p.add_argument("--interference", type=int, help="concepts taught together (syn: 5)")
    p.add_argument("--interference-k", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    syn = p.add_argument_group("SYN^per only")
    syn.add_argument("--world-seed", type=int, default=0)
    syn.add_argument("--concepts", type=int, default=28, help="concepts (2 per thing class)")
    syn.add_argument("--positives", type=int, default=12, help="positive scenes per concept")
    syn.add_argument("--negatives", type=int, default=11, help="negative scenes per concept")
    syn.add_argument("--size", default="320x240", help="scene size WxH")
    syn.add_argument("--hard-fraction", type=float, default=0.5, help="positives with a twin")


def _segmenter(args: argparse.Namespace, vocabulary: list[str]) -> object:
    from povss_ros.segmenter import Segmenter

    if args.random_weights:
        from povss_ros.san.config import TINY
        from povss_ros.san.model import build_san

        seg = Segmenter(build_san(TINY), vocabulary, args.device, random_weights=True)
    elif not args.weights:
        hint = "models/syn_small.safetensors" if args.dataset == "syn" else "san_vit_b_16.pth"
        raise SystemExit(f"error: pass --weights {hint} (or --random-weights)")
    else:
        seg = Segmenter.from_weights(args.weights, vocabulary=vocabulary, device=args.device)
    seg.resize = args.resize
    return seg


def _benchmark(args: argparse.Namespace) -> object:
    """The benchmark named by --dataset; a missing or corrupt dataset is a one-line error."""
    if args.dataset == "syn":
        from povss_lab.eval.datasets.synper import SynPer

        w, h = (int(x) for x in args.size.lower().split("x"))
        return SynPer(args.world_seed, args.concepts, args.positives, args.negatives, (w, h),
                      args.hard_fraction)
    if not args.root:
        raise SystemExit(f"error: --dataset {args.dataset} needs --root PATH (a local copy)")
    from povss_lab.eval.datasets import open_benchmark

    options = {"class_names": args.ade_names} if args.dataset == "ade" and args.ade_names else {}
    try:
        return open_benchmark(args.dataset, args.root, **options)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from None


def cmd_eval(args: argparse.Namespace) -> int:
    """Run the benchmark end to end and write the reports."""
    import torch

    from povss_lab.eval.interference import distinct_class_concepts, interference
    from povss_lab.eval.runner import ablation_methods, evaluate
    from povss_ros.personal.teach import TeachConfig

    torch.set_num_threads(args.threads)
    syn = args.dataset == "syn"
    args.ks, args.seeds = _flat(args.ks), _flat(args.seeds)
    args.name = args.name or ("synper" if syn else f"{args.dataset}per")
    args.prompt_init = args.prompt_init or ("base" if syn else "name")
    if args.interference is None:
        args.interference = 5 if syn else 0
    bench = _benchmark(args)
    seg = _segmenter(args, bench.vocabulary)
    base = TeachConfig(iterations=args.iterations, num_points=args.num_points)
    every = ablation_methods(base)
    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(names) - set(every))
    if unknown:
        raise SystemExit(f"error: unknown methods {unknown}; choose from {sorted(every)}")
    start = time.perf_counter()
    run = evaluate(
        bench, seg, {m: every[m] for m in names}, args.ks, args.seeds, concat=args.concat,
        prompt_init=args.prompt_init,
    )
    inter = None
    if args.interference > 1:
        idx = distinct_class_concepts(bench, args.interference)
        # The node's configuration: all three components, negative proposal evened.
        inter = interference(bench, seg, every[INTERFERENCE_METHOD], idx, args.interference_k,
                             args.seeds)
        inter["method"] = INTERFERENCE_METHOD
    meta = {
        "command": _command_line(),
        "args": {k: v for k, v in vars(args).items() if k != "func"},
        "weights": args.weights if not args.random_weights else "RANDOM (TINY)",
        "weights_sha256": _sha256(args.weights) if args.weights else None,
        "model": seg.model.cfg.name,
        "threads": args.threads,
        "total_seconds": time.perf_counter() - start,
        "benchmark": bench.describe() if syn else {
            "name": bench.name, "root": str(args.root), "concepts": len(bench.concepts()),
            "vocabulary": len(bench.vocabulary)},
        "prompt_init": args.prompt_init,
    }
    write_reports(run, inter, meta, Path(args.out), args.name)
    print(f"wrote {args.out}/{args.name}.md/.json/_vs_k.png in {meta['total_seconds']:.0f}s")
    return 0


def _command_line() -> str:
    return " ".join(["python -m povss_lab.eval", *sys.argv[1:]])


def _sha256(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _describe(b: dict) -> str:
    """One line about the benchmark: SYN^per's generator settings or a dataset's size."""
    if "world_seed" not in b:
        return (f"{b['name']} at `{b['root']}`, {b['concepts']} concepts, vocabulary of "
                f"{b['vocabulary']} classes")
    return (f"{b['concepts']} concepts ({len(b['classes'])} classes), "
            f"{b['positives_per_concept']} positive + {b['negatives_per_concept']} negative "
            f"scenes each, {b['size_wh'][0]}x{b['size_wh'][1]}, world seed {b['world_seed']}, "
            f"hard fraction {b['hard_fraction']}")


def _pm(d: dict, key: str) -> str:
    return f"{d[key]:.2f} ± {d[key + '_std']:.2f}"


def render_markdown(run: EvalRun, inter: dict | None, meta: dict) -> str:
    """The report: settings, frozen mIoU, per-K table, K=5 ablation, interference."""
    summ, b = run.summary(), meta["benchmark"]
    kmax = max(run.ks)
    out = [
        f"# {run.benchmark} results\n",
        f"Command: `{meta['command']}`  ",
        f"Weights: `{meta['weights']}` (sha256 {meta['weights_sha256']}), model "
        f"`{meta['model']}`, {meta['threads']} thread(s); wall time "
        f"{meta['total_seconds'] / 60:.1f} min (evaluation {run.seconds / 60:.1f} min, "
        f"{run.encodes} frozen forwards).  ",
        f"Benchmark: {_describe(b)}; K = {list(run.ks)}, seeds {list(run.seeds)}"
        f"{', concat inputs' if run.concat else ''}; prompt initialized from the "
        f"{'concept name' if meta.get('prompt_init') == 'name' else 'base class'}.\n",
        "Scores in percent. Per concept, TP/FP/FN (and the confusion matrix) are summed over "
        "its whole test set (test positives plus as many negatives); the table shows the mean "
        "over concepts, then mean ± sample std over seeds. `pooled` sums TP/FP/FN over all "
        "concepts instead. mIoU covers the vocabulary plus the personal class, ground truth = "
        "each image's semantic map (the frozen model's own prediction where the dataset has "
        "none, as the paper does) with the personal mask pasted on top.\n",
        f"## Frozen model on the benchmark's scenes\n\nmIoU **{run.frozen['miou']:.2f}** over "
        f"the {sum(v == v for v in run.frozen['iou'].values())} classes present "
        f"({run.frozen['pixels']} pixels: every distinct scene once, vocabulary only, no "
        "concept set).\n",
    ]
    ious = [{"class": c, "iou": v} for c, v in run.frozen["iou"].items()]
    out.append(results_table_markdown(ious, [("class", "class"), ("iou", "IoU")]))
    rows = []
    for m in run.methods:
        for k in run.ks:
            d = summ[m][k]
            rows.append(
                {
                    "method": LABELS.get(m, m),
                    "k": k,
                    "iou": _pm(d, "iou_per"),
                    "p": _pm(d, "precision"),
                    "r": _pm(d, "recall"),
                    "miou": _pm(d, "miou"),
                    "pooled": _pm(d, "pooled_iou_per"),
                }
            )
    cols = [
        ("method", "method"),
        ("k", "K"),
        ("iou", "IoU^per"),
        ("p", "precision"),
        ("r", "recall"),
        ("miou", "mIoU"),
        ("pooled", "pooled IoU^per"),
    ]
    out += ["\n## Per K (mean ± std over seeds)\n", results_table_markdown(rows, cols)]
    from povss_lab.eval.runner import IDENTITY

    abl = []
    for m in run.methods:
        d, cfg = summ[m][kmax], run.methods[m] or {}
        marks = ["✓" if cfg.get(f"use_{s}") else "" for s in ("prompt", "negative", "visual")]
        if marks[1] and cfg.get("even_negative"):
            marks[1] = "✓ evened (ours)"
        paper = PAPER_ABLATION.get(m)
        abl.append(
            {
                "p": marks[0],
                "n": marks[1],
                "v": marks[2],
                "one": "✓" if m.endswith(IDENTITY) else "",
                "miou": d["miou"],
                "iou": d["iou_per"],
                "prec": d["precision"],
                "rec": d["recall"],
                "same": d.get("same_class_fp", math.nan),
                "paper": " / ".join(f"{x:.2f}" for x in paper) if paper else "",
            }
        )
    cols = [
        ("p", "prompt"),
        ("n", "negative"),
        ("v", "visual"),
        ("one", "one object by identity"),
        ("miou", "mIoU"),
        ("iou", "IoU^per"),
        ("prec", "precision"),
        ("rec", "recall"),
        ("same", "FPs on the base class (%)"),
        ("paper", "paper CUB^per (mIoU / IoU^per / P / R)"),
    ]
    out += [
        f"\n## Ablation at K={kmax} (paper Table 3 layout, mean over seeds)\n",
        "*FPs on the base class*: the share of false-positive pixels whose ground truth is "
        "another instance of the concept's base class (another mug than mine), pooled over "
        "concepts; the rest fall on other classes.\n",
        results_table_markdown(abl, cols),
    ]
    if inter:
        out += [_interference_md(inter)]
    return "\n".join(out)


def _interference_md(inter: dict) -> str:
    from povss_lab.eval.interference import DECODINGS

    rows = [dict(r) for r in inter["per_concept"]]  # cells added below stay out of the json
    mean = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0] if k != "concept"}
    rows.append({"concept": "**mean**", **mean})
    n = len(rows) - 1
    cols = [
        ("concept", "concept"),
        ("alone_iou_per", "IoU^per alone"),
        ("together_iou_per", f"with all {n}, fused"),
        ("delta_iou_per", "Δ fused"),
        ("delta_std", "Δ std (seeds)"),
        ("joint_iou_per", f"with all {n}, joint"),
        ("joint_delta_iou_per", "Δ joint"),
        ("precision_cell", "precision alone / fused / joint"),
        ("recall_cell", "recall alone / fused / joint"),
    ]
    for r in rows:
        for m in ("precision", "recall"):
            r[f"{m}_cell"] = " / ".join(f"{r[f'{t}_{m}']:.1f}" for t in DECODINGS)
    return (
        f"\n## Interference: {n} concepts taught together "
        f"({LABELS[inter.get('method', 'all')]}, K={inter['k']}, seeds {inter['seeds']})\n\n"
        "Each concept's IoU^per on its own test set, decoded with only itself vs. with "
        "every concept present (`set_concepts`); same shots and teaching seeds. *Fused* is "
        "the node's decoding (each concept decides as if alone, conflicts go to the higher "
        "score: `personal.fusion`); *joint* puts every concept in one softmax (the plain rule, "
        "shown for comparison).\n\n"
        + results_table_markdown(rows, cols)
    )


def write_reports(run: EvalRun, inter: dict | None, meta: dict, out: Path, name: str) -> None:
    """<name>.md, <name>.json and <name>_vs_k.png under `out` (atomic writes)."""
    out.mkdir(parents=True, exist_ok=True)
    text = render_markdown(run, inter, meta)
    atomic_write(out / f"{name}.md", text)
    data = run.to_dict()
    cols = list(data["records"][0]) if data["records"] else []
    data["records"] = {"columns": cols, "rows": [[r[c] for c in cols] for r in data["records"]]}
    save_json(out / f"{name}.json", {"meta": meta, "run": data, "interference": inter})
    summ = run.summary()
    plot_vs_k(
        {LABELS.get(m, m): summ[m] for m in run.methods},
        out / f"{name}_vs_k.png",
        title=f"{run.benchmark}: mean over concepts and seeds",
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point: ``python -m povss_lab.eval``."""
    parser = argparse.ArgumentParser(
        prog="python -m povss_lab.eval", description=__doc__.splitlines()[0]
    )
    add_arguments(parser)
    return cmd_eval(parser.parse_args(argv))
