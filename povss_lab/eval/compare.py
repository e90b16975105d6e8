"""Compare two saved evaluation reports concept by concept (a paired test).

    python -m povss_lab.eval.compare OLD.json NEW.json --k 5 --methods none all

Two models evaluated on the same concepts differ by far less than the spread between
concepts, so comparing their means alone over-reads noise. Pairing each concept with itself
(its mean over teaching seeds in each report) and taking the standard error of the
differences tells whether a change is larger than that noise. Inputs are the `<name>.json`
files written by `python -m povss_lab.eval`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from povss_lab.eval.report import results_table_markdown


class ReportError(ValueError):
    """A report file is missing, unreadable, or lacks what the comparison needs."""


def load_records(path: str | Path) -> list[dict]:
    """The per-(concept, method, K, seed) records of one saved report."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        table = data["run"]["records"]
        cols, rows = table["columns"], table["rows"]
        records = [dict(zip(cols, row, strict=True)) for row in rows]
    except FileNotFoundError as e:
        raise ReportError(f"{path}: no such report") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReportError(f"{path}: not a JSON report ({e})") from e
    except (KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{path}: no run.records table with columns and rows ({e})") from e
    need = {"concept", "method", "k", "seed"}
    if records and not need <= records[0].keys():
        raise ReportError(f"{path}: records lack {sorted(need - records[0].keys())}")
    return records


def concept_means(records: Sequence[dict], method: str, k: int, metric: str) -> dict[str, float]:
    """Each concept's `metric`, averaged over its teaching seeds, for one method and K."""
    scores: dict[str, list[float]] = {}
    for r in records:
        if r["method"] == method and r["k"] == k:
            if r.get(metric) is None:
                raise ReportError(f"record of {r['concept']!r} has no {metric!r}")
            scores.setdefault(r["concept"], []).append(float(r[metric]))
    return {c: sum(v) / len(v) for c, v in scores.items()}


@dataclass(frozen=True)
class PairedDifference:
    """new - old over the concepts both reports share."""

    method: str
    k: int
    concepts: int
    old_mean: float
    new_mean: float
    mean_diff: float
    std_error: float
    worst: tuple[tuple[str, float], ...]
    best: tuple[tuple[str, float], ...]

    @property
    def z(self) -> float:
        """Mean difference in standard errors (inf when every concept moved alike)."""
        if self.std_error == 0.0:
            return 0.0 if self.mean_diff == 0.0 else math.copysign(math.inf, self.mean_diff)
        return self.mean_diff / self.std_error


def paired_difference(
    old: Sequence[dict],
    new: Sequence[dict],
    method: str,
    k: int,
    metric: str = "iou_per",
    extremes: int = 2,
) -> PairedDifference:
    """Pair concepts across two reports; raise ReportError unless both hold the same ones."""
    a, b = concept_means(old, method, k, metric), concept_means(new, method, k, metric)
    if not a or not b:
        side = "old" if not a else "new"
        raise ReportError(f"the {side} report has no records for method {method!r} at K={k}")
    if a.keys() != b.keys():
        only = sorted(a.keys() ^ b.keys())
        raise ReportError(f"the reports hold different concepts ({len(only)} unpaired: {only[:4]})")
    names = sorted(a)
    diffs = sorted((b[c] - a[c], c) for c in names)
    values = [d for d, _ in diffs]
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return PairedDifference(
        method=method,
        k=k,
        concepts=len(names),
        old_mean=statistics.fmean(a.values()),
        new_mean=statistics.fmean(b.values()),
        mean_diff=statistics.fmean(values),
        std_error=se,
        worst=tuple((c, d) for d, c in diffs[:extremes]),
        best=tuple((c, d) for d, c in reversed(diffs[-extremes:])),
    )


def comparison_table(results: Sequence[PairedDifference], metric: str) -> str:
    """A markdown table, one row per (method, K)."""

    def moves(pairs: tuple[tuple[str, float], ...]) -> str:
        return ", ".join(f"{c} {d:+.1f}" for c, d in pairs)

    rows = [
        {
            "method": r.method,
            "k": r.k,
            "n": r.concepts,
            "old": r.old_mean,
            "new": r.new_mean,
            "diff": f"{r.mean_diff:+.2f} ± {r.std_error:.2f}",
            "z": f"{r.z:+.1f}",
            "worst": moves(r.worst),
            "best": moves(r.best),
        }
        for r in results
    ]
    cols = [
        ("method", "method"),
        ("k", "K"),
        ("n", "concepts"),
        ("old", f"old {metric}"),
        ("new", f"new {metric}"),
        ("diff", "new − old ± s.e."),
        ("z", "in s.e."),
        ("worst", "largest losses"),
        ("best", "largest gains"),
    ]
    return results_table_markdown(rows, cols)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m povss_lab.eval.compare", description=__doc__.splitlines()[0]
    )
    parser.add_argument("old", type=Path, help="the baseline report (<name>.json)")
    parser.add_argument("new", type=Path, help="the report to compare against it")
    parser.add_argument("--k", type=int, nargs="+", default=[5], help="shots (default 5)")
    parser.add_argument(
        "--methods", nargs="+", default=["none", "all"], help="methods (default: none all)"
    )
    parser.add_argument("--metric", default="iou_per", help="record column (default iou_per)")
    args = parser.parse_args(argv)
    try:
        old, new = load_records(args.old), load_records(args.new)
        results = [
            paired_difference(old, new, m, k, args.metric) for m in args.methods for k in args.k
        ]
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.old} -> {args.new}: per-concept means over seeds, paired\n")
    print(comparison_table(results, args.metric))
    return 0


if __name__ == "__main__":
    sys.exit(main())
