"""SYN^per: the paper's personalization benchmark rebuilt in the project's synthetic world.

    python -m povss_lab.eval --weights models/syn_small.safetensors --out docs/results

Each concept is one identity of a thing class ("my mug 3"), its base class the class name.
Positives are scenes that contain it, with other objects as distractors; in a `hard_fraction`
of them another identity of the same class is placed too, so telling "my mug" from "a mug"
is also tested inside one image (the paper's concat case, naturally). Negatives hold another
identity of the same class and never the concept itself (`sample_scene(required, exclude)`):
the paper's "same base class, other instance" negatives. Ground truth is exact: the scene's
semantic map over the world's classes (vocabulary = `World.class_names`, ids agree) and the
identity's visible pixels (`Scene.mask`). Every sample is a pure function of
(world seed, concept, kind, index) and is rendered on demand from its id.

`interference` is the multi-concept check (METHOD.md, "Several concepts at once").
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Sequence

import numpy as np

from povss_lab.eval.benchmark import ConceptSpec, Sample
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
from povss_lab.synthetic.world import Identity, World, sample_scene
from povss_ros.personal.teach import TeachConfig

# How each concept is decoded in the interference check: by itself, with every concept
# (fused, the node's decoding), with every concept in one softmax (METHOD.md's sketch).
DECODINGS = ("alone", "together", "joint")
_ID = re.compile(r"^c(\d+)/([pn])(\d+)$")
_SALT = 0x5E7


class SynPer:
    """PersonalBenchmark over the synthetic world (see the module doc)."""

    name = "SYN^per"

    def __init__(
        self,
        world_seed: int = 0,
        n_concepts: int = 28,
        n_positive: int = 12,
        n_negative: int = 11,
        size: tuple[int, int] = (320, 240),
        hard_fraction: float = 0.5,
    ) -> None:
        """`size` is (width, height), the world's default; concepts cycle over the thing
        classes in a seeded order, so the first len(thing_classes) are all different classes."""
        self.world = World(world_seed)
        self.world_seed, self.size, self.hard_fraction = world_seed, tuple(size), hard_fraction
        self.n_positive, self.n_negative = n_positive, n_negative
        self.vocabulary = list(self.world.class_names)
        things = self.world.thing_classes
        if n_concepts > len(things) * self.world.identities_per_class:
            raise ValueError(f"at most {len(things) * self.world.identities_per_class} concepts")
        rng = np.random.default_rng([world_seed, _SALT])
        order = [things[i] for i in rng.permutation(len(things))]
        ids = {c: rng.permutation(self.world.identities_per_class) for c in things}
        self.identities: list[Identity] = []
        for i in range(n_concepts):
            cls = order[i % len(order)]
            self.identities.append(self.world.identity(cls, int(ids[cls][i // len(order)])))

    def describe(self) -> dict:
        """The benchmark's parameters, for reports."""
        return {
            "name": self.name,
            "world_seed": self.world_seed,
            "concepts": len(self.identities),
            "positives_per_concept": self.n_positive,
            "negatives_per_concept": self.n_negative,
            "size_wh": list(self.size),
            "hard_fraction": self.hard_fraction,
            "classes": sorted({i.class_name for i in self.identities}),
        }

    def concepts(self) -> list[ConceptSpec]:
        return [
            ConceptSpec(
                f"my {ident.class_name} {ident.identity_id}",
                ident.class_name,
                tuple(f"c{ci:02d}/p{j:02d}" for j in range(self.n_positive)),
                tuple(f"c{ci:02d}/n{j:02d}" for j in range(self.n_negative)),
            )
            for ci, ident in enumerate(self.identities)
        ]

    def sample(self, sample_id: str) -> Sample:
        """Render one sample (deterministic in its id); KeyError for an unknown id."""
        m = _ID.match(sample_id)
        ci, kind, j = (int(m[1]), m[2], int(m[3])) if m else (-1, "", -1)
        limit = self.n_positive if kind == "p" else self.n_negative
        if not m or not (0 <= ci < len(self.identities) and 0 <= j < limit):
            raise KeyError(sample_id)
        ident = self.identities[ci]
        others = [x for x in self.world.identities(ident.class_name) if x != ident]
        rng = np.random.default_rng([self.world_seed, _SALT, ci, kind == "p", j])
        if kind == "p":
            required = [ident]
            if rng.random() < self.hard_fraction:
                required.append(others[int(rng.integers(len(others)))])
            exclude: tuple[Identity, ...] = ()
        else:
            required, exclude = [others[int(rng.integers(len(others)))]], (ident,)
        for _ in range(8):  # sample_scene keeps required objects >= 50% visible: rarely needed
            scene = sample_scene(rng, self.world, required, size=self.size, exclude=exclude)
            mask = scene.mask(ident)
            if kind == "n" or mask.any():
                return Sample(sample_id, scene.image, mask, scene.semantic)
        raise RuntimeError(f"{sample_id}: could not render a visible {ident.class_name}")


def distinct_class_concepts(benchmark: SynPer, n: int) -> list[int]:
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
    softmax (METHOD.md's sketch), to show what the fusion changes. Only IoU^per (and its
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

