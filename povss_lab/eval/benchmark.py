"""What a personalization benchmark is, independent of where its images come from.

A benchmark is a vocabulary plus a list of personal concepts. Each concept names its base
class and the ids of its positive samples (the concept is present, with a mask) and of its
negative samples (same base class, another instance or species: the hard case). The K-shot
protocol (`eval.protocol.make_episode`) draws shots and tests from those ids; the runner reads
samples lazily by id, so large datasets never sit in memory.

Readers for FSS^per, CUB^per and ADE^per (local copies of the public datasets) and the
synthetic SYN^per all implement `PersonalBenchmark`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from povss_ros.vocabulary import UNLABELED

__all__ = ["UNLABELED", "ConceptSpec", "PersonalBenchmark", "Sample"]


@dataclass(frozen=True)
class ConceptSpec:
    """One personal concept of a benchmark."""

    name: str  # e.g. "my mug 3" or the FSS class name
    base_class: str  # a word of the benchmark's vocabulary
    positive_ids: tuple[str, ...]  # samples showing the concept
    negative_ids: tuple[str, ...]  # samples of the same base class without it


@dataclass
class Sample:
    """One image with what is known about it."""

    sample_id: str
    image: np.ndarray  # RGB uint8 [H, W, 3]
    personal_mask: np.ndarray  # bool [H, W]; all False on negatives
    # Ground truth over the vocabulary ids (uint16, UNLABELED = ignore), or None when the
    # dataset has none: then the frozen model's own prediction serves as ground truth with
    # the personal mask pasted on top (the paper's rule for FSS and CUB).
    semantic: np.ndarray | None = None


class PersonalBenchmark(Protocol):
    """The interface every benchmark reader implements."""

    name: str
    vocabulary: list[str]

    def concepts(self) -> list[ConceptSpec]:
        """Every concept the benchmark evaluates, in a fixed order."""
        ...

    def sample(self, sample_id: str) -> Sample:
        """Load one sample by id (raises KeyError for an unknown id)."""
        ...
