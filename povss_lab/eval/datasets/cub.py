"""CUB^per: every one of the 200 CUB-200-2011 species is a personal "my bird".

Supported layout (``CUB_200_2011.tgz`` and the separate ``segmentations.tgz`` extracted side
by side)::

    ROOT/CUB_200_2011/images.txt               "<image_id> <species_dir>/<file>.jpg"
    ROOT/CUB_200_2011/image_class_labels.txt   "<image_id> <class_id>"
    ROOT/CUB_200_2011/classes.txt              "<class_id> <NNN>.<Species_name>" (200 lines)
    ROOT/CUB_200_2011/train_test_split.txt     "<image_id> <1 train | 0 test>" (split != "all")
    ROOT/CUB_200_2011/images/<NNN>.<Species_name>/<file>.jpg
    ROOT/segmentations/<NNN>.<Species_name>/<file>.png   (soft masks, foreground > 127)

``ROOT`` may also be the ``CUB_200_2011`` folder itself; ``segmentations/`` is looked for in
``ROOT``, inside ``CUB_200_2011/`` and beside it.

How the benchmark is built: "for the CUB^per dataset, all 200 classes are used for
evaluation" (supp. A) and the test sets "include equal number of images including the personal
concept and those without the personal concept" (Sec. 4.1); the hard case is "a different
bird" (Fig. 2). The paper does not say which images of other species are the negatives, so:
a concept's positives are all images of its species (in ``split``); its negatives are
``num_negatives`` images (default: as many as it has positives, enough for a balanced test set
at any K) drawn uniformly without replacement from the images of the other 199 species (same
split) with ``numpy.random.default_rng([seed, class_id])`` and kept in ``images.txt`` order:
deterministic, and different for each species. ``split`` defaults to "all" images (the paper
does not restrict to CUB's train or test split).

``ConceptSpec.name`` is the species in words, lower case ("black footed albatross", the
paper's own example of the text given to the model without personalization, Sec. 4.2);
``base_class`` is "bird" for all. ``Sample.semantic`` is None (no open-vocabulary ground
truth: the paper scores mIoU against the frozen model's prediction with the mask pasted).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from povss_lab.eval.benchmark import ConceptSpec, Sample
from povss_lab.eval.datasets.common import (
    first_existing,
    image_sample,
    negative_id,
    parse_id,
    positive_id,
    require_dir,
    require_file,
)
from povss_ros.vocabulary import COCO_STUFF_171

__all__ = ["CUBPer", "species_name"]

NUM_SPECIES = 200
SPLITS = ("all", "train", "test")

LAYOUT = (
    "Expected CUB-200-2011 layout: ROOT/CUB_200_2011/{images.txt, image_class_labels.txt, "
    "classes.txt, train_test_split.txt, images/<NNN>.<Species>/<file>.jpg} (from "
    "CUB_200_2011.tgz) and ROOT/segmentations/<NNN>.<Species>/<file>.png (from the separate "
    "segmentations.tgz); ROOT may also be the CUB_200_2011 folder itself."
)


def species_name(class_dir: str) -> str:
    """Species folder name in words: ``001.Black_footed_Albatross`` -> black footed albatross."""
    _, _, species = class_dir.partition(".")
    return " ".join((species or class_dir).replace("_", " ").split()).lower()


def _read_table(path: Path, what: str) -> list[tuple[str, str]]:
    """Two-column, space-separated CUB index file; ValueError naming the bad line."""
    require_file(path, what, LAYOUT)
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2:
            raise ValueError(f"corrupt {path} line {n}: expected '<id> <value>', got {line!r}")
        rows.append((parts[0], parts[1].strip()))
    return rows


class CUBPer:
    """CUB^per reader (lazy: the constructor parses the index files, ``sample`` one image)."""

    name = "CUB^per"

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "all",
        num_negatives: int | None = None,
        seed: int = 0,
    ) -> None:
        """Parse CUB-200-2011's index files under ``root``.

        Raises FileNotFoundError naming the expected layout when a folder or index file is
        missing, ValueError when an index file is corrupt or does not list 200 species.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if num_negatives is not None and num_negatives < 1:
            raise ValueError(f"num_negatives must be >= 1 or None, got {num_negatives}")
        self.vocabulary: list[str] = list(COCO_STUFF_171)
        self.split, self.num_negatives, self.seed = split, num_negatives, int(seed)
        self.root = Path(root)
        require_dir(self.root, "CUB-200-2011 root", LAYOUT)
        cub = first_existing(
            d for d in (self.root / "CUB_200_2011", self.root) if (d / "images.txt").is_file()
        )
        if cub is None:
            raise FileNotFoundError(
                f"CUB-200-2011 index not found: neither {self.root / 'CUB_200_2011/images.txt'} "
                f"nor {self.root / 'images.txt'} exists.\n{LAYOUT}"
            )
        self.cub_dir = cub
        self.image_dir = require_dir(cub / "images", "CUB-200-2011 image folder", LAYOUT)
        seg = first_existing(
            d
            for d in (
                self.root / "segmentations",
                cub / "segmentations",
                cub.parent / "segmentations",
            )
            if d.is_dir()
        )
        if seg is None:
            raise FileNotFoundError(
                f"CUB-200-2011 segmentations not found in {self.root / 'segmentations'}, "
                f"{cub / 'segmentations'} or {cub.parent / 'segmentations'}: they come in the "
                f"separate segmentations.tgz archive.\n{LAYOUT}"
            )
        self.seg_dir = seg

        classes = _read_table(cub / "classes.txt", "CUB-200-2011 classes.txt")
        if len(classes) != NUM_SPECIES:
            raise ValueError(
                f"{cub / 'classes.txt'} lists {len(classes)} species; CUB-200-2011 has "
                f"{NUM_SPECIES}.\n{LAYOUT}"
            )
        self.class_dirs: dict[int, str] = {}
        for cid, cdir in classes:
            if not cid.isdigit():
                raise ValueError(f"corrupt {cub / 'classes.txt'}: class id {cid!r}")
            self.class_dirs[int(cid)] = cdir
        images = _read_table(cub / "images.txt", "CUB-200-2011 images.txt")
        labels = dict(_read_table(cub / "image_class_labels.txt", "image_class_labels.txt"))
        train = (
            dict(_read_table(cub / "train_test_split.txt", "train_test_split.txt"))
            if split != "all"
            else {}
        )
        self._by_class: dict[int, list[str]] = {c: [] for c in self.class_dirs}
        self._order: list[str] = []  # image keys in images.txt order (the split only)
        self._class_of: dict[str, int] = {}
        for image_id, rel in images:
            if image_id not in labels:
                raise ValueError(
                    f"image {image_id} ({rel}) of images.txt has no line in "
                    f"{cub / 'image_class_labels.txt'}"
                )
            if split != "all":
                flag = train.get(image_id)
                if flag not in ("0", "1"):
                    raise ValueError(
                        f"image {image_id} has no 0/1 flag in {cub / 'train_test_split.txt'}"
                    )
                if (flag == "1") != (split == "train"):
                    continue
            cid = int(labels[image_id]) if labels[image_id].isdigit() else -1
            if cid not in self._by_class:
                raise ValueError(
                    f"image {image_id} has class {labels[image_id]!r}, not one of classes.txt"
                )
            key = rel[:-4] if rel.lower().endswith(".jpg") else rel
            self._by_class[cid].append(key)
            self._order.append(key)
            self._class_of[key] = cid
        self._concepts: list[ConceptSpec] | None = None

    def _negatives(self, cid: int, classes: np.ndarray) -> tuple[str, ...]:
        pool = np.flatnonzero(classes != cid)
        n = len(self._by_class[cid]) if self.num_negatives is None else self.num_negatives
        n = min(n, len(pool))
        rng = np.random.default_rng([self.seed, cid])
        pick = np.sort(rng.choice(len(pool), size=n, replace=False))
        return tuple(negative_id(self._order[pool[j]]) for j in pick)

    def concepts(self) -> list[ConceptSpec]:
        """The 200 species in class-id order (computed once, no image read)."""
        if self._concepts is None:
            classes = np.array([self._class_of[k] for k in self._order], dtype=np.int64)
            self._concepts = [
                ConceptSpec(
                    name=species_name(self.class_dirs[cid]),
                    base_class="bird",
                    positive_ids=tuple(positive_id(k) for k in self._by_class[cid]),
                    negative_ids=self._negatives(cid, classes),
                )
                for cid in sorted(self.class_dirs)
            ]
        return self._concepts

    def sample(self, sample_id: str) -> Sample:
        """Read ``images/<key>.jpg`` (and ``segmentations/<key>.png`` for a positive)."""
        key, negative, cls = parse_id(sample_id)
        if cls is not None or key not in self._class_of:
            raise KeyError(sample_id)
        mask_path = None if negative else self.seg_dir / f"{key}.png"
        return image_sample(sample_id, self.image_dir / f"{key}.jpg", mask_path, LAYOUT)
