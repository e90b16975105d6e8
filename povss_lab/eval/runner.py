"""The paper's K-shot evaluation loop (Park et al., ICCV 2025, Sec. 4.1) over any benchmark.

For every concept, K and seed: `make_episode` draws K shots and a balanced test set; each
method teaches the concept from the same shots (one frozen forward per image, see below) and is
scored on the same test images: IoU^per with its precision and recall, TP/FP/FN summed over the
whole test set, and mIoU over the vocabulary plus the personal class (id V).

Choices the paper leaves open, made here:
* Aggregation: every concept is its own personalization problem with its own test set, so the
  scores are accumulated per concept and then averaged over concepts (macro mean), then
  mean +- sample std over seeds. The paper reports one number per dataset without saying how
  concepts combine; a macro mean is the only reading under which its "per concept" test sets
  (Sec. 4.1, supp. A.2) make sense. The pooled (micro) IoU^per is kept too.
* "none" (SAN alone) is the inert concept: its pixels are the base class's (`concept_pixels`)
  and get the personal id, so mIoU and IoU^per read the same pixels for every method.
* Ground truth: ``Sample.semantic`` with the personal mask pasted as id V; when it is None,
  the FROZEN model's own label map (no concepts) with the mask pasted (`paste_personal`).
* Frozen features: an image's (Z, M, F) do not depend on any concept, so each distinct input
  is encoded once per concept and reused by every method, K and seed (its shots included:
  `make_shot` is exactly what `cache_shots` does after its one forward).
* Teaching seed: from (TeachConfig.seed, episode seed, K, concept index): reproducible.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from povss_lab.eval.benchmark import UNLABELED, ConceptSpec, PersonalBenchmark, Sample
from povss_lab.eval.metrics import ConfusionMatrix, EvalResult, PersonalAccumulator, paste_personal
from povss_lab.eval.protocol import concat_pairs, make_episode, side_by_side
from povss_ros.personal.concept import Concept, layout
from povss_ros.personal.shots import make_shot
from povss_ros.personal.teach import TeachConfig, teach
from povss_ros.san.model import SANFeatures

Methods = Mapping[str, TeachConfig | None]
Progress = Callable[[str], None]
METRICS = ("iou_per", "precision", "recall", "miou")


SWITCHES = {  # method -> (use_prompt, use_negative, use_visual); "none" = SAN alone
    "prompt": (True, False, False),
    "prompt+negative": (True, True, False),
    "prompt+visual": (True, False, True),
    "all": (True, True, True),
}


# A method whose name ends so is decoded with identity (one region per concept, the node's).
IDENTITY = "+identity"


def ablation_methods(base: TeachConfig | None = None) -> dict[str, TeachConfig | None]:
    """The paper's ablation (Table 3 layout): none / prompt / +negative / +visual / all, then
    ours: all three with the negative proposal's words evened out at inference, and that
    again decoded as the node decodes it, one object chosen by identity (a method named
    with `IDENTITY` at its end: `personal.identity`)."""
    base, out = base or TeachConfig(), {"none": None}
    for m, (p, n, v) in SWITCHES.items():
        out[m] = dataclasses.replace(
            base, use_prompt=p, use_negative=n, use_visual=v, even_negative=False)
    out["all+even"] = dataclasses.replace(out["all"], even_negative=True)
    out["all+even" + IDENTITY] = dataclasses.replace(out["all+even"])
    return out


def stderr_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


@dataclass
class EvalItem:
    """One test input after its frozen forward, with its ground truth over V+1 classes."""

    features: SANFeatures
    personal: np.ndarray  # bool [H, W]
    gt: np.ndarray  # integer [H, W], personal id V, UNLABELED ignored


class FeatureCache:
    """Samples and frozen forwards of ONE concept, keyed by sample id (or a concat pair).

    ``frozen`` = (ConfusionMatrix, set of ids counted), shared across concepts: each distinct
    sample with a semantic map adds the frozen model's label map to it once.
    """

    def __init__(self, benchmark: PersonalBenchmark, segmenter: object, frozen: tuple = ()) -> None:
        self.benchmark, self.segmenter, self.frozen = benchmark, segmenter, frozen
        self.v = len(segmenter.vocabulary)
        self.samples: dict[str, Sample] = {}
        self.items: dict[object, EvalItem] = {}
        self.encodes = 0

    def sample(self, sid: str) -> Sample:
        if sid not in self.samples:
            self.samples[sid] = self.benchmark.sample(sid)
        return self.samples[sid]

    def item(self, key: str | tuple[str, str]) -> EvalItem:
        """Encode once; ground truth per the paper's rule (semantic, else frozen + mask)."""
        if key in self.items:
            return self.items[key]
        if isinstance(key, tuple):  # concat: positive left, negative right
            left, right = self.sample(key[0]), self.sample(key[1])
            image = side_by_side(left.image, right.image)
            personal = side_by_side(left.personal_mask, right.personal_mask, False)
            both = left.semantic is not None and right.semantic is not None
            sem = side_by_side(left.semantic, right.semantic, UNLABELED) if both else None
        else:
            s = self.sample(key)
            image, personal, sem = s.image, s.personal_mask, s.semantic
        features = self.segmenter.encode(image)
        self.encodes += 1
        personal = np.asarray(personal, dtype=bool)
        if sem is None:
            gt = paste_personal(frozen_labels(self.segmenter, features), personal, self.v)
        else:
            if self.frozen and not isinstance(key, tuple) and key not in self.frozen[1]:
                self.frozen[1].add(key)
                self.frozen[0].update(frozen_labels(self.segmenter, features), sem)
            gt = sem.astype(np.int64)
            gt[personal] = self.v
        self.items[key] = EvalItem(features, personal, gt)
        return self.items[key]


