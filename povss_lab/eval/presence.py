"""Presence gate of personal concepts: choose its defaults on SYN^per's negative frames.

    python -m povss_lab.eval.presence --weights models/syn_small.safetensors --out docs/results

A personal concept is one object: the node reports its largest region (`objects.find_objects`)
and calls it present only when the region covers at least `presence_min_area` of the frame and
its mean SAN score reaches `presence_min_score`. Personal segmenters' best-known failure is a
false positive while the object is absent, so this measures, per SYN^per concept taught from K
shots (the node's teach settings, the runner's shots and teaching seeds), the concept's largest
region on the test positives (the identity in view) and on every negative (the identity absent,
another identity of the same class in view: the hard case). A negative is a false positive when
the concept is reported present; a positive is a hit when it is present AND its region's IoU
with the identity's true mask is at least `HIT_IOU` (a region on the twin is no hit).

The gate is chosen on the first world (identities the model was trained on) by `RULE`; the
other worlds are held out. Other statistics of the same region (`STATISTICS`: score quantiles,
the share of the base-class blob it sits in, its score relative to plain SAN's or to the
concept's own score on its shots) are scored too, to see whether one separates better.
Writes presence.md and presence.png (score vs area, gate drawn); `--save-stats` keeps every
frame's statistics as JSON, `--load-stats` rebuilds the report from them without the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

HIT_IOU = 0.3  # a positive counts as found when the reported region has this IoU with the truth
MAX_LOSS = 0.05  # the gate may lose at most this share of the hits made without it
RULE = (f"among the grid's gates that keep at least {1 - MAX_LOSS:.0%} of the positives found "
        f"without a gate (present, IoU >= {HIT_IOU}), the lowest false-positive rate on the "
        "negatives; ties: more hits, then the lower score, then the lower area")
# Round candidate thresholds: area as a fraction of the frame, score in SAN's units.
AREAS = (0.0, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02)
SCORES = tuple(round(0.05 * i, 2) for i in range(41))  # 0 .. 2
STATISTICS = {  # region statistics scored for separation -> what they are
    "score": "mean SAN score (find_objects' statistic)",
    "median": "median score", "p10": "10th percentile of the score",
    "p90": "90th percentile", "max_score": "highest score",
    "share": "the region's share of the connected concept-or-base-class blob holding it",
    "claim": "mean score over plain SAN's (no concept) mean score on the same pixels",
    "area": "region area (fraction of the frame)",
    "relative": "mean score over the concept's mean score on its own shots",
}


@dataclass
class FrameStat:
    """The concept's largest region in one test frame (zeros when it claims no pixel)."""

    world: int
    concept: str
    seed: int
    sample_id: str
    positive: bool
    twin: bool  # another identity of the base class is in view
    frame_px: int
    pixels: int  # every pixel labelled as the concept
    area_px: int  # its largest region (what the node reports)
    score: float  # mean SAN score over that region (find_objects' statistic)
    median: float = 0.0
    p10: float = 0.0
    p90: float = 0.0
    max_score: float = 0.0
    share: float = 0.0  # region / the base-class-or-concept blob holding it
    claim: float = 0.0  # its score over plain SAN's (no concept) on the same pixels
    iou: float = 0.0  # region vs the identity's true mask
    ref_score: float = 0.0  # the concept's mean score on its own shots' masks (per teach)

    @property
    def area(self) -> float:
        return self.area_px / self.frame_px

    @property
    def relative(self) -> float:
        """The region's mean score over the concept's own score on its shots."""
        return self.score / self.ref_score if self.ref_score > 0 else 0.0

    @property
    def hit(self) -> bool:
        return self.positive and self.area_px > 0 and self.iou >= HIT_IOU


def passes(s: FrameStat, min_area: float, min_score: float, stat: str = "score") -> bool:
    """`find_objects`' presence test on the recorded region (the same comparisons); `stat`
    names the statistic compared with `min_score` (find_objects': the mean score)."""
    return (s.area_px > 0 and s.area_px >= min_area * s.frame_px
            and getattr(s, stat) >= min_score)


