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
"""

from __future__ import annotations

import re

import numpy as np

from povss_lab.eval.benchmark import ConceptSpec, Sample
from povss_lab.synthetic.world import Identity, World, sample_scene

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
