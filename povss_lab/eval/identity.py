"""MY mug among other mugs: identity-based selection of a personal concept.

    python -m povss_lab.eval.identity --weights models/syn_small.safetensors --out docs/results

A personal concept names one object, but the fused classifier also gives it to look-alikes
(other identities of its base class). `Segmenter.decode(identity=True)` keeps at most one
region, the one whose dense features are most like the concept's shots, and none when even
that one is less similar than `Segmenter.identity_min_similarity` (`personal.identity`).

Protocol, per SYN^per world (0: identities the model was trained on; 1: held out): per class
(by default the classes of world 0's first six SYN^per concepts, the same in every world), the
world's SYN^per concept of that class is taught from K of its SYN^per positives with exact
masks (the node's teach settings, the runner's episodes and teaching seeds, as `presence`
does). Its test frames are composed here (`lookalike_scene`): `frames`
scenes with the target beside two look-alikes of its class, and as many holding only two
look-alikes; no other identity of the class is in view. Every frame is decoded three ways:
SAN alone (the base class's pixels read as the concept: any mug is my mug), identity off (the
paper's rule) and identity on with no threshold, which records the best region's similarity.
Identity on at a threshold t is then exact offline: the same region when its similarity is
>= t, else no concept pixel (those pixels go to the base class), so one run scores every t.

The threshold is chosen on the first world at the largest K by `RULE`; the others are held out.
Writes identity.md (tables) and identity.png (truth | identity off | identity on).
"""

from __future__ import annotations

import argparse
import datetime
import math
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from povss_lab.eval.metrics import ConfusionMatrix
from povss_lab.eval.presence import HIT_IOU, _kept_notes, auc
from povss_lab.synthetic.world import THING_CLASSES, Identity, World, sample_scene

PRESENT_AREA = 0.003  # a look-alike-only frame is a false present from this share of the frame
WRONG_SHARE = 0.5  # a target frame's concept is on the wrong object when more than this lies
#                    on look-alikes
MAX_LOSS = 0.05  # the threshold may lose at most this share of the hits made without one
THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(100))  # candidate min_similarity values
RULE = (f"the highest of the thresholds 0.00, 0.01, ..., 0.99 that keeps at least "
        f"{1 - MAX_LOSS:.0%} of the target frames' hits (concept IoU with the target >= "
        f"{HIT_IOU}) made with no threshold: as many look-alikes out as the hits allow (the "
        "false-present rate never rises with the threshold)")
SETTINGS = {  # setting -> what it is
    "san": "SAN alone (the base class read as the concept)",
    "off": "identity off (the paper's rule)",
    "on": "identity on",
}
_SALT = 0x1D32


@dataclass
class LookalikeFrame:
    """One composed test scene: the target (maybe) and its look-alikes, exact ground truth."""

    frame_id: str
    image: np.ndarray  # uint8 HxWx3 RGB
    semantic: np.ndarray  # uint16 HxW, world class ids
    target: np.ndarray  # bool: the target's visible pixels (empty on look-alike-only frames)
    lookalikes: np.ndarray  # bool: the look-alikes' visible pixels


def lookalike_scene(world: World, target: Identity, index: int, with_target: bool,
                    n_lookalikes: int = 2, size: tuple[int, int] = (320, 240)
                    ) -> LookalikeFrame:
    """A scene holding `n_lookalikes` other identities of the target's class (drawn from the
    world's pool) and, when `with_target`, the target; every other identity of the class is
    excluded from the distractors, so exactly these objects of the class are in view. A pure
    function of (world seed, target, index, with_target)."""
    cls = target.class_name
    others = [i for i in world.identities(cls) if i != target]
    rng = np.random.default_rng(
        [world.seed, _SALT, zlib.crc32(cls.encode()), target.identity_id, with_target, index])
    picks = [others[j] for j in rng.choice(len(others), n_lookalikes, replace=False)]
    required = ([target] if with_target else []) + picks
    exclude = [target] + [i for i in others if i not in picks]
    for _ in range(8):  # sample_scene keeps required objects >= 50% visible: rarely needed
        scene = sample_scene(rng, world, required, size=size, exclude=exclude)
        if all(scene.mask(i).any() for i in required):
            break
    look = np.zeros(scene.semantic.shape, bool)
    for i in picks:
        look |= scene.mask(i)
    return LookalikeFrame(f"{cls}{target.identity_id}/{'t' if with_target else 'l'}{index:02d}",
                          scene.image, scene.semantic, scene.mask(target), look)


def negative_scenes(world: World, target: Identity, n: int, size: tuple[int, int]
                    ) -> list[LookalikeFrame]:
    """`n` scenes each holding one look-alike of `target` (and not the target), for an
    operator's "not this one" marks: `LookalikeFrame.lookalikes` is the mark. Indices from
    `NEGATIVE_INDEX` on, so no test frame (indices below `frames`) is ever one of them."""
    return [lookalike_scene(world, target, NEGATIVE_INDEX + j, False, 1, size)
            for j in range(n)]


