#!/usr/bin/env python3
"""Hard-link the torch family (torch, torchvision, triton, nvidia-*) from one venv into another.

`make test` builds a venv per ROS distribution (.venv for Kilted, .venv-jazzy for Jazzy); each
would hold its own 5 GB of the same CUDA torch build, which is more than some machines have
free. A hard link costs no space, and pip replaces a file by unlinking it first, so upgrading
torch in one venv never touches the other's files. Run on a new target venv before pip: pip then
finds these distributions installed and keeps them when their versions satisfy the pins.

Nothing is linked across file systems, over a distribution the target has, or over a file of
the target's own; a distribution's metadata is linked last, so one cut short is invisible to
pip, which then installs it whole. Linked files are one file in two venvs: edit neither in
place. After a torch pin changes, remove the second venv (rm -r .venv-jazzy): it keeps its old
torch, which pip would replace by a full download rather than a link.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import sys
import sysconfig
from importlib.metadata import Distribution, distributions
from pathlib import Path

SHARED = re.compile(r"^(torch|torchvision|triton|nvidia-.*|cuda-.*)$")


def site_packages(venv: Path) -> Path:
    """The purelib folder of `venv`, for the Python version running this script."""
    relative = sysconfig.get_path("purelib", vars={"base": "", "platbase": ""}).lstrip("/")
    return venv / relative


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _files(dist: Distribution, site: Path) -> tuple[list[Path], list[Path]]:
    """A distribution's files under `site` (as paths relative to it): its code, then its metadata.

    Files outside site-packages (console scripts in bin/, which name the source venv's python)
    are left out.
    """
    code: list[Path] = []
    metadata: list[Path] = []
    for entry in dist.files or []:
        relative = Path(os.path.normpath(entry))
        if relative.is_absolute() or relative.parts[0] == "..":
            continue
        is_metadata = relative.parts[0].endswith((".dist-info", ".egg-info"))
        (metadata if is_metadata else code).append(relative)
    return code, metadata


def share(source_venv: Path, target_venv: Path) -> list[str]:
    """Link the shared distributions of `source_venv` into `target_venv`; returns their names."""
    source, target = site_packages(source_venv), site_packages(target_venv)
    if not source.is_dir() or not target.is_dir():
        return []
    present = {_normalized(d.metadata["Name"]) for d in distributions(path=[str(target)])}
    linked: list[str] = []
    for dist in distributions(path=[str(source)]):
        name = _normalized(dist.metadata["Name"])
        if not SHARED.match(name) or name in present:
            continue
        code, metadata = _files(dist, source)
        done: list[Path] = []
        try:
            for relative in code + metadata:
                origin = source / relative
                if not origin.is_file():
                    continue
                destination = target / relative
                if destination.exists():  # the target's own file: not ours to replace
                    raise FileExistsError(errno.EEXIST, "the target has its own", str(destination))
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.link(origin, destination)
                done.append(destination)
        except OSError as error:
            for path in reversed(done):
                path.unlink(missing_ok=True)
            print(f"share_packages: {name} not linked ({error}); pip installs it", file=sys.stderr)
            if error.errno == errno.EXDEV:  # another file system: nothing else can link either
                break
            continue
        linked.append(f"{dist.metadata['Name']}=={dist.version}")
        present.add(name)
    return linked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="an installed venv, e.g. .venv")
    parser.add_argument("target", type=Path, help="a new venv, e.g. .venv-jazzy")
    args = parser.parse_args()
    linked = share(args.source, args.target)
    if linked:
        print(f"share_packages: {len(linked)} distributions linked from {args.source}: "
              + ", ".join(sorted(linked)[:4]) + (" ..." if len(linked) > 4 else ""))


if __name__ == "__main__":
    main()