def frame_stat(labels: np.ndarray, score: np.ndarray, k: int, base_id: int,
               truth: np.ndarray, plain: np.ndarray | None = None, **meta: object) -> FrameStat:
    """Statistics of class k's largest region, found as the node finds it (`find_objects`);
    `plain` is SAN's score map without the concept (for `claim`)."""
    from povss_ros.objects import ClassInfo, ObjectConfig, find_objects

    classes = [ClassInfo(i, str(i), "", stuff=True) for i in range(k)] + [
        ClassInfo(k, "concept", "concept")]
    obj = find_objects(labels, score, classes, ObjectConfig(presence_min_area=0.0,
                                                            presence_min_score=0.0))[-1]
    h, w = labels.shape
    pixels = int(np.count_nonzero(labels == k))
    if not obj.present:
        return FrameStat(**meta, frame_px=h * w, pixels=pixels, area_px=0, score=0.0)
    region = obj.full_mask(h, w)
    vals = score[region]
    blob = ((labels == k) | (labels == base_id)).astype(np.uint8)
    _, comp = cv2.connectedComponents(blob, connectivity=8)
    share = obj.area / int(np.count_nonzero(comp == comp[region][0]))
    union = int(np.count_nonzero(region | truth))
    return FrameStat(**meta, frame_px=h * w, pixels=pixels, area_px=obj.area, score=obj.score,
                     median=float(np.median(vals)), p10=float(np.quantile(vals, 0.1)),
                     p90=float(np.quantile(vals, 0.9)), max_score=float(vals.max()),
                     share=float(share), claim=float(
                         obj.score / plain[region].mean()) if plain is not None else 0.0,
                     iou=float(np.count_nonzero(region & truth) / union) if union else 0.0)


def gate_rates(stats: Sequence[FrameStat], min_area: float, min_score: float,
               stat: str = "score") -> dict:
    """FP rate on negatives, hit rate (recall) and wrong-object rate on positives."""
    neg = [s for s in stats if not s.positive]
    pos = [s for s in stats if s.positive]
    shown = [s for s in pos if passes(s, min_area, min_score, stat)]
    return {"area": min_area, "score": min_score,
            "fp": sum(passes(s, min_area, min_score, stat) for s in neg) / max(len(neg), 1),
            "recall": sum(s.hit for s in shown) / max(len(pos), 1),
            "wrong": sum(not s.hit for s in shown) / max(len(pos), 1)}


def choose_gate(stats: Sequence[FrameStat], areas: Sequence[float] = AREAS,
                scores: Sequence[float] = SCORES, max_loss: float = MAX_LOSS,
                stat: str = "score") -> dict:
    """The gate `RULE` picks from the grid (the ungated row is always allowed)."""
    before = gate_rates(stats, 0.0, 0.0)
    rows = [gate_rates(stats, a, s, stat) for a in areas for s in scores]
    ok = [r for r in rows if r["recall"] >= (1 - max_loss) * before["recall"] - 1e-12]
    return min(ok or [before], key=lambda r: (r["fp"], -r["recall"], r["score"], r["area"]))


def auc(neg: Sequence[float], pos: Sequence[float]) -> float:
    """P(a positive's value > a negative's), ties half: how well a statistic separates."""
    if not neg or not pos:
        return float("nan")
    n, p = np.asarray(neg, float), np.asarray(pos, float)
    return float((p[:, None] > n[None]).mean() + 0.5 * (p[:, None] == n[None]).mean())


def separation(stats: Sequence[FrameStat], min_area: float) -> list[dict]:
    """Per statistic, on frames with a region of at least `min_area`: AUC between the
    negatives and the hits, and the negatives' FP rate when a threshold on it alone (below
    the area gate) keeps `1 - MAX_LOSS` of the hits."""
    kept = [s for s in stats if passes(s, min_area, -np.inf)]
    neg = [s for s in stats if not s.positive]
    hits = [s for s in kept if s.hit]
    rows = []
    for name in STATISTICS:
        hv = sorted(getattr(s, name) for s in hits)
        nv = [getattr(s, name) for s in kept if not s.positive]
        cut = hv[int(np.floor(MAX_LOSS * len(hv)))] if hv else 0.0
        rows.append({"statistic": name, "auc": auc(nv, hv), "cut": cut,
                     "fp": sum(v >= cut for v in nv) / max(len(neg), 1)})
    return rows


def shot_score(seg: object, features: Sequence, masks: Sequence[np.ndarray], k: int) -> float:
    """The taught concept's mean SAN score on its own shots: per shot, over the mask's pixels
    it claims (shots where it claims none are skipped), then averaged; 0 when it claims none.
    The node's teach decodes every shot anyway (the fit IoU), so it could keep this number."""
    means = []
    for f, mask in zip(features, masks):
        d = seg.decode(f, identity=False)  # the classifier's regions, as the gate saw them
        mine = (d.labels == k) & np.asarray(mask, bool)
        if mine.any():
            means.append(float(d.score[mine].mean()))
    return float(np.mean(means)) if means else 0.0