NEGATIVE_INDEX = 1000  # first scene index of `negative_scenes`


@dataclass
class Claim:
    """Where one setting puts the concept in one frame (pixel counts)."""

    pixels: int = 0  # every pixel labelled the concept
    tp: int = 0  # of those, on the target
    lookalike: int = 0  # of those, on a look-alike
    regions: int = 0  # connected components of the concept's pixels (8-connectivity)


def claim(mask: np.ndarray, target: np.ndarray, lookalikes: np.ndarray) -> Claim:
    """The concept's pixels `mask` measured against the target and the look-alikes."""
    regions = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1
    return Claim(int(np.count_nonzero(mask)), int(np.count_nonzero(mask & target)),
                 int(np.count_nonzero(mask & lookalikes)), int(regions))


@dataclass
class FrameRecord:
    """One test frame under one taught concept (one world, concept, K and episode seed)."""

    world: int
    concept: str
    k: int
    seed: int
    frame: str
    target: bool  # the target is in view
    frame_px: int
    target_px: int
    base_id: int
    similarity: float  # identity's best region (NaN: no candidate region)
    san: Claim
    off: Claim
    on: Claim  # identity on with no threshold: the best region always kept
    region_gt: list[int] = field(default_factory=list)  # ground-truth histogram under `on`
    negatives: int = 0  # look-alikes marked "not this one" when the concept was taught
    teach_seconds: float = math.nan  # that teach's training time

    def get(self, setting: str, threshold: float = -math.inf) -> Claim:
        """The setting's claim; identity on at `threshold` drops a less similar region."""
        if setting == "on" and not self.similarity >= threshold:
            return Claim()
        return getattr(self, setting)

    def iou(self, setting: str, threshold: float = -math.inf) -> float:
        """The setting's concept pixels against the target's (0 when both are empty)."""
        c = self.get(setting, threshold)
        union = c.pixels + self.target_px - c.tp
        return c.tp / union if union else 0.0


def rates(records: Sequence[FrameRecord], setting: str,
          threshold: float = -math.inf) -> dict[str, float]:
    """The issue's measures of one setting over `records` (pooled over concepts and seeds):
    IoU^per (TP/FP/FN summed), wrong-object rate (target frames with concept pixels, most of
    them on look-alikes), false-present rate (look-alike-only frames where the concept covers
    `PRESENT_AREA`), recall (target frames with IoU >= `HIT_IOU`), concept regions per target
    frame and the share of all frames with more than one region."""
    tgt = [r for r in records if r.target]
    neg = [r for r in records if not r.target]
    got = [(r, r.get(setting, threshold)) for r in records]
    tp = sum(c.tp for _, c in got)
    fp = sum(c.pixels - c.tp for _, c in got)
    fn = sum(r.target_px - c.tp for r, c in got)
    shown = [c for r, c in got if r.target and c.pixels]
    return {
        "iou_per": 100.0 * tp / max(tp + fp + fn, 1),
        "wrong": sum(c.lookalike > WRONG_SHARE * c.pixels for c in shown) / max(len(shown), 1),
        "false_present": sum(r.get(setting, threshold).pixels >= PRESENT_AREA * r.frame_px
                             for r in neg) / max(len(neg), 1),
        "recall": sum(r.iou(setting, threshold) >= HIT_IOU for r in tgt) / max(len(tgt), 1),
        "regions": float(np.mean([r.get(setting, threshold).regions for r in tgt]))
        if tgt else math.nan,
        "multi": sum(c.regions > 1 for _, c in got) / max(len(got), 1),
    }


def choose_threshold(records: Sequence[FrameRecord],
                     thresholds: Sequence[float] = THRESHOLDS,
                     max_loss: float = MAX_LOSS) -> float:
    """The `min_similarity` that `RULE` picks from `thresholds` (the lowest one when none
    keeps enough hits)."""
    def hits(t: float) -> int:
        return sum(r.target and r.iou("on", t) >= HIT_IOU for r in records)

    need = (1 - max_loss) * hits(-math.inf) - 1e-9
    return float(max((t for t in thresholds if hits(t) >= need), default=min(thresholds)))


def similarities(records: Sequence[FrameRecord]) -> tuple[list[float], list[float], int]:
    """(best-region similarities on target frames where the true region is chosen, those on
    look-alike-only frames with a candidate, look-alike-only frames with none)."""
    hit = [r.similarity for r in records if r.target and r.iou("on") >= HIT_IOU]
    neg = [r.similarity for r in records if not r.target]
    return hit, [s for s in neg if not math.isnan(s)], sum(math.isnan(s) for s in neg)


# (enter, enter_window, leave, leave_window) of `presence.PresenceFilter` compared over
# sequences; the first is no filter.
FILTERS = ((1, 1, 1, 1), (2, 2, 1, 1), (2, 3, 1, 1), (2, 3, 2, 3), (2, 3, 3, 5), (3, 3, 2, 3),
           (3, 4, 3, 5), (3, 5, 3, 5), (2, 2, 2, 2))