def frozen_labels(segmenter: object, features: SANFeatures) -> np.ndarray:
    """The frozen model's own label map (no concepts), whatever concepts are set now."""
    current = list(segmenter.concepts)
    segmenter.set_concepts([])
    try:
        return segmenter.decode(features).labels.astype(np.int64)
    finally:
        segmenter.set_concepts(current)


def make_concept(
    segmenter: object,
    spec: ConceptSpec,
    shots: Sequence[Sample],
    features: Sequence[SANFeatures],
    cfg: TeachConfig | None,
    prompt_init: str = "base",
    negatives: Sequence[tuple[np.ndarray, np.ndarray, SANFeatures]] = (),
) -> tuple[Concept, float]:
    """Teach one concept from cached shot features (one forward per shot, done by the cache);
    None = every switch off: the inert concept, SAN alone (nothing is trained).

    ``prompt_init``: T_per starts from the base class's row ("base", e.g. "bird") or from the
    concept's own name ("name", e.g. "black footed albatross": the paper's choice for FSS^per
    and CUB^per, whose concepts are named classes). ``negatives``: look-alikes marked "not
    this one", each (image, the look-alike's mask, the image's features)."""
    model = segmenter.model
    cfg = cfg or TeachConfig(use_prompt=False, use_negative=False, use_visual=False)
    cached = []
    for s, f in zip(shots, features):
        if not np.any(s.personal_mask):
            raise ValueError(f"shot {s.sample_id} of {spec.name!r} has an empty personal mask")
        cached.append(make_shot(s.image, np.asarray(s.personal_mask, bool), f, model.device))
    if prompt_init == "name":
        base = model.text_rows([" ".join(spec.name.replace("_", " ").split())])[0]
    elif prompt_init == "base":
        base = segmenter.vocabulary.index(spec.base_class)
    else:
        raise ValueError(f"prompt_init must be 'base' or 'name', not {prompt_init!r}")
    kw = {"name": spec.name, "base_class": spec.base_class, "evaluate_fit": False,
          "negatives": [make_shot(i, m, f, model.device) for i, m, f in negatives]}
    concept, report = teach(model, segmenter.text_rows, base, cached, cfg, **kw)
    return concept, report.seconds


class Scored(NamedTuple):
    """One concept's scores on one test set, and where its false positives fall."""

    result: EvalResult
    counts: PersonalAccumulator
    fp_same_class: int  # false-positive pixels on other instances of the base class


