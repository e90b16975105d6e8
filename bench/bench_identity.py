"""What identity costs per frame: one object per personal concept (povss_ros.personal.identity).

The committed small model on one 640x480 synthetic table scene holding, for each taught
concept, the object itself and two look-alikes of its class (other identities), so the label
map has the candidate regions identity has to weigh. Concepts: my mug, my bottle, my bowl and
my box, each taught from five shots with exact masks, all taught as one object. For C = 1, 2
and 4 of them (the others out of the segmenter): the decode step with identity off (every
pixel the classifier gives a concept stays, the paper's rule), with identity on, and
`identity.keep_one` alone for the first concept on the decode's own label map. The decodes
with identity off and on alternate (the order swapped every round), and what identity adds
is the median of their paired differences, so a shared host's drift hits both alike. The
encode (SAN's forward), the same for every row, is given for scale. Medians over repeats,
after two warm-up calls, one thread.

    python bench/bench_identity.py [--repeats 50]
"""

from __future__ import annotations

import argparse
import statistics
from datetime import date

import numpy as np
import torch
from hardware import cpu_name, paired_ms, timed_ms  # noqa: E402 - bench/ sibling
from small_engine import small_engine, teach_from_scenes  # noqa: E402 - bench/ sibling

from povss_lab.synthetic.world import World, sample_scene
from povss_ros.personal.identity import keep_one

SIZE = (640, 480)
CLASSES = ("mug", "bottle", "bowl", "box")  # the taught concepts' base words, in order
SHOTS = 5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    world = World(0)
    engine = small_engine()
    rng = np.random.default_rng(11)
    in_view = []
    for name in CLASSES:
        mine, *others = world.identities(name)[:3]
        teach_from_scenes(engine, world, name, mine, rng, SHOTS)
        in_view += [mine, *others]
    scene = sample_scene(rng, world, in_view, n_objects=(len(in_view), len(in_view)),
                         size=SIZE)
    seg = engine.segmenter
    taught = list(seg.concepts)
    features = seg.encode(scene.image)
    encode_ms, _ = timed_ms(lambda: seg.encode(scene.image), max(5, args.repeats // 5))
    own, base = len(seg.vocabulary), seg.vocabulary.index(CLASSES[0])
    rows = []
    for c in (1, 2, 4):
        seg.set_concepts(taught[:c])
        on, off = paired_ms(lambda: seg.decode(features),
                            lambda: seg.decode(features, identity=False), args.repeats)
        labels, fixed = seg.decode(features, identity=False).labels, range(own + 1, own + c)
        alone, _ = timed_ms(lambda: keep_one(labels, own, base, features, taught[0],  # noqa: B023
                                             fixed=fixed), args.repeats)  # noqa: B023
        adds = statistics.median(a - b for a, b in zip(on, off))
        rows.append((c, statistics.median(off), statistics.median(on), adds, alone))
    seg.set_concepts(taught)
    lines = [
        f"Identity per frame, one {SIZE[0]}x{SIZE[1]} scene with {len(in_view)} objects "
        f"(each concept's own object and two look-alikes); {date.today().isoformat()}, "
        f"1 thread, median of {args.repeats}",
        "",
        "| concepts | decode, identity off ms | decode, identity on ms | identity adds ms "
        "| keep_one alone (first concept) ms |",
        "|---:|---:|---:|---:|---:|",
        *(f"| {c} | {off:.1f} | {on:.1f} | {adds:+.1f} | {alone:.1f} |"
          for c, off, on, adds, alone in rows),
        "",
        f"For scale: the small model's encode (SAN's forward) of this frame: {encode_ms:.0f} ms. "
        f"Hardware: {cpu_name()} (torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}).",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