# In 2 of 3, out 3 of 5: a filter that debounces presence, beside the chosen one for comparison.
DEBOUNCE = (2, 3, 3, 5)
FILTER_RULE = ("the filter with the fewest wrong frames (reported present while only "
               "look-alikes are in view, or absent while the target is), ties to the earlier "
               "in the list")


# Long sequences (`sequence_errors` with `segment`): a camera sees an object for seconds, so the
# filter is judged over segments of this many frames (2 s at 30 Hz), target and look-alike-only
# segments alternating this many times each.
SEQUENCE_FRAMES = 60
SEQUENCE_PAIRS = 2


def _segments(frames: Sequence[FrameRecord], segment: int | None, key: tuple
              ) -> list[list[FrameRecord]]:
    """One run's frames as the filter sees them, in segments of one kind (target in view or
    look-alikes only): with `segment` None its target frames, then its look-alike-only ones;
    else `SEQUENCE_PAIRS` times a target segment and a look-alike-only one, each `segment`
    frames drawn with replacement from the run's frames of that kind, seeded by the run's
    `key` (the same draws whatever other runs are scored with it)."""
    on = [r for r in frames if r.target]
    off = [r for r in frames if not r.target]
    if segment is None:
        return [part for part in (on, off) if part]
    rng = np.random.default_rng(zlib.crc32(repr(key).encode()))
    out = []
    for _ in range(SEQUENCE_PAIRS):
        out += [[part[i] for i in rng.integers(len(part), size=segment)]
                for part in (on, off) if part]
    return out


def sequence_errors(records: Sequence[FrameRecord], threshold: float,
                    counts: tuple[int, int, int, int], segment: int | None = None,
                    stay: float | None = None) -> dict[str, float]:
    """The presence filter `counts` over sequences: per concept, K, marks and seed one run of
    segments (`_segments`), each frame seen when identity on covers `PRESENT_AREA` of it at
    `threshold`, or at `stay` while the filter has the concept present (the node's hysteresis,
    `objects_identity_stay_similarity`; None: `threshold` always); the filter carries over
    from one segment to the next. Returns the share of target frames reported absent
    (missed), of look-alike-only frames reported present (false), of all frames wrong, the
    mean frames, per segment, until first present in a target segment and until absent in a
    look-alike-only one (the segment's length when it never is), and what the node publishes
    (a region only when seen and present): the share of target frames whose published mask
    has IoU >= `HIT_IOU` with the target (hits) and of look-alike-only frames with a mask
    published (shown)."""
    from povss_ros.presence import PresenceFilter

    runs: dict[tuple, list[FrameRecord]] = {}
    for r in records:
        runs.setdefault((r.world, r.concept, r.k, r.negatives, r.seed), []).append(r)
    missed = false = n_on = n_off = hits = shown_off = 0
    enter, leave = [], []
    for key, frames in runs.items():
        flt, present = PresenceFilter(*counts), False
        for part in _segments(frames, segment, key):
            states = []
            for r in part:
                t = stay if stay is not None and present else threshold
                seen = r.get("on", t).pixels >= PRESENT_AREA * r.frame_px
                present = flt.update("c", seen)
                states.append(present)
                if r.target:
                    hits += seen and present and r.iou("on", t) >= HIT_IOU
                else:
                    shown_off += seen and present
            if part[0].target:
                missed, n_on = missed + states.count(False), n_on + len(states)
                enter.append(states.index(True) if True in states else len(states))
            else:
                false, n_off = false + states.count(True), n_off + len(states)
                leave.append(states.index(False) if False in states else len(states))
    return {"missed": missed / max(n_on, 1), "false": false / max(n_off, 1),
            "wrong": (missed + false) / max(n_on + n_off, 1),
            "enter": float(np.mean(enter)) if enter else math.nan,
            "leave": float(np.mean(leave)) if leave else math.nan,
            "hits": hits / max(n_on, 1), "shown": shown_off / max(n_off, 1)}


def choose_filter(records: Sequence[FrameRecord], threshold: float,
                  filters: Sequence[tuple[int, int, int, int]] = FILTERS,
                  segment: int | None = SEQUENCE_FRAMES) -> tuple[int, int, int, int]:
    """The filter `FILTER_RULE` picks over `segment`-frame segments (`sequence_errors`)."""
    return min(filters, key=lambda c: (sequence_errors(records, threshold, c, segment)["wrong"],
                                       filters.index(c)))