def collect(world: int, weights: str, concepts: int, positives: int, negatives: int, k: int,
            seeds: Sequence[int], device: str, progress: Callable[[str], None]
            ) -> list[FrameStat]:
    """Teach every concept of one SYN^per world per episode seed, and measure its test frames
    (the episode's test positives and ALL of the concept's negatives)."""
    from povss_lab.eval.datasets.synper import SynPer
    from povss_lab.eval.protocol import make_episode
    from povss_lab.eval.runner import fmt_time, make_concept, seeded
    from povss_ros.personal.teach import TeachConfig
    from povss_ros.segmenter import Segmenter

    bench = SynPer(world, concepts, positives, negatives)
    seg = Segmenter.from_weights(weights, bench.vocabulary, device=device)
    seg.resize = "exact"  # SAN's official resize, the node's default
    v, out, start = len(bench.vocabulary), [], time.perf_counter()
    specs = bench.concepts()
    for ci, spec in enumerate(specs):
        base_id = bench.vocabulary.index(spec.base_class)
        samples = {sid: bench.sample(sid) for sid in (*spec.positive_ids, *spec.negative_ids)}
        feats = {sid: seg.encode(s.image) for sid, s in samples.items()}
        plain: dict[str, np.ndarray] = {}
        for seed in seeds:
            ep = make_episode(spec.positive_ids, spec.negative_ids, k, seed)
            cfg = seeded(TeachConfig(), seed, k, ci)
            concept, _ = make_concept(seg, spec, [samples[s] for s in ep.shots],
                                      [feats[s] for s in ep.shots], cfg, "base")
            seg.set_concepts([concept])
            ref = shot_score(seg, [feats[s] for s in ep.shots],
                             [samples[s].personal_mask for s in ep.shots], v)
            for sid in (*ep.test_positive, *spec.negative_ids):
                s, d = samples[sid], seg.decode(feats[sid], identity=False)
                if sid not in plain:
                    plain[sid] = seg.decode(feats[sid], ()).score
                truth = np.asarray(s.personal_mask, bool)
                twin = bool(np.any((s.semantic == base_id) & ~truth))
                out.append(frame_stat(d.labels, d.score, v, base_id, truth, plain[sid],
                                      world=world, concept=spec.name, seed=seed,
                                      sample_id=sid, positive=bool(truth.any()), twin=twin,
                                      ref_score=ref))
        seg.set_concepts([])
        progress(f"world {world}: concept {ci + 1}/{len(specs)} ({spec.name}) "
                 f"{fmt_time(time.perf_counter() - start)}")
    return out


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def report(stats: Sequence[FrameStat], command: str, machine: str, seconds: float) -> str:
    """presence.md: the rule, the chosen gate, before/after per world, the separation table and
    the alternative gate relative to each concept's own shot score."""
    worlds = sorted({s.world for s in stats})
    by = {w: [s for s in stats if s.world == w] for w in worlds}
    gate = choose_gate(by[worlds[0]])
    rel = choose_gate(by[worlds[0]], stat="relative")
    a, sc = gate["area"], gate["score"]
    gates = (("none (any concept pixel)", 0.0, 0.0, "score"),
             ("placeholder 0.002 / score 0", 0.002, 0.0, "score"),
             (f"**chosen {a:g} / score {sc:g}**", a, sc, "score"),
             (f"alternative {rel['area']:g} / relative {rel['score']:g}", rel["area"],
              rel["score"], "relative"))
    lines = [
        "# Presence gate of personal concepts (SYN^per)\n",
        f"Command: `{command}`  ",
        f"Machine: torch CPU capability {machine}; {seconds / 60:.1f} min.\n",
        f"Rule: {RULE}. Chosen on world {worlds[0]}; "
        f"{', '.join(f'world {w}' for w in worlds[1:]) or 'no other world'} held out.\n",
        f"**Chosen defaults: `presence_min_area` = {a:g}, `presence_min_score` = {sc:g}.**\n",
        "Gate = minimum area (fraction of the frame) / minimum statistic; *relative* = the "
        "region's mean score over the concept's mean score on its own shots (same rule, "
        "not what `find_objects` does today).\n",
        "| world | frames (neg / pos) | gate | FP rate on negatives | recall (hit) on "
        "positives | wrong object on positives |",
        "|---|---|---|---:|---:|---:|",
    ]
    for w in worlds:
        n = sum(not s.positive for s in by[w])
        for label, ga, gs, stat in gates:
            r = gate_rates(by[w], ga, gs, stat)
            lines.append(f"| {w} | {n} / {len(by[w]) - n} | {label} | {_pct(r['fp'])} | "
                         f"{_pct(r['recall'])} | {_pct(r['wrong'])} |")
    for w in worlds:
        lines += ["", f"Separation on world {w} (frames whose region passes the area gate "
                  f"{a:g}; AUC = P(hit's value > negative's value); FP = negatives passing the "
                  f"threshold on this statistic alone that keeps {1 - MAX_LOSS:.0%} of the "
                  "hits):\n", "| statistic | what | AUC | threshold | FP rate |",
                  "|---|---|---:|---:|---:|"]
        for r in separation(by[w], a):
            lines.append(f"| {r['statistic']} | {STATISTICS[r['statistic']]} | {r['auc']:.3f} | "
                         f"{r['cut']:.4g} | {_pct(r['fp'])} |")
    return "\n".join(lines) + "\n"