def score(
    segmenter: object,
    concepts: Sequence[Concept],
    j: int,
    items: Sequence[EvalItem],
    with_miou: bool = True,
    joint: bool = False,
    identity: bool = False,
) -> Scored:
    """IoU^per of concept j (id V+j) and, optionally, mIoU over V+len(concepts) classes; an
    inert concept claims its base class's pixels under its own id (see the module doc).
    ``joint``: several concepts decoded in one softmax instead of fused (`Segmenter.decode`).
    ``identity``: each concept kept on its one region most like its shots (the node's
    decoding); off, every region the classifier gives it (the paper's). False positives
    whose ground truth is the base class (another mug than mine) are counted apart: the
    confusion the paper's negative proposal is meant to remove."""
    v, vocabulary = len(segmenter.vocabulary), segmenter.vocabulary
    base_class = concepts[j].base_class
    base_id = vocabulary.index(base_class) if base_class in vocabulary else -1
    cm, acc, fp_same = ConfusionMatrix(v + len(concepts)), PersonalAccumulator(), 0
    segmenter.set_concepts(list(concepts))
    aliases = layout(segmenter.text_rows, concepts).aliases
    for item in items:
        pred = segmenter.decode(item.features, joint=joint, identity=identity).labels.astype(
            np.int64)
        if aliases:
            base = pred.copy()
            for a, b in aliases.items():
                pred[base == b] = v + a
        if with_miou:
            cm.update(pred, item.gt if j == 0 else np.where(item.gt == v, v + j, item.gt))
        mine = pred == v + j
        acc.update(mine, item.personal, valid=item.gt != UNLABELED)
        fp_same += int(np.count_nonzero(mine & ~item.personal & (item.gt == base_id)))
    return Scored(EvalResult.from_accumulators(cm, acc), acc, fp_same)


@dataclass
class EvalRun:
    """Every (concept, method, K, seed) record plus what the run was; `summary` aggregates."""

    benchmark: str
    methods: dict[str, dict | None]
    ks: tuple[int, ...]
    seeds: tuple[int, ...]
    concat: bool
    records: list[dict] = field(default_factory=list)
    frozen: dict = field(default_factory=dict)
    encodes: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, dict[int, dict]]:
        """method -> K -> {metric: mean over seeds of the concept mean, metric_std, pooled}."""
        out: dict[str, dict[int, dict]] = {m: {} for m in self.methods}
        for m, k in itertools.product(self.methods, self.ks):
            rows = [r for r in self.records if (r["method"], r["k"]) == (m, k)]
            out[m][k] = aggregate(rows, self.seeds)
        return out

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "summary": self.summary()}


