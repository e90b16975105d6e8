"""The engine the CPU benchmarks time: the committed synthetic-world SAN, fp32, one thread.

One definition for the in-process benchmarks (identity, objects), so their rows are measured
on the same engine; the node benchmarks pass `SMALL_MODEL` to the node as its `weights`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from povss_lab.synthetic.world import World, sample_scene
from povss_ros.perception import PerceptionEngine, build_engine
from povss_ros.settings import EngineSettings
from povss_ros.teaching.requests import TeachRequest

SMALL_MODEL = Path(__file__).resolve().parents[1] / "models" / "syn_small.safetensors"


def small_engine() -> PerceptionEngine:
    """The small model on the CPU in fp32 with torch on one thread, a throwaway store."""
    torch.set_num_threads(1)
    return build_engine(EngineSettings(weights=str(SMALL_MODEL), device="cpu",
                                       precision="fp32", concept_store=tempfile.mkdtemp()))


def teach_from_scenes(engine: PerceptionEngine, world: World, name: str, identity: object,
                      rng: np.random.Generator, shots: int = 5,
                      size: tuple[int, int] = (320, 240)) -> None:
    """Teach "my <name>" as `identity` from `shots` synthetic scenes with exact masks; a
    failed teach ends the benchmark with its message."""
    scenes = [sample_scene(rng, world, [identity], size=size) for _ in range(shots)]
    outcome = engine.teach(TeachRequest(f"my {name}", name, images=[s.image for s in scenes],
                                        masks=[s.mask(identity) for s in scenes]))
    if not outcome.success:
        raise SystemExit(f"teaching my {name} failed: {outcome.message}")