@dataclass
class Confusions:
    """Confusion matrices of one (world, K, marks, seed) over V+1 classes (personal id V):
    SAN alone, identity off, identity on with every concept region dropped (the on-labels at
    any threshold add back the kept regions from `FrameRecord.region_gt`); and over the
    vocabulary alone (`words_*`: truth and prediction read the concept as its base word), what
    teaching does to every other word, for SAN alone, identity off and identity on (the same
    at any threshold: a region identity drops or keeps is its base word either way)."""

    san: np.ndarray
    off: np.ndarray
    drop: np.ndarray
    words_san: np.ndarray | None = None
    words_off: np.ndarray | None = None
    words_on: np.ndarray | None = None

    @classmethod
    def empty(cls, n: int) -> Confusions:
        return cls(*(np.zeros((n, n), np.int64) for _ in range(6)))


def miou(matrix: np.ndarray) -> float:
    """mIoU in percent of a confusion matrix (classes absent from both sides left out)."""
    cm = ConfusionMatrix(len(matrix))
    cm.matrix = matrix
    return 100.0 * cm.miou()


def miou_on(conf: Confusions, records: Sequence[FrameRecord], threshold: float) -> float:
    """mIoU with identity on at `threshold`: each kept region's pixels move from the base
    class's column to the personal one."""
    m, v = conf.drop.copy(), len(conf.drop) - 1
    for r in records:
        if r.similarity >= threshold:
            m[:, r.base_id] -= r.region_gt
            m[:, v] += r.region_gt
    return miou(m)


def miou_change(confs: dict[tuple, Confusions], records: Sequence[FrameRecord], setting: str,
                threshold: float, world: int, k: int, negatives: int = 0) -> float:
    """mIoU of `setting` minus SAN alone's, over the world's test frames, mean over seeds
    (`confs` keyed by world, K, marked look-alikes, seed)."""
    out = []
    for (w, kk, n, seed), conf in confs.items():
        if (w, kk, n) != (world, k, negatives):
            continue
        mine = [r for r in records if (r.world, r.k, r.negatives, r.seed) == (w, kk, n, seed)]
        value = miou_on(conf, mine, threshold) if setting == "on" else miou(
            getattr(conf, setting))
        out.append(value - miou(conf.san))
    return float(np.mean(out)) if out else math.nan


def words_change(confs: dict[tuple, Confusions], setting: str, world: int, k: int,
                 negatives: int = 0) -> float:
    """mIoU over the vocabulary alone (the concept read as its base word) of `setting` ("off"
    or "on") minus SAN alone's, mean over seeds: what teaching did to the other words."""
    out = [miou(getattr(c, f"words_{setting}")) - miou(c.words_san)
           for (w, kk, n, _), c in confs.items() if (w, kk, n) == (world, k, negatives)]
    return float(np.mean(out)) if out else math.nan


@dataclass
class Shown:
    """A frame kept for the picture: what each setting labelled."""

    record: FrameRecord
    image: np.ndarray
    target: np.ndarray
    lookalikes: np.ndarray
    off: np.ndarray  # bool: identity off's concept pixels
    on: np.ndarray  # identity on's (no threshold)


def default_classes(n: int) -> list[str]:
    """The base classes of SYN^per world 0's first `n` concepts (distinct up to 14)."""
    from povss_lab.eval.datasets.synper import SynPer

    return [s.base_class for s in SynPer(0, n).concepts()]