def aggregate(rows: Sequence[dict], seeds: Sequence[int]) -> dict:
    """Macro mean over concepts per seed, then mean and sample std (ddof 1) over seeds."""
    groups = [g for g in ([r for r in rows if r["seed"] == s] for s in seeds) if g]
    out: dict[str, float] = {"concepts": len({r["concept"] for r in rows})}
    for name in (*METRICS, "pooled_iou_per", "same_class_fp"):
        if name == "pooled_iou_per":  # TP/FP/FN summed over concepts: the micro reading
            sums = [[sum(r[c] for r in g) for c in ("tp", "fp", "fn")] for g in groups]
            vals = [100.0 * tp / max(tp + fp + fn, 1) for tp, fp, fn in sums]
        elif name == "same_class_fp":  # share of all false positives on the base class
            sums = [[sum(r[c] for r in g) for c in ("fp_same_class", "fp")] for g in groups]
            vals = [100.0 * same / fp if fp else math.nan for same, fp in sums]
        else:
            vals = [float(np.mean([r[name] for r in g])) for g in groups]
        out[name] = float(np.mean(vals)) if vals else math.nan
        out[f"{name}_std"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out


def fmt_time(seconds: float) -> str:
    """H:MM:SS (hours unbounded), for progress lines."""
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def episode_inputs(cache: FeatureCache, spec: ConceptSpec, k: int, seed: int, pairs: bool) -> tuple:
    """(test items, shot samples, shot features) of one K-shot episode, all from the cache;
    ``pairs``: the concat variant's positive|negative inputs instead of single images."""
    ep = make_episode(spec.positive_ids, spec.negative_ids, k, seed)
    keys = concat_pairs(ep.test_positive, ep.test_negative, seed) if pairs else ep.test_ids
    items = [cache.item(key) for key in keys]
    shots = [cache.sample(s) for s in ep.shots]
    return items, shots, [cache.item(s).features for s in ep.shots]


def seeded(cfg: TeachConfig | None, seed: int, k: int, index: int) -> TeachConfig | None:
    """The method's config with this episode's teaching seed (None stays None)."""
    if cfg is None:
        return None
    state = np.random.SeedSequence([cfg.seed, seed, k, index]).generate_state(1)[0]
    return dataclasses.replace(cfg, seed=int(state))


def evaluate(
    benchmark: PersonalBenchmark,
    segmenter: object,
    methods: Methods,
    ks: Sequence[int] = (1, 3, 5),
    seeds: Sequence[int] = (0, 1, 2),
    progress: Progress | None = stderr_progress,
    concat: bool = False,
    prompt_init: str = "base",
) -> EvalRun:
    """Run the protocol for every concept of `benchmark` (see the module doc for choices).

    ``segmenter`` is a `Segmenter` (duck-typed: encode, decode, set_concepts, concepts,
    text_rows, vocabulary, model) whose vocabulary is the benchmark's; its concepts are restored
    afterwards. ``concat`` scores each test positive side by side with a distinct negative
    (supp. B.4), the pairs drawn by `concat_pairs` with the episode seed. ``prompt_init``:
    see `make_concept`.
    """
    if list(segmenter.vocabulary) != list(benchmark.vocabulary):
        raise ValueError("the segmenter's vocabulary must be the benchmark's (ids must agree)")
    start, before = time.perf_counter(), tuple(segmenter.concepts)
    specs, v = benchmark.concepts(), len(benchmark.vocabulary)
    configs = {m: (dataclasses.asdict(c) if c else None) for m, c in methods.items()}
    run = EvalRun(benchmark.name, configs, tuple(ks), tuple(seeds), concat)
    frozen_cm, seen = ConfusionMatrix(v), set()
    total, done = len(specs) * len(ks) * len(seeds), 0
    try:
        for ci, spec in enumerate(specs):
            cache = FeatureCache(benchmark, segmenter, (frozen_cm, seen))
            for k, seed in itertools.product(ks, seeds):
                items, shots, feats = episode_inputs(cache, spec, k, seed, concat)
                line = []
                for name, cfg in methods.items():
                    cfg = seeded(cfg, seed, k, ci)
                    concept, secs = make_concept(segmenter, spec, shots, feats, cfg, prompt_init)
                    res, acc, fp_same = score(segmenter, [concept], 0, items,
                                              identity=name.endswith(IDENTITY))
                    run.records.append(
                        {"concept": spec.name, "base_class": spec.base_class, "method": name}
                        | {"k": k, "seed": seed, **res.to_dict(), "teach_seconds": secs}
                        | {"tp": acc.tp, "fp": acc.fp, "fn": acc.fn, "fp_same_class": fp_same}
                    )
                    line.append(f"{name} {res.iou_per:.1f}")
                done, el = done + 1, time.perf_counter() - start
                if progress:
                    eta = fmt_time(el / done * (total - done))
                    info = f"{spec.name} K={k} seed={seed} IoU^per: {', '.join(line)}"
                    progress(f"[{done}/{total}] {info} | {fmt_time(el)} elapsed, ETA {eta}")
            run.encodes += cache.encodes
    finally:
        segmenter.set_concepts(list(before))
    run.frozen = {
        "miou": 100.0 * frozen_cm.miou() if frozen_cm.total else math.nan,
        "iou": {c: 100.0 * x for c, x in zip(benchmark.vocabulary, frozen_cm.iou())},
        "pixels": frozen_cm.total,
    }
    run.seconds = time.perf_counter() - start
    return run
