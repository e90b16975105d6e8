"""Several concepts taught together: does each keep its IoU^per when the others are present?

The multi-concept check beyond the paper: each concept's IoU^per decoded alone, with every
concept present and fused as the node decodes them (`povss_ros.personal.fusion`), and with
every concept in one softmax, on the same shots, seeds and test images as `runner.evaluate`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

import numpy as np

from povss_lab.eval.benchmark import PersonalBenchmark
from povss_lab.eval.runner import (
    METRICS,
    FeatureCache,
    Progress,
    episode_inputs,
    fmt_time,
    make_concept,
    score,
    seeded,
    stderr_progress,
)
from povss_ros.personal.teach import TeachConfig

# How each concept is decoded in the interference check: by itself, with every concept
# (fused, the node's decoding), with every concept in one softmax (the plain joint rule).
DECODINGS = ("alone", "together", "joint")


def distinct_class_concepts(benchmark: PersonalBenchmark, n: int) -> list[int]:
    """Indices of the first n concepts whose base classes all differ."""
    out, seen = [], set()
    for i, spec in enumerate(benchmark.concepts()):
        if spec.base_class not in seen:
            out.append(i)
            seen.add(spec.base_class)
    return out[:n]


def interference(
    benchmark: object,
    segmenter: object,
    cfg: TeachConfig,
    indices: Sequence[int],
    k: int = 5,
    seeds: Sequence[int] = (0, 1, 2),
    progress: Progress | None = stderr_progress,
) -> dict:
    """IoU^per of each concept taught alone vs. all `indices` taught and present together.

    Same shots, teaching seeds and test images as `runner.evaluate` (so "alone" equals its
    record for this config, K and seed); "together" decodes with every concept set, concept j
    as id V+j, as the node does (`personal.fusion`), and "joint" with every concept in one
    softmax (the plain joint rule), to show what the fusion changes. Only IoU^per (and its
    precision/recall) is scored: a concept's test images may show another concept's identity
    as a distractor, which its ground truth names by the base class, so an mIoU over all
    concepts would count correct answers as errors.
    """
    specs, before, records = benchmark.concepts(), tuple(segmenter.concepts), []
    start = time.perf_counter()
    try:
        for seed in seeds:
            concepts, tests = [], []
            for ci in indices:
                cache = FeatureCache(benchmark, segmenter)
                items, shots, feats = episode_inputs(cache, specs[ci], k, seed, False)
                taught = seeded(cfg, seed, k, ci)
                concepts.append(make_concept(segmenter, specs[ci], shots, feats, taught)[0])
                tests.append(items)
            for j, (ci, items) in enumerate(zip(indices, tests)):
                rec = {"concept": specs[ci].name, "seed": seed}
                for tag, group, idx, joint in (
                    ("alone", [concepts[j]], 0, False),
                    ("together", concepts, j, False),
                    ("joint", concepts, j, True),
                ):
                    res = score(segmenter, group, idx, items, with_miou=False, joint=joint).result
                    rec |= {f"{tag}_{m}": getattr(res, m) for m in METRICS[:3]}
                records.append(rec)
            if progress:
                el = fmt_time(time.perf_counter() - start)
                progress(f"interference seed={seed}: {len(indices)} concepts | {el} elapsed")
    finally:
        segmenter.set_concepts(list(before))
    per_concept = []
    for ci in indices:
        rs = [r for r in records if r["concept"] == specs[ci].name]
        row: dict = {"concept": specs[ci].name}
        for m in METRICS[:3]:
            for tag in DECODINGS:
                row[f"{tag}_{m}"] = float(np.mean([r[f"{tag}_{m}"] for r in rs]))
        for tag, key in (("together", "delta"), ("joint", "joint_delta")):
            deltas = [r[f"{tag}_iou_per"] - r["alone_iou_per"] for r in rs]
            row[f"{key}_iou_per"] = float(np.mean(deltas))
            row[f"{key}_std"] = float(np.std(deltas, ddof=1)) if len(deltas) > 1 else 0.0
        per_concept.append(row)
    return {
        "k": k,
        "seeds": list(seeds),
        "config": dataclasses.asdict(cfg),
        "records": records,
        "per_concept": per_concept,
    }
