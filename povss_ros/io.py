"""Files in and out: atomic writes and image I/O, in one place.

Every file the project writes goes through `atomic_path` (directly or through
`atomic_write` / `write_json` / `write_png`): the data goes to a temporary file in the same
folder, is flushed to disk, and replaces the target in one rename, so a reader or a crash sees
the old file or the complete new one, never a part. Images are read and written with OpenCV;
arrays are RGB (or single-channel) uint8/uint16, as the rest of the code uses them.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np


class ImageError(ValueError):
    """An image file that cannot be read or written, with the path in the message."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds, fsync it and rename it
    over `path`. On any exception the temporary file is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{path.suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike, overwrite: bool = False,
                  marker: str | None = None) -> Iterator[Path]:
    """Yield a path to create a folder at (named like `path`, inside a hidden temporary folder
    beside it); when the block succeeds, its files are fsynced and it is renamed to `path`,
    replacing an existing `path` only with `overwrite` (FileExistsError otherwise) and, when
    `marker` is given, only if `path` is a folder holding a file of that name (what a previous
    output has: a folder that is something else is never deleted). On any exception nothing
    is left and `path` is untouched: a reader never sees a half-written folder (a recording
    being written, for `povss bag`)."""
    path = Path(path)
    if os.path.lexists(path):
        if not overwrite:
            raise FileExistsError(f"{path} exists")
        if marker is not None and not (path.is_dir() and (path / marker).is_file()):
            raise FileExistsError(f"{path} exists and is not a folder holding {marker}: "
                                  "it is not replaced")
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    scratch.mkdir()
    try:
        target = scratch / path.name
        yield target
        for entry in (target, *target.rglob("*")):  # fsync by path: files and folders
            fsync_dir(entry)
        if os.path.lexists(path):
            path.rename(scratch / ".replaced")  # removed with the scratch folder
        os.replace(target, path)
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write bytes (or UTF-8 text) to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Strict JSON (no NaN), indented, UTF-8, written atomically."""
    atomic_write(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_durable(path: str | os.PathLike, data: bytes) -> None:
    """Write and fsync one file in place (for files inside a folder that is itself swapped in
    atomically, such as a concept being saved)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a folder's entries (files created, renamed or removed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes of an RGB [H, W, 3] or single-channel [H, W] uint8/uint16 array."""
    image = np.ascontiguousarray(array)
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise ImageError(f"cannot encode an array of shape {array.shape} {array.dtype} as PNG")
    return buf.tobytes()


def write_png(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write an RGB or single-channel (uint8 or uint16) array as PNG, atomically."""
    try:
        data = encode_png(array)
    except ImageError as exc:
        raise ImageError(f"{path}: {exc}") from None
    atomic_write(path, data)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file as RGB uint8 [H, W, 3] (grey files are expanded to three channels)."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f"cannot read image {path} (missing, or cannot decode it: not an image)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """A single-channel 8- or 16-bit image (a label map) unchanged, as uint16 [H, W]."""
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if raw is None:
        raise ImageError(f"cannot read label map {path} (missing, or cannot decode it)")
    if raw.ndim != 2 or raw.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"label map {path} must be single-channel 8- or 16-bit, got shape "
                         f"{raw.shape} dtype {raw.dtype}")
    return raw.astype(np.uint16, copy=False)


def read_mask(path: str | os.PathLike, threshold: int = 0) -> np.ndarray:
    """A mask file as bool [H, W]: grey value > `threshold` (colour files are greyed)."""
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise ImageError(f"cannot read mask {path} (missing, or cannot decode it: not an image)")
    return grey > threshold


MIXED_SHOTS = "give a mask for every shot (IMAGE:MASK) or for none (IMAGE)"


def shot_paths(spec: str) -> tuple[str, str | None]:
    """An ``IMAGE[:MASK]`` shot argument (`povss teach`, `povss node teach`) -> the image path
    and the mask path, or None without one. The last colon splits, so an image path may hold
    colons of its own; a leading colon alone is part of the name."""
    image, sep, mask = spec.rpartition(":")
    return (image, mask) if sep and image else (spec, None)


def shots_have_masks(specs: Sequence[str]) -> bool:
    """Whether ``IMAGE[:MASK]`` shot arguments name masks: True for all, False for none;
    ValueError (`MIXED_SHOTS`) for a mix. Reads no file."""
    given = [shot_paths(spec)[1] is not None for spec in specs]
    if any(given) and not all(given):
        raise ValueError(MIXED_SHOTS)
    return any(given)


def read_shots(specs: Sequence[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """``IMAGE[:MASK]`` shot arguments -> RGB images and their bool masks (nonzero = the
    concept); no masks (an empty list) when no shot names one. ValueError for a mix of both;
    ImageError for a file that is not there (named in one line) or does not decode."""
    with_masks = shots_have_masks(specs)
    images, masks = [], []
    for spec in specs:
        image_path, mask_path = shot_paths(spec)
        images.append(read_rgb(_existing(image_path)))
        if with_masks:
            masks.append(read_mask(_existing(mask_path)))
    return images, masks


def _existing(path: str) -> str:
    if not os.path.isfile(path):  # one clear line instead of OpenCV's warning and ours
        raise ImageError(f"no such file: {path}")
    return path
