"""Readers for the paper's three benchmarks over local copies of the public datasets.

``open_benchmark("cub", "/data/cub")`` returns a :class:`~povss_lab.eval.benchmark.
PersonalBenchmark` (what ``python -m povss_lab.eval --dataset cub --root PATH`` uses). Each
reader's module docstring gives the on-disk layout it reads and how the paper's positives and
negatives are built from it; ``common`` documents the sample-id grammar shared by all three.
`synper` is the project's own benchmark, rendered from the synthetic world.
"""

from __future__ import annotations

import os
from typing import Any

from povss_lab.eval.benchmark import PersonalBenchmark
from povss_lab.eval.datasets.ade import ADE_CONCEPTS, ADEPer
from povss_lab.eval.datasets.cub import CUBPer
from povss_lab.eval.datasets.fss import FSS_PAIRS, FSSPer

__all__ = ["ADE_CONCEPTS", "DATASETS", "FSS_PAIRS", "ADEPer", "CUBPer", "FSSPer", "open_benchmark"]

DATASETS: dict[str, type] = {"fss": FSSPer, "cub": CUBPer, "ade": ADEPer}


def open_benchmark(name: str, root: str | os.PathLike, **options: Any) -> PersonalBenchmark:
    """Open benchmark ``name`` ("fss", "cub" or "ade") over the dataset copy at ``root``.

    ``options`` go to the reader (e.g. ``split="test"`` for CUB, ``class_names=...`` for ADE).
    Raises ValueError for an unknown name; the readers raise FileNotFoundError naming the
    expected layout when ``root`` does not hold the dataset.
    """
    key = str(name).strip().lower()
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[key](root, **options)