def collect(world: int, weights: str, classes: Sequence[str], frames: int, ks: Sequence[int],
            seeds: Sequence[int], device: str, progress: Callable[[str], None],
            keep: bool = False, n_lookalikes: int = 2, negatives: Sequence[int] = (0,)
            ) -> tuple[list[FrameRecord], dict[tuple, Confusions], list[Shown]]:
    """Teach the world's SYN^per concept of each class in `classes` per K, number of marked
    look-alikes (`negatives`) and episode seed, and decode its composed test frames every way
    (see the module doc). The look-alikes marked "not this one" are the first ones of
    `negative_scenes`, never a test frame. `keep`: also return the frames of the largest K,
    no marked look-alike and the first seed, for the picture."""
    from povss_lab.eval.datasets.synper import SynPer
    from povss_lab.eval.protocol import make_episode
    from povss_lab.eval.runner import fmt_time, make_concept, seeded
    from povss_ros.personal.teach import TeachConfig
    from povss_ros.segmenter import Segmenter

    bench = SynPer(world, len(THING_CLASSES))  # its first concepts: one per class
    seg = Segmenter.from_weights(weights, bench.vocabulary, device=device)
    seg.resize = "exact"  # SAN's official resize, the node's default
    seg.identity_min_similarity = -math.inf  # keep the best region: thresholds come offline
    v = len(bench.vocabulary)
    specs = [(ci, s) for ci, s in enumerate(bench.concepts())
             if s.base_class in classes]
    specs.sort(key=lambda t: list(classes).index(t[1].base_class))
    records: list[FrameRecord] = []
    confs = {(world, k, n, s): Confusions.empty(v + 1)
             for k in ks for n in negatives for s in seeds}
    shown: list[Shown] = []
    start, done = time.perf_counter(), 0
    total = len(specs) * len(ks) * len(negatives) * len(seeds)
    for ci, spec in specs:
        ident, base_id = bench.identities[ci], bench.vocabulary.index(spec.base_class)
        tests = [lookalike_scene(bench.world, ident, j, t, n_lookalikes, bench.size)
                 for t in (True, False) for j in range(frames)]
        feats = [seg.encode(f.image) for f in tests]
        gts, sans = [], []
        for f, feat in zip(tests, feats):
            gt = f.semantic.astype(np.int64)
            gt[f.target] = v
            plain = seg.decode(feat, ()).labels.astype(np.int64)
            gts.append(gt)
            sans.append((plain, np.where(plain == base_id, v, plain)))
        marked = [(f.image, f.lookalikes, seg.encode(f.image))
                  for f in negative_scenes(bench.world, ident, max(negatives), bench.size)]
        samples: dict[str, object] = {}
        for k, n, seed in ((k, n, s) for k in ks for n in negatives for s in seeds):
            ep = make_episode(spec.positive_ids, spec.negative_ids, k, seed)
            for sid in ep.shots:
                if sid not in samples:
                    s = bench.sample(sid)
                    samples[sid] = (s, seg.encode(s.image))
            shots = [samples[s] for s in ep.shots]
            concept, seconds = make_concept(seg, spec, [s for s, _ in shots],
                                            [f for _, f in shots],
                                            seeded(TeachConfig(), seed, k, ci), "base",
                                            marked[:n])
            seg.set_concepts([concept])
            conf = confs[(world, k, n, seed)]
            for f, feat, gt, (plain, san) in zip(tests, feats, gts, sans):
                off = seg.decode(feat, identity=False)
                on = seg.decode(feat)
                off_l, on_l = off.labels.astype(np.int64), on.labels.astype(np.int64)
                drop = np.where(on_l == v, base_id, on_l)
                words = f.semantic.astype(np.int64)  # the target as its base word
                for m, truth, pred in (
                        (conf.san, gt, san), (conf.off, gt, off_l), (conf.drop, gt, drop),
                        (conf.words_san, words, plain), (conf.words_on, words, drop),
                        (conf.words_off, words, np.where(off_l == v, base_id, off_l))):
                    m += np.bincount(truth.ravel() * (v + 1) + pred.ravel(),
                                     minlength=(v + 1) ** 2).reshape(v + 1, v + 1)
                mine = on_l == v
                rec = FrameRecord(
                    world, spec.name, k, seed, f.frame_id, bool(f.target.any()),
                    gt.size, int(np.count_nonzero(f.target)), base_id,
                    float(on.identity.get(v, math.nan)),
                    claim(plain == base_id, f.target, f.lookalikes),
                    claim(off_l == v, f.target, f.lookalikes),
                    claim(mine, f.target, f.lookalikes),
                    np.bincount(gt[mine], minlength=v + 1).tolist(), n, seconds)
                records.append(rec)
                if keep and k == max(ks) and n == negatives[0] and seed == seeds[0]:
                    shown.append(Shown(rec, f.image, f.target, f.lookalikes,
                                       off_l == v, mine))
            seg.set_concepts([])
            done += 1
            el = time.perf_counter() - start
            progress(f"world {world} [{done}/{total}] {spec.name} K={k} marked={n} "
                     f"seed={seed} | "
                     f"{fmt_time(el)} elapsed, ETA {fmt_time(el / done * (total - done))}")
    return records, confs, shown


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _quantiles(values: Sequence[float]) -> str:
    if not values:
        return "- | - | - | - | -"
    q = np.quantile(values, [0.0, 0.05, 0.5, 0.95, 1.0])
    return " | ".join(f"{x:.3f}" for x in q)


def group_of(records: Sequence[FrameRecord], world: int, k: int, marks: int
             ) -> list[FrameRecord]:
    """The records of one world, K and number of marked look-alikes."""
    return [r for r in records if (r.world, r.k, r.negatives) == (world, k, marks)]


