"""How good are teach masks made from an operator's box or point, and automatic ones?

    python -m povss_lab.eval.prompt_masks --weights models/syn_small.safetensors --out docs/results

On SYN^per's positive scenes (each shows one concept's identity, half of them beside a twin of
the same class), the operator's prompt is simulated from the true mask: the box is its bounding
box, the point its most interior pixel (the maximum of the distance transform). Every candidate
rule turns the prompt into a mask from the same frozen forward (`shot_masks.look`); each mask
is scored by its IoU with the true mask. Automatic masks (`shot_masks.auto_mask`, no prompt)
are scored where they are accepted, and with rejected frames counted as IoU 0. Writes
prompt_masks.md (the table) and prompt_masks.png (truth beside the kept rules' masks).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from povss_lab.eval.datasets.synper import SynPer
from povss_lab.eval.runner import fmt_time, stderr_progress
from povss_ros.personal.teach import TeachConfig
from povss_ros.segmenter import Segmenter
from povss_ros.teaching.shot_masks import (
    FrameView,
    Region,
    auto_mask,
    box_mask,
    box_pixels,
    look,
    point_mask,
)
from povss_ros.vis import HIGHLIGHTS, outline, titled

Rule = Callable[[FrameView, Sequence[float], str], "np.ndarray | None"]


def _iou(a: np.ndarray | None, b: np.ndarray) -> float:
    if a is None:
        return 0.0
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def _box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - iw * ih
    return iw * ih / union if union > 0 else 0.0


def _only(view: FrameView, source: str) -> list[Region]:
    return [r for r in view.candidates() if r.source.startswith(source)]


# ---------------------------------------------------------------- box rules
def box_kept(view: FrameView, box: Sequence[float], base: str) -> np.ndarray | None:
    return box_mask(view, box)[0]


def _box_union(view: FrameView, box: Sequence[float], share: float,
               source: str = "") -> np.ndarray | None:
    inside = box_pixels(box, view.segmentation.labels.shape)
    out = np.zeros_like(inside)
    for r in _only(view, source):
        if (r.mask & inside).sum() >= share * r.area:
            out |= r.mask & inside
    return out if out.any() else None


def _box_fit(view: FrameView, box: Sequence[float], source: str = "",
             cut: bool = True) -> np.ndarray | None:
    """ONE candidate: the one whose extent (cut to the box) best matches the box, weighted by
    the share of it inside the box."""
    inside = box_pixels(box, view.segmentation.labels.shape)
    best, best_fit = None, 0.0
    for r in _only(view, source):
        part = r.mask & inside
        if part.any():
            ys, xs = np.nonzero(part)
            fit = _box_iou((xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), box)
            fit *= part.sum() / r.area
            if fit > best_fit:
                best, best_fit = (part if cut else r.mask), fit
    return best


def box_mask_iou(view: FrameView, box: Sequence[float], base: str) -> np.ndarray | None:
    """ONE candidate: the best mask IoU with the box's rectangle, cut to the box."""
    inside = box_pixels(box, view.segmentation.labels.shape)
    best, best_iou = None, 0.0
    for r in view.candidates():
        iou = _iou(r.mask, inside)
        if iou > best_iou:
            best, best_iou = r.mask & inside, iou
    return best


def box_base_pixels(view: FrameView, box: Sequence[float], base: str) -> np.ndarray | None:
    """No choice: the pixels inside the box that the open vocabulary labels as the base class."""
    labels = view.segmentation.labels
    mask = (labels == view.segmentation.class_names.index(base)) & box_pixels(box, labels.shape)
    return mask if mask.any() else None


def box_base_else_fit(view: FrameView, box: Sequence[float], base: str) -> np.ndarray | None:
    mask = box_base_pixels(view, box, base)
    return mask if mask is not None else _box_fit(view, box)


BOX_RULES: dict[str, Rule] = {
    "all candidates at least half inside, united, cut to the box (kept)": box_kept,
    "all candidates at least 30% inside, united": lambda v, b, _: _box_union(v, b, 0.3),
    "all candidates at least 70% inside, united": lambda v, b, _: _box_union(v, b, 0.7),
    "label regions at least half inside, united": lambda v, b, _: _box_union(v, b, 0.5, "label"),
    "one candidate: best extent fit x share inside, cut": lambda v, b, _: _box_fit(v, b),
    "one candidate: best extent fit, not cut": lambda v, b, _: _box_fit(v, b, cut=False),
    "one SAN proposal: best extent fit, cut": lambda v, b, _: _box_fit(v, b, "proposal"),
    "one label region: best extent fit, cut": lambda v, b, _: _box_fit(v, b, "label"),
    "one candidate: best mask IoU with the box, cut": box_mask_iou,
    "base-class pixels inside the box": box_base_pixels,
    "base-class pixels inside the box, else best extent fit": box_base_else_fit,
    "the box itself (no model)": lambda v, b, _: box_pixels(b, v.segmentation.labels.shape),
}


