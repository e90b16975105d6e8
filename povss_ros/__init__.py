"""povss_ros: SAN open-vocabulary segmentation with personal concepts, under a thin ROS layer.

The public API, importable from the package itself (loaded on first use, so that
`import povss_ros` stays cheap): `Segmenter` (weights + vocabulary in, label maps out),
`PerceptionEngine` / `build_engine` / `EngineSettings` (segmenter + concept store + teaching),
`TeachConfig` (every teach setting), `TeachRequest`, `ConceptStore`.
"""

from __future__ import annotations

import importlib

_API = {
    "Segmenter": ".segmenter",
    "Segmentation": ".segmenter",
    "SegmenterError": ".segmenter",
    "PerceptionEngine": ".perception",
    "TeachRequest": ".teaching.requests",
    "TeachOutcome": ".teaching.requests",
    "build_engine": ".perception",
    "EngineSettings": ".settings",
    "TeachConfig": ".personal.teach",
    "ConceptStore": ".personal.store",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> object:
    if name not in _API:
        raise AttributeError(f"module 'povss_ros' has no attribute {name!r}")
    return getattr(importlib.import_module(_API[name], __name__), name)