def report(records: Sequence[FrameRecord], confs: dict[tuple, Confusions], chosen: float,
           placeholder: float, meta: dict) -> str:
    """identity.md: setup, rule and choice, the measures per world / K / setting, the
    similarity distributions and a threshold sweep."""
    worlds = sorted({r.world for r in records})
    ks = sorted({r.k for r in records})
    marks = sorted({r.negatives for r in records})
    n_t = meta["frames"]

    def group(w: int, k: int, n: int) -> list[FrameRecord]:
        return group_of(records, w, k, n)

    lines = [
        "# MY mug among other mugs: identity-based selection\n",
        f"Command: `{meta['command']}`  ",
        f"Machine: torch CPU capability {meta['machine']}, {meta['threads']} thread(s); "
        f"{meta['date']}; wall time {meta['seconds'] / 60:.1f} min.\n",
        f"Setup: SYN^per worlds {', '.join(map(str, worlds))} (world {worlds[0]}: identities "
        f"the model was trained on; the others held out), per world its SYN^per concept of each "
        f"of {len(meta['classes'])} classes ({', '.join(meta['classes'])}), K = {ks} with "
        "exact masks (SYN^per positives, the "
        f"runner's episodes, the node's teach settings), episode seeds {meta['seeds']}. Per "
        f"concept {n_t} test frames with the target beside two look-alikes (other identities "
        f"of its class) and {n_t} with only two look-alikes, composed by "
        "`povss_lab.eval.identity.lookalike_scene`; the same frames for every K and seed. "
        "Rates are pooled over concepts and seeds. Marked = look-alikes marked \"not this "
        "one\" at the teach (hard negatives of the objective and rivals of the identity), "
        f"each from its own scene holding one look-alike (`negative_scenes`), never a test "
        "frame; teach s = the median training time of one teach.\n",
        f"Rule: {RULE}; chosen on world {worlds[0]} at K = {ks[-1]} with {marks[0]} marked.\n",
        f"**Chosen `MIN_SIMILARITY` = {chosen:.2f}** (the code's value when this ran: "
        f"{placeholder:g}).\n",
        "Measures: IoU^per = the concept's pixels against the target's, TP/FP/FN summed over "
        f"all test frames; wrong object = target frames with concept pixels where more than "
        f"{WRONG_SHARE:.0%} of them lie on look-alikes; false present = look-alike-only frames "
        f"where the concept covers at least {PRESENT_AREA:.1%} of the frame; recall = target "
        f"frames where the concept's IoU with the target is at least {HIT_IOU}; regions = "
        "connected components (8-connectivity) of the concept's pixels per target frame; "
        "> 1 region = share of all frames with more than one; mIoU change = mIoU over the "
        "vocabulary plus the personal class (target pasted as id V) minus SAN alone's, on the "
        "same frames (mean over seeds; SAN alone reads its base-class pixels as the concept, "
        "the runner's `none`); words' mIoU change = the same over the vocabulary alone, the "
        "concept read as its base word in truth and prediction (what teaching did to every "
        "other word; identity on's does not depend on the threshold).\n",
        "| world | K | marked | setting | IoU^per | mIoU change | words' mIoU change | "
        "wrong object | false present | recall | regions / target frame | frames > 1 region | "
        "teach s |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [("san", -math.inf, SETTINGS["san"]), ("off", -math.inf, SETTINGS["off"]),
            ("on", -math.inf, "identity on, no threshold"),
            ("on", placeholder, f"identity on, the code's {placeholder:g}"),
            ("on", chosen, f"**identity on, chosen {chosen:.2f}**")]
    if placeholder == chosen:
        del rows[3]
    for w, k, n in ((w, k, n) for w in worlds for k in ks for n in marks):
        mine = group(w, k, n)
        if not mine:
            continue
        seconds = float(np.median([r.teach_seconds for r in mine]))
        for setting, t, label in rows:
            r = rates(mine, setting, t)
            d = miou_change(confs, mine, setting, t, w, k, n)
            words = 0.0 if setting == "san" else words_change(confs, setting, w, k, n)
            lines.append(
                f"| {w} | {k} | {n} | {label} | {r['iou_per']:.1f} | {d:+.2f} | {words:+.2f} | "
                f"{_pct(r['wrong'])} | {_pct(r['false_present'])} | {_pct(r['recall'])} | "
                f"{r['regions']:.2f} | {_pct(r['multi'])} | {seconds:.2f} |")
    lines += ["", "Best-region similarity (identity on, no threshold): target frames where the "
              f"chosen region is the target (IoU >= {HIT_IOU}) against look-alike-only frames; "
              "AUC = P(target's > look-alike's).\n",
              "| world | K | marked | frames | min | 5% | median | 95% | max | AUC |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for w, k, n in ((w, k, n) for w in worlds for k in ks for n in marks):
        if not group(w, k, n):
            continue
        hit, neg, none = similarities(group(w, k, n))
        lines.append(f"| {w} | {k} | {n} | target, true region ({len(hit)}) | "
                     f"{_quantiles(hit)} | {auc(neg, hit):.3f} |")
        lines.append(f"| {w} | {k} | {n} | look-alikes only ({len(neg)}; {none} without a "
                     f"candidate) | {_quantiles(neg)} | |")
    sweep = [t for t in THRESHOLDS if t >= 0.5 and round(100 * t) % 5 == 0]
    sweep = sorted({*sweep, chosen})
    lines += ["", f"Threshold sweep at K = {ks[-1]}, {marks[0]} marked: recall / false "
              "present.\n",
              "| min_similarity | " + " | ".join(f"world {w}" for w in worlds) + " |",
              "|---:|" + "---:|" * len(worlds)]
    for t in sweep:
        cells = []
        for w in worlds:
            r = rates(group(w, ks[-1], marks[0]), "on", t)
            cells.append(f"{_pct(r['recall'])} / {_pct(r['false_present'])}")
        lines.append(f"| {t:.2f} | " + " | ".join(cells) + " |")
    chosen_filter = choose_filter(group(worlds[0], ks[-1], marks[0]), chosen)
    lines += ["", f"Presence over frames (`presence.PresenceFilter`: present after `enter` "
              "sightings in the last `enter window` frames, absent after `leave` misses in the "
              f"last `leave window`) at K = {ks[-1]}, identity on at {chosen:.2f}: per concept, "
              f"marks and seed one sequence of {SEQUENCE_PAIRS} x (a target segment, then a "
              f"look-alike-only segment) of {SEQUENCE_FRAMES} frames each (2 s at 30 Hz), drawn "
              "with replacement from its test frames (independent scenes, so a harder case "
              "than a camera's correlated frames); frames to enter / leave are per segment. "
              f"Rule: {FILTER_RULE}; chosen on world {worlds[0]} with {marks[0]} marked: "
              f"**{chosen_filter}** (the node's default when this ran: {node_filter()}).\n",
              "| world | marked | enter, window, leave, window | missed | false present | "
              "wrong frames | frames to enter | frames to leave |",
              "|---|---:|---|---:|---:|---:|---:|---:|"]
    for w, n in ((w, n) for w in worlds for n in marks):
        for c in FILTERS:
            e = sequence_errors(group(w, ks[-1], n), chosen, c, SEQUENCE_FRAMES)
            label = f"**{c}**" if c == chosen_filter else str(c)
            lines.append(f"| {w} | {n} | {label} | {_pct(e['missed'])} | {_pct(e['false'])} | "
                         f"{_pct(e['wrong'])} | {e['enter']:.2f} | {e['leave']:.2f} |")
    lines += hysteresis_table(records, worlds, ks[-1], marks, chosen)
    return "\n".join(lines) + "\n"


def node_filter() -> tuple[int, int, int, int]:
    """The node's default presence filter, (enter, enter_window, leave, leave_window)."""
    from povss_ros.objects import ObjectConfig

    node = ObjectConfig()
    return (node.presence_enter, node.presence_enter_window, node.presence_leave,
            node.presence_leave_window)


def hysteresis_table(records: Sequence[FrameRecord], worlds: Sequence[int], k: int,
                     marks: Sequence[int], chosen: float) -> list[str]:
    """What the node publishes over the same sequences, with and without its hysteresis (a
    concept present in view is kept from `STAY_SIMILARITY`), with no filter, the node's
    default filter and `DEBOUNCE`: the per-frame recall and false-present of its masks."""
    from povss_ros.personal.identity import STAY_SIMILARITY

    default = node_filter()
    lines = ["", f"What the node publishes over those sequences (K = {k}): a mask only where "
             "a region is seen and the concept is present. Mask recall = target frames whose "
             f"mask has IoU >= {HIT_IOU} with the target; masks on look-alikes = look-alike-"
             "only frames with a mask. Hysteresis: while present, a region is seen from "
             f"{STAY_SIMILARITY:.2f} (`objects_identity_stay_similarity`) instead of "
             f"{chosen:.2f}.\n",
             "| world | marked | filter | hysteresis | mask recall | masks on look-alikes | "
             "missed | false present |", "|---|---:|---|---|---:|---:|---:|---:|"]
    for w, n in ((w, n) for w in worlds for n in marks):
        for counts in dict.fromkeys(((1, 1, 1, 1), default, DEBOUNCE)):
            for stay in (None, STAY_SIMILARITY):
                e = sequence_errors(group_of(records, w, k, n), chosen, counts,
                                    SEQUENCE_FRAMES, stay)
                name = ("none" if counts == (1, 1, 1, 1) else str(counts)) + (
                    " (node default)" if counts == default else "")
                lines.append(f"| {w} | {n} | {name} | {'on' if stay else 'off'} | "
                             f"{_pct(e['hits'])} | {_pct(e['shown'])} | {_pct(e['missed'])} | "
                             f"{_pct(e['false'])} |")
    return lines


def picture(shown: Sequence[Shown], threshold: float, names: Sequence[str], path: Path,
            per_kind: int = 3) -> str:
    """identity.png: rows of truth | identity off | identity on (at `threshold`) for the
    target frames where identity off puts the most pixels on look-alikes, the look-alike-only
    frames where it claims the most, and the frames where identity on fails (wrong object,
    false present or a missed target), `per_kind` each at most; returns the caption."""
    from povss_ros.io import write_png
    from povss_ros.vis import HIGHLIGHTS, outline, overlay, titled

    def on_fails(s: Shown) -> bool:
        r, c = s.record, s.record.get("on", threshold)
        if not r.target:
            return c.pixels >= PRESENT_AREA * r.frame_px
        return r.iou("on", threshold) < HIT_IOU or c.lookalike > WRONG_SHARE * c.pixels

    def spread(items: list[Shown], key: Callable[[Shown], float]) -> list[Shown]:
        """The highest `key` per concept, then the highest across concepts."""
        best: dict[str, Shown] = {}
        for s in sorted(items, key=key, reverse=True):
            best.setdefault(s.record.concept, s)
        return sorted(best.values(), key=key, reverse=True)[:per_kind]

    rows = spread([s for s in shown if s.record.target], lambda s: s.record.off.lookalike)
    rows += spread([s for s in shown if not s.record.target], lambda s: s.record.off.pixels)
    rows += [s for s in shown if on_fails(s) and all(s is not x for x in rows)][:per_kind]
    tiles = []
    for s in rows:
        r = s.record
        v = len(names)
        truth = outline(outline(s.image.copy(), s.lookalikes, HIGHLIGHTS[1]), s.target,
                        HIGHLIGHTS[0])
        panels = [titled(truth, f"{r.concept} (yellow), look-alikes (cyan)")]
        kept = r.similarity >= threshold
        for name, mask, text in (
                ("identity off", s.off, ""),
                ("identity on", s.on if kept else np.zeros_like(s.on),
                 f", sim {r.similarity:.2f}" + ("" if kept else f" < {threshold:.2f}"))):
            labels = np.where(mask, v, 0).astype(np.uint16)
            img = overlay(s.image, labels, [*names, r.concept], [v], alpha=0.5, legend=False)
            img[~mask] = s.image[~mask]  # only the concept is coloured
            c = claim(mask, s.target, s.lookalikes)
            iou = c.tp / max(c.pixels + r.target_px - c.tp, 1)
            panels.append(titled(img, f"{name}: IoU {iou:.2f}, {c.regions} region(s){text}"))
        tiles.append(np.concatenate(panels, axis=1))
    if tiles:
        write_png(path, np.concatenate(tiles, axis=0))
    r0 = shown[0].record if shown else None
    return (f"World {r0.world if r0 else '-'}, K = {r0.k if r0 else '-'}, episode seed "
            f"{r0.seed if r0 else '-'}; rows: the target frames where identity off puts the "
            "most pixels on look-alikes (one per concept, up to three), the look-alike-only "
            "frames where it claims the most, then frames where identity on at the chosen "
            "threshold fails (if any). The concept is filled in yellow; truth outlines the "
            "target in yellow and the look-alikes in cyan.")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", default="models/syn_small.safetensors")
    p.add_argument("--out", default="docs/results")
    p.add_argument("--world-seed", type=int, nargs="+", default=[0, 1],
                   help="SYN^per worlds; the threshold is chosen on the first (0: seen)")
    p.add_argument("--concepts", type=int, default=6,
                   help="classes: those of world 0's first N SYN^per concepts")
    p.add_argument("--classes", nargs="+", help="these base classes instead")
    p.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5], help="K values")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="episode seeds")
    p.add_argument("--negatives", type=int, nargs="+", default=[0, 1, 3],
                   help="look-alikes marked \"not this one\" at the teach (the threshold is "
                   "chosen with the first)")
    p.add_argument("--frames", type=int, default=12,
                   help="target frames per concept (as many look-alike-only frames)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    import torch

    from povss_lab.eval.runner import stderr_progress
    from povss_ros.personal.identity import MIN_SIMILARITY

    torch.set_num_threads(args.threads)
    classes = args.classes or default_classes(args.concepts)
    start = time.perf_counter()
    records: list[FrameRecord] = []
    confs: dict[tuple, Confusions] = {}
    shown: list[Shown] = []
    for i, w in enumerate(args.world_seed):
        rec, conf, keep = collect(w, args.weights, classes, args.frames, args.shots,
                                  args.seeds, args.device, stderr_progress,
                                  keep=i == len(args.world_seed) - 1,
                                  negatives=args.negatives)
        records += rec
        confs |= conf
        shown += keep
    first = [r for r in records if (r.world, r.k, r.negatives) ==
             (args.world_seed[0], max(args.shots), args.negatives[0])]
    chosen = choose_threshold(first)
    meta = {"command": " ".join(["python -m povss_lab.eval.identity", *(
                argv if argv is not None else sys.argv[1:])]),
            "machine": torch.backends.cpu.get_cpu_capability(), "threads": args.threads,
            "date": datetime.date.today().isoformat(),
            "seconds": time.perf_counter() - start, "classes": classes, "seeds": args.seeds,
            "frames": args.frames}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    md = report(records, confs, chosen, MIN_SIMILARITY, meta)
    caption = picture(shown, chosen, World().class_names, out / "identity.png")
    md += f"\n![truth | identity off | identity on](identity.png)\n\n*{caption}*\n"
    md += _kept_notes(out / "identity.md")
    (out / "identity.md").write_text(md)
    print(md)
    return 0


__all__ = ["Claim", "FrameRecord", "choose_threshold", "claim", "collect", "lookalike_scene",
           "main", "rates", "report"]

if __name__ == "__main__":
    sys.exit(main())