def plot(stats: Sequence[FrameStat], gate: dict, path: Path) -> None:
    """Mean score vs region area per world: negatives, hits, other positives; gate drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    worlds = sorted({s.world for s in stats})
    fig = Figure(figsize=(5 * len(worlds), 4), dpi=90)
    FigureCanvasAgg(fig)
    for i, w in enumerate(worlds):
        ax = fig.add_subplot(1, len(worlds), i + 1)
        got = [s for s in stats if s.world == w and s.area_px > 0]
        for label, keep, colour in (("negative", lambda s: not s.positive, "tab:red"),
                                    ("positive, hit", lambda s: s.hit, "tab:green"),
                                    ("positive, wrong region", lambda s: s.positive and not s.hit,
                                     "tab:orange")):
            pts = [(s.area, s.score) for s in got if keep(s)]
            if pts:
                ax.scatter(*zip(*pts), s=6, alpha=0.5, c=colour, label=label, linewidths=0)
        ax.set_xscale("log")
        ax.axvline(max(gate["area"], 1e-5), c="k", lw=1)
        ax.axhline(gate["score"], c="k", lw=1)
        ax.set(xlabel="largest region (fraction of frame)", ylabel="mean SAN score",
               title=f"world {w}")
        ax.legend(fontsize=7, markerscale=2)
    fig.suptitle(f"gate (black): area >= {gate['area']:g}, mean score >= {gate['score']:g}, "
                 f"chosen on world {worlds[0]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="models/syn_small.safetensors")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--world-seed", type=int, nargs="+", default=[0, 1],
                   help="SYN^per worlds; the gate is chosen on the first (0: seen identities)")
    p.add_argument("--concepts", type=int, default=28)
    p.add_argument("--shots", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="episode seeds")
    p.add_argument("--positives", type=int, default=12, help="positive scenes per concept")
    p.add_argument("--negatives", type=int, default=20, help="negative scenes per concept")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--save-stats", help="write every frame's statistics to this JSON file")
    p.add_argument("--load-stats", help="report from saved statistics (no model run)")
    args = p.parse_args(argv)
    import torch

    from povss_lab.eval.runner import stderr_progress

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    if args.load_stats:
        saved = json.loads(Path(args.load_stats).read_text())
        stats = [FrameStat(**r) for r in saved["frames"]]
        seconds, command = saved["seconds"], saved["command"]
    else:
        stats = [s for w in args.world_seed for s in collect(
            w, args.weights, args.concepts, args.positives, args.negatives, args.shots,
            args.seeds, args.device, stderr_progress)]
        seconds = time.perf_counter() - start
        command = " ".join(["python -m povss_lab.eval.presence", *(argv or sys.argv[1:])])
    if args.save_stats:
        Path(args.save_stats).write_text(json.dumps(
            {"command": command, "seconds": seconds,
             "frames": [dataclasses.asdict(s) for s in stats]}))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    first = [s for s in stats if s.world == stats[0].world]
    md = report(stats, command, torch.backends.cpu.get_cpu_capability(), seconds)
    md += "\n![score vs area](presence.png)\n"
    md += _kept_notes(out / "presence.md")
    (out / "presence.md").write_text(md)
    plot(stats, choose_gate(first), out / "presence.png")
    print(md)
    return 0


def _kept_notes(path: Path) -> str:
    """The hand-written "## Notes" section of an existing report, kept across reruns."""
    text = path.read_text() if path.exists() else ""
    at = text.find("\n## Notes")
    return text[at:] if at >= 0 else ""


if __name__ == "__main__":
    sys.exit(main())