# ---------------------------------------------------------------- point rules
def point_kept(view: FrameView, point: Sequence[float], base: str) -> np.ndarray | None:
    return point_mask(view, point)[0]


def _holding(view: FrameView, point: Sequence[float], source: str = "") -> list[Region]:
    x, y = int(point[0]), int(point[1])
    return [r for r in _only(view, source) if r.mask[y, x]]


def point_region(view: FrameView, point: Sequence[float], base: str) -> np.ndarray | None:
    """The label map's connected region under the point, alone."""
    x, y = int(point[0]), int(point[1])
    return next((r.mask for r in view.regions if r.mask[y, x]), None)


def point_best_proposal(view: FrameView, point: Sequence[float], base: str) -> np.ndarray | None:
    found = _holding(view, point, "proposal")
    return max(found, key=lambda r: r.score).mask if found else None


def point_smallest(view: FrameView, point: Sequence[float], base: str) -> np.ndarray | None:
    found = _holding(view, point)
    return min(found, key=lambda r: r.area).mask if found else None


def point_base_proposal(view: FrameView, point: Sequence[float], base: str) -> np.ndarray | None:
    """The most probable base-word proposal under the point, else the label region."""
    found = [r for r in _holding(view, point, "proposal") if r.word == base]
    return max(found, key=lambda r: r.score).mask if found else point_region(view, point, base)


def point_region_cut(view: FrameView, point: Sequence[float], base: str) -> np.ndarray | None:
    """The label region under the point, cut by the most probable proposal under it."""
    region, found = point_region(view, point, base), _holding(view, point, "proposal")
    if region is None or not found:
        return region
    return region & max(found, key=lambda r: r.score).mask


POINT_RULES: dict[str, Rule] = {
    "label region under the point + label regions half inside the most probable proposal "
    "holding it (kept)": point_kept,
    "label region under the point": point_region,
    "label region under the point, cut by the most probable proposal": point_region_cut,
    "most probable SAN proposal under the point": point_best_proposal,
    "most probable base-word proposal under the point, else label region": point_base_proposal,
    "smallest candidate under the point": point_smallest,
}


