"""Helpers shared by the FSS^per, CUB^per and ADE^per readers.

Sample ids
----------
One image can be a positive of one concept and a negative of another (an FSS pair, a CUB
species seen from the other 199, an ADE image holding two of the 30 classes). ``sample(id)``
takes no concept, yet ``Sample.personal_mask`` must be all False on negatives; so the role is
written into the id, and a sample is a pure function of its id:

* ``"<image key>"``           a positive of FSS^per / CUB^per: the image with its own mask;
* ``"<image key>@<class>"``   a positive of ADE^per: the personal mask is ADE-847 class
  ``<class>`` (an integer id), because an ADE image has many classes;
* ``"neg:<image key>"``       a negative: the image alone, the personal mask all False (no
  mask file is read, as the paper needs foreground masks of the personal concept only).

Image keys are paths relative to the dataset's image folder, without extension and with "/"
separators (``"banana_boat/3"``, ``"001.Black_footed_Albatross/Black_Footed_Albatross_0046_18"``,
``"validation/ADE_val_00000001"``).

Files are read with OpenCV: images as RGB uint8, masks as single-channel 8-bit maps thresholded
at ``> 127`` (FSS-1000 masks are 0/255; CUB-200-2011 masks are soft, the share of annotators
who marked a pixel, so ``> 127`` keeps the majority's foreground).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from povss_lab.eval.benchmark import Sample
from povss_ros import io

NEGATIVE_PREFIX = "neg:"
CLASS_SEPARATOR = "@"
MASK_THRESHOLD = 127  # foreground = value > MASK_THRESHOLD

__all__ = [
    "CLASS_SEPARATOR",
    "image_sample",
    "MASK_THRESHOLD",
    "NEGATIVE_PREFIX",
    "check_same_size",
    "first_existing",
    "natural_key",
    "negative_id",
    "parse_id",
    "positive_id",
    "read_label_map",
    "read_mask",
    "read_rgb",
    "require_dir",
    "require_file",
]


def positive_id(image_key: str, class_id: int | None = None) -> str:
    """Id of a positive sample; ``class_id`` only for datasets with many classes per image."""
    return image_key if class_id is None else f"{image_key}{CLASS_SEPARATOR}{int(class_id)}"


def negative_id(image_key: str) -> str:
    """Id of a negative sample: the image without any personal pixel."""
    return NEGATIVE_PREFIX + image_key


def parse_id(sample_id: str) -> tuple[str, bool, int | None]:
    """Split a sample id into ``(image key, is_negative, class id or None)``.

    Raises KeyError (the protocol's error for an unknown id) when the id is malformed.
    """
    if not isinstance(sample_id, str) or not sample_id:
        raise KeyError(sample_id)
    if sample_id.startswith(NEGATIVE_PREFIX):
        key = sample_id[len(NEGATIVE_PREFIX) :]
        if not key or CLASS_SEPARATOR in key:
            raise KeyError(sample_id)
        return key, True, None
    if CLASS_SEPARATOR in sample_id:
        key, _, cls = sample_id.rpartition(CLASS_SEPARATOR)
        if not key or not cls.isdigit():
            raise KeyError(sample_id)
        return key, False, int(cls)
    return sample_id, False, None


def natural_key(text: str) -> tuple:
    """Sort key putting "2" before "10" (FSS-1000 names its images 1..10)."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def first_existing(candidates: Iterable[Path]) -> Path | None:
    """The first path that exists, or None."""
    for c in candidates:
        if c.exists():
            return c
    return None


def require_dir(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it is a folder, else raise FileNotFoundError naming the layout."""
    if not path.is_dir():
        raise FileNotFoundError(f"{what} not found: {path} is not a folder.\n{layout}")
    return path


def require_file(path: Path, what: str, layout: str) -> Path:
    """Return ``path`` if it is a file, else raise FileNotFoundError naming the layout."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path} is missing.\n{layout}")
    return path


def read_rgb(path: str | os.PathLike, layout: str = "") -> np.ndarray:
    """Read an image as RGB uint8 [H, W, 3]; grayscale files are expanded to 3 channels."""
    path = Path(path)
    require_file(path, "image", layout)
    return io.read_rgb(path)


def read_mask(
    path: str | os.PathLike, layout: str = "", threshold: int = MASK_THRESHOLD
) -> np.ndarray:
    """Read a foreground mask as bool [H, W]: value > ``threshold`` (color files are grayed)."""
    path = Path(path)
    require_file(path, "mask", layout)
    return io.read_mask(path, threshold)


def read_label_map(path: str | os.PathLike, layout: str = "") -> np.ndarray:
    """Read a single-channel integer label map unchanged (e.g. a uint16 TIFF) as uint16."""
    path = Path(path)
    require_file(path, "label map", layout)
    return io.read_labels(path)


def check_same_size(
    image: np.ndarray, other: np.ndarray, image_path: Path, other_path: Path
) -> None:
    """Raise ValueError naming both files when a mask/label map and its image differ in size."""
    if image.shape[:2] != other.shape[:2]:
        raise ValueError(
            f"size mismatch: {other_path} is {other.shape[1]}x{other.shape[0]} (WxH) but its "
            f"image {image_path} is {image.shape[1]}x{image.shape[0]}"
        )


def image_sample(sample_id: str, image_path: Path, mask_path: Path | None, layout: str) -> Sample:
    """A Sample from an image and, for a positive, its mask file (negatives: empty mask)."""
    image = read_rgb(image_path, layout)
    if mask_path is None:
        mask = np.zeros(image.shape[:2], dtype=bool)
    else:
        mask = read_mask(mask_path, layout)
        check_same_size(image, mask, image_path, mask_path)
    return Sample(sample_id=sample_id, image=image, personal_mask=mask, semantic=None)
