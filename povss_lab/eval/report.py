"""Reports of evaluation runs: markdown tables, atomic JSON files and IoU^per/mIoU-vs-K plots.

matplotlib is optional: only :func:`plot_vs_k` needs it, and it is imported there, so the rest
of ``povss_lab.eval`` works on a robot without it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from povss_ros.io import atomic_path, atomic_write

__all__ = ["plot_vs_k", "results_table_markdown", "save_json", "to_jsonable"]

NAN_TEXT = "n/a"


def _cell(value: Any, float_fmt: str) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return NAN_TEXT if math.isnan(v) else float_fmt.format(v)
    # '|' would end the cell and a newline the row: escape/flatten them
    return str(value).replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def results_table_markdown(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    float_fmt: str = "{:.2f}",
) -> str:
    """GitHub-flavoured markdown table, one row per dict, for READMEs and run reports.

    ``columns`` lists the keys to show, each either ``key`` (also the header) or
    ``(key, header)``. Floats use ``float_fmt`` (two decimals, as in the paper's tables), NaN
    prints as ``n/a``, a missing key or None as an empty cell, and ``|`` in text is escaped.
    Columns whose non-empty values are all numbers are right-aligned. Ends with a newline.
    """
    if not columns:
        raise ValueError("results_table_markdown needs at least one column")
    keys: list[str] = []
    headers: list[str] = []
    for c in columns:
        if isinstance(c, str):
            keys.append(c)
            headers.append(c)
        else:
            key, header = c
            keys.append(key)
            headers.append(header)
    numeric = []
    for key in keys:
        present = [r[key] for r in rows if r.get(key) is not None]
        numeric.append(bool(present) and all(_is_number(v) for v in present))
    lines = [
        "| " + " | ".join(_cell(h, float_fmt) for h in headers) + " |",
        "|" + "|".join("---:" if num else "---" for num in numeric) + "|",
    ]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(k), float_fmt) for k in keys) + " |")
    return "\n".join(lines) + "\n"


def to_jsonable(obj: Any) -> Any:
    """Convert to strict-JSON-safe Python: numpy scalars/arrays to numbers/lists, dataclasses
    via their ``to_dict()`` (or ``asdict``), paths to str, tuples/sets to lists, and NaN/inf to
    None (``null``), because bare NaN is not valid JSON and breaks other readers."""
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, type):
        return to_jsonable(obj.to_dict())
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj))
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as strict JSON (see :func:`to_jsonable`) atomically; parent folders are
    created. Unserializable objects raise TypeError and leave any previous file untouched."""
    data = json.dumps(to_jsonable(obj), indent=2, sort_keys=False, allow_nan=False) + "\n"
    atomic_write(path, data)


def _metric(result: Any, name: str) -> float:
    value = result[name] if isinstance(result, Mapping) else getattr(result, name)
    return math.nan if value is None else float(value)


def plot_vs_k(
    results: Mapping[str, Mapping[int, Any]],
    path: str | os.PathLike,
    title: str | None = None,
) -> None:
    """Plot IoU^per (left) and mIoU (right) against K, one line per method, to a PNG.

    ``results`` maps method -> {K -> EvalResult} (a mapping with ``iou_per`` and ``miou`` keys
    also works); values are percent. Uses the Agg canvas directly (no pyplot, no global
    backend switch, no display needed) and writes atomically. Raises ImportError naming
    matplotlib when it is not installed.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "plot_vs_k needs matplotlib (pip install matplotlib); the rest of "
            "povss_lab.eval works without it"
        ) from e
    if not results:
        raise ValueError("plot_vs_k: no results to plot")

    fig = Figure(figsize=(9.0, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    all_k: set[int] = set()
    for method, by_k in results.items():
        ks = sorted(by_k)
        all_k.update(ks)
        for ax, name in zip(axes, ("iou_per", "miou")):
            ax.plot(ks, [_metric(by_k[k], name) for k in ks], marker="o", label=str(method))
    for ax, label in zip(axes, ("IoU$^{per}$ (%)", "mIoU (%)")):
        ax.set_xlabel("K (shots)")
        ax.set_ylabel(label)
        ax.set_xticks(sorted(all_k))
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize="small")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