# ---------------------------------------------------------------- measurement
def prompts_from_truth(truth: np.ndarray) -> tuple[tuple[float, ...], tuple[float, float]]:
    """The operator's box (the true mask's bounding box) and point (its most interior pixel)."""
    ys, xs = np.nonzero(truth)
    box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
    dist = cv2.distanceTransform(np.pad(truth, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    y, x = np.unravel_index(int(dist.argmax()), dist.shape)
    return box, (float(x), float(y))


def measure_world(seg: Segmenter, bench: SynPer, cfg: TeachConfig, progress: Callable,
                  keep: int = 0) -> tuple[dict[str, list[float]], dict[str, int], list]:
    """IoU per rule over every positive scene; `keep` scenes' masks are kept for the picture."""
    scores: dict[str, list[float]] = {n: [] for n in (*BOX_RULES, *POINT_RULES, "auto")}
    counts = {"auto accepted": 0, "scenes": 0, "twin scenes": 0}
    kept, start = [], time.perf_counter()
    specs = bench.concepts()
    for ci, spec in enumerate(specs):
        for sid in spec.positive_ids:
            sample = bench.sample(sid)
            truth = sample.personal_mask
            view = look(seg, sample.image)
            box, point = prompts_from_truth(truth)
            masks = {n: rule(view, box, spec.base_class) for n, rule in BOX_RULES.items()}
            masks |= {n: rule(view, point, spec.base_class) for n, rule in POINT_RULES.items()}
            auto, _ = auto_mask(view, spec.base_class, cfg.auto_min_score, cfg.auto_dominance)
            masks["auto"] = auto
            for name, mask in masks.items():
                if name != "auto" or auto is not None:
                    scores[name].append(_iou(mask, truth))
            counts["auto accepted"] += auto is not None
            counts["scenes"] += 1
            if len(kept) < keep and ci % 4 == 0 and sid.endswith("00"):
                kept.append((sample, spec, box, point, masks))
        progress(f"world {bench.world_seed}: concept {ci + 1}/{len(specs)} ({spec.name}), "
                 f"{fmt_time(time.perf_counter() - start)}")
    return scores, counts, kept


def table(results: dict[int, tuple[dict, dict]]) -> str:
    worlds = sorted(results)
    head = "| prompt | rule | " + " | ".join(
        f"world {w}{' (seen)' if w == 0 else ' (unseen)'} mean / median IoU" for w in worlds)
    lines = [head + " |", "|---|---|" + "---:|" * len(worlds)]
    for kind, rules in (("box", BOX_RULES), ("point", POINT_RULES)):
        for name in rules:
            cells = [f"{100 * np.mean(results[w][0][name]):.1f} / "
                     f"{100 * np.median(results[w][0][name]):.1f}" for w in worlds]
            bold = "**" if "(kept)" in name else ""
            lines.append(f"| {kind} | {bold}{name}{bold} | " + " | ".join(cells) + " |")
    accepted, with_zero = [], []
    for w in worlds:
        s, c = results[w]
        a = s["auto"]
        accepted.append(f"{100 * np.mean(a):.1f} / {100 * np.median(a):.1f} "
                        f"({len(a)} of {c['scenes']} accepted)")
        zeros = [*a, *[0.0] * (c["scenes"] - len(a))]
        with_zero.append(f"{100 * np.mean(zeros):.1f} / {100 * np.median(zeros):.1f}")
    lines.append("| none | automatic, accepted frames | " + " | ".join(accepted) + " |")
    lines.append("| none | automatic, rejected frames as 0 | " + " | ".join(with_zero) + " |")
    return "\n".join(lines)


def picture(kept: list, box_rule: str, point_rule: str) -> np.ndarray:
    """One row per scene: the truth, the kept box rule's mask, the point rule's, automatic."""
    rows = []
    for sample, spec, box, point, masks in kept:
        tiles = []
        for title, mask in (("truth", sample.personal_mask), ("box", masks[box_rule]),
                            ("point", masks[point_rule]), ("automatic", masks["auto"])):
            img = sample.image.copy()
            if mask is not None:
                outline(img, mask, HIGHLIGHTS[0])
            if title == "box":
                cv2.rectangle(img, (int(box[0]), int(box[1])), (int(box[2]) - 1, int(box[3]) - 1),
                              HIGHLIGHTS[1], 1)
            if title == "point":
                cv2.drawMarker(img, (int(point[0]), int(point[1])), HIGHLIGHTS[1],
                               cv2.MARKER_CROSS, 12, 2)
            iou = "" if title == "truth" else ": rejected" if mask is None else (
                f" IoU {_iou(mask, sample.personal_mask):.2f}")
            name = spec.name if title == "truth" else title
            tiles.append(titled(img, f"{name}{iou}"))
        rows.append(np.concatenate(tiles, axis=1))
    return np.concatenate(rows, axis=0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--out", default="docs/results")
    p.add_argument("--worlds", type=int, nargs="+", default=[0, 1],
                   help="SYN^per world seeds (0: identities the model was trained on)")
    p.add_argument("--concepts", type=int, default=28)
    p.add_argument("--positives", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg, results, kept = TeachConfig(), {}, []
    for w in args.worlds:
        bench = SynPer(w, args.concepts, args.positives)
        seg = Segmenter.from_weights(args.weights, bench.vocabulary, device=args.device)
        seg.resize = "exact"  # SAN's official resize, as the evaluation's
        scores, counts, shown = measure_world(seg, bench, cfg, stderr_progress,
                                              keep=3 if not kept else 0)
        results[w], kept = (scores, counts), kept or shown
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(["python -m povss_lab.eval.prompt_masks", *(argv or sys.argv[1:])])
    md = (f"# Teach masks from prompts (SYN^per positives, {args.concepts} concepts x "
          f"{args.positives} scenes per world)\n\n`{command}`"
          f"\n\nIoU (%) with the identity's true mask; box = its bounding box, point = its most "
          f"interior pixel.\n\n{table(results)}\n")
    (out / "prompt_masks.md").write_text(md)
    box_rule = next(n for n in BOX_RULES if "(kept)" in n)
    point_rule = next(n for n in POINT_RULES if "(kept)" in n)
    shown = picture(kept, box_rule, point_rule)
    shown = cv2.resize(shown, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    cv2.imwrite(str(out / "prompt_masks.png"), shown[:, :, ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
