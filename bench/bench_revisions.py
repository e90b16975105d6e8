"""One 640x480 SAN ViT-B/16 frame at two revisions of this repository, side by side in one run.

A shared machine's speed drifts by several per cent between runs, so a change is measured
against its base here and not against a table from another day: each revision is checked out
in a temporary git worktree, and child processes alternate between the two (one per revision
per round), each timing frames (encode, decode) in each precision after warm-up, with the same
random weights and image. The table gives each revision's median over every round's frames and
the ratio new / base. Nothing is compiled: a revision from the time of the bf16 attention kernel
(910eed3 to b91d8c8, docs/experiments.md 9.1 and 9.5) runs here on torch's attention, as that
revision did wherever its optional kernel was not built.

    python bench/bench_revisions.py BASE [NEW] [--rounds 3] [--repeats 5]
        [--precisions fp32,bf16] [--threads 2]

NEW: a revision, or the working tree when left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from hardware import cpu_name  # noqa: E402 - bench/ sibling

REPO = Path(__file__).resolve().parent.parent
PARTS = ("frame", "encode", "decode")


def child(precisions: list[str], repeats: int, threads: int) -> None:
    """Time frames with the `povss_ros` on sys.path; one JSON line of seconds per precision."""
    import time

    import numpy as np

    from povss_ros.san.config import get_config
    from povss_ros.san.model import build_san
    from povss_ros.segmenter import Segmenter

    torch.set_num_threads(threads)
    model = build_san(get_config("vit_b16"), seed=0)
    image = np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8)
    cache = Path(tempfile.gettempdir()) / "povss_bench_text_rows"
    for precision in precisions:
        seg = Segmenter(model, "coco_stuff", device="cpu", precision=precision,
                        text_cache_dir=cache)
        seg.resize = "fast"  # every revision alike: from_weights defaulted to fast before a998740
        seg.segment(image)
        seg.segment(image)
        times: dict[str, list[float]] = {part: [] for part in PARTS}
        for _ in range(repeats):
            t0 = time.perf_counter()
            features = seg.encode(image)
            t1 = time.perf_counter()
            seg.decode(features)
            t2 = time.perf_counter()
            times["frame"].append(t2 - t0)
            times["encode"].append(t1 - t0)
            times["decode"].append(t2 - t1)
        print(json.dumps({"precision": precision, **times}), flush=True)


def run_child(root: Path, args: argparse.Namespace) -> list[dict]:
    paths = [str(root), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    cmd = [sys.executable, __file__, "--child", "--precisions", args.precisions,
           "--repeats", str(args.repeats), "--threads", str(args.threads)]
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        sys.exit(f"timing at {root} failed:\n{done.stderr[-2000:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def revision_name(rev: str | None) -> str:
    if rev is None:
        return "working tree"
    sha = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO, capture_output=True,
                         text=True, check=True).stdout.strip()
    return f"{rev} ({sha})" if sha != rev else sha


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base", nargs="?")
    parser.add_argument("new", nargs="?")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    precisions = args.precisions.split(",")
    if args.child:
        child(precisions, args.repeats, args.threads)
        return
    if args.base is None:
        parser.error("the base revision is required")
    revs = {"base": args.base, "new": args.new}
    names = {key: revision_name(rev) for key, rev in revs.items()}
    with tempfile.TemporaryDirectory() as tmp:
        roots = {key: REPO if rev is None else Path(tmp) / key for key, rev in revs.items()}
        try:
            for key, rev in revs.items():
                if rev is not None:
                    subprocess.run(["git", "worktree", "add", "--detach", "-q", str(roots[key]),
                                    rev], cwd=REPO, check=True)
            seen = {(key, p): {part: [] for part in PARTS} for key in revs for p in precisions}
            for r in range(args.rounds):
                for key in revs:
                    print(f"round {r + 1}/{args.rounds}: {names[key]} ...", file=sys.stderr,
                          flush=True)
                    for row in run_child(roots[key], args):
                        for part in PARTS:
                            seen[key, row["precision"]][part] += row[part]
        finally:
            for key, rev in revs.items():
                if rev is not None:
                    subprocess.run(["git", "worktree", "remove", "--force", str(roots[key])],
                                   cwd=REPO, check=False, capture_output=True)
            subprocess.run(["git", "worktree", "prune"], cwd=REPO, check=False)
    print(f"One 640x480 frame, SAN ViT-B/16 (random weights), cpu: {cpu_name()} (torch CPU "
          f"capability {torch.backends.cpu.get_cpu_capability()}), {args.threads} threads; "
          f"base = {names['base']}, new = {names['new']}; median of {args.rounds} rounds x "
          f"{args.repeats} frames each, the revisions alternating\n")
    print("| precision | part | base ms | new ms | new / base |")
    print("|---|---|---:|---:|---:|")
    for p in precisions:
        for part in PARTS:
            base = statistics.median(seen["base", p][part]) * 1e3
            new = statistics.median(seen["new", p][part]) * 1e3
            print(f"| {p} | {part} | {base:.1f} | {new:.1f} | {new / base:.3f} |")


if __name__ == "__main__":
    main()
