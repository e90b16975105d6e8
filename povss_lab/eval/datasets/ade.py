"""ADE^per: 30 rare or confusable ADE20K-847 classes, each one a personal concept.

Supported layout: ADE20K-full (``ADE20K_2021_17_01``) as prepared for open-vocabulary
evaluation by MaskFormer's ``datasets/prepare_ade20k_full_sem_seg.py`` (the same script ships
with ODISE, FC-CLIP and ov-seg), the layout SAN's ``ade20k_full_sem_seg_val`` (ADE-847) reads::

    ROOT/ADE20K_2021_17_01/images_detectron2/<split>/<stem>.jpg
    ROOT/ADE20K_2021_17_01/annotations_detectron2/<split>/<stem>.tif
        single-channel uint16, class ids 0..846 (the 847 "trainId"s), 65535 = unlabeled
    ROOT/ADE20K_2021_17_01/ade20k_847_classes.txt
        the 847 class names, one per line, in trainId order

``ROOT`` may also be the ``ADE20K_2021_17_01`` folder itself; ``images/<split>/`` is accepted
in place of ``images_detectron2/<split>/``; ``<split>`` is "validation" by default. The raw
ADE20K-full release (``index_ade20k.pkl`` and per-image ``*_seg.png``) is not read: convert it
with that preparation script first.

The .tif files carry no names, and the 847-name list lives in those projects' code, so it is
not bundled here: the names come from ``class_names=`` (a list, or a file) or from a file
``ade20k_847_classes.txt`` (one name per line) or ``ADE20K_847.json`` (a list of names, or of
``{"name": ..., "trainId": ...}`` records) in the dataset folder or in ``ROOT``. To write the
text file with the preparation script's own list (run inside MaskFormer's ``datasets/``)::

    python -c "from prepare_ade20k_full_sem_seg import ADE20K_SEM_SEG_FULL_CATEGORIES as C; \
        print('\\n'.join(c['name'] for c in C))" > ROOT/ADE20K_2021_17_01/ade20k_847_classes.txt

How the benchmark is built (paper): "we select 30 classes for FSS-1000 and ADE-20K-847"
(Sec. 4.1), listed in Table 5; "we annotate the class we want to personalize as the '<my
concept>' category index instead of the original category index (e.g. chest and hot tub
classes)" (supp. Fig. 8); test sets hold "equal number of images including the personal
concept and those without" (Sec. 4.1). ADE^per has no instance-level concept and no "same
base class" negative: the personal concept IS the class. So, for each of the 30 classes:

* positives: every image of the split(s) with at least ``min_pixels`` pixels of the class
  (id ``"<split>/<stem>@<class id>"``); the personal mask is all pixels of that class;
* negatives: every image with no pixel of it (id ``"neg:<split>/<stem>"``); the protocol
  draws as many as it needs, at random by seed. (Images with 0 < pixels < ``min_pixels`` are
  neither.) The paper does not say which images it drew; this is the reading closest to it;
* ``name`` is the Table-5 name; ``base_class`` is the class's own vocabulary entry (e.g.
  "altarpiece, reredos"): the paper initializes the prompt with "the class name of the
  visual concept" (Sec. 3.1) and gives ADE classes no parent word.

Table-5 names are matched to the 847 names: a unique entry equal to the name, else a unique
entry whose first synonym (text before the first comma) is the name; anything else is an error
that ``concept_class_ids={name: id}`` resolves. With SAN's list this picks "pier" (not "pier,
wharf, wharfage, dock"), "chest" (not "chest of drawers, chest, ..."), "postbox, mailbox,
letter box" (not "post box").

Ground truth: "Since ADE-20K-847 originally includes the ground truth labels for
open-vocabulary classes, we use those labels for evaluating mIoU in ADE^per" (Sec. 4.1). So
``vocabulary`` is the 847 ADE names (not COCO-Stuff's 171) and ``Sample.semantic`` is the real
847-class map, unchanged (uint16, 65535 = unlabeled); the runner pastes the personal class
over ``personal_mask`` (``eval.metrics.paste_personal``), which is the paper's Fig. 8 map.

Finding the positives needs the classes present in every annotation (the .tif files, not the
photographs): ``concepts()`` scans them once (a few seconds for the 2000 validation maps) and
caches the per-image class pixel counts as JSON in ``cache_dir`` (default
``$XDG_CACHE_HOME/povss_ros/ade847``; ``None`` turns the cache off), keyed by the files' names,
sizes and modification times.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from povss_lab.eval.benchmark import UNLABELED, ConceptSpec, Sample
from povss_lab.eval.datasets.common import (
    check_same_size,
    first_existing,
    natural_key,
    negative_id,
    parse_id,
    positive_id,
    read_label_map,
    read_rgb,
    require_dir,
)

__all__ = ["ADE_CONCEPTS", "ADEPer", "load_class_names", "resolve_concepts"]

NUM_CLASSES = 847
NAME_FILES = ("ade20k_847_classes.txt", "ADE20K_847.json")
CACHE_VERSION = 1

# Paper Table 5, in its order.
ADE_CONCEPTS: tuple[str, ...] = (
    "altarpiece",
    "ashtray",
    "banner",
    "beacon",
    "booklet",
    "candelabrum",
    "canister",
    "chest",
    "console table",
    "crane",
    "dirt track",
    "easel",
    "embankment",
    "footbridge",
    "hot tub",
    "hovel",
    "kettle",
    "kitchen island",
    "pane",
    "parking meter",
    "pier",
    "place mat",
    "postbox",
    "rod",
    "runway",
    "saucepan",
    "shower stall",
    "soap dispenser",
    "stretcher",
    "towel rack",
)

LAYOUT = (
    "Expected ADE20K-847 layout (MaskFormer/SAN prepare_ade20k_full_sem_seg.py): "
    "ROOT/ADE20K_2021_17_01/images_detectron2/<split>/<stem>.jpg, "
    "ROOT/ADE20K_2021_17_01/annotations_detectron2/<split>/<stem>.tif (uint16 ids 0..846, "
    "65535 unlabeled) and the 847 class names in ROOT/ADE20K_2021_17_01/"
    "ade20k_847_classes.txt (one per line, trainId order) or ADE20K_847.json, or passed as "
    "class_names=; ROOT may also be the ADE20K_2021_17_01 folder itself."
)


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "povss_ros" / "ade847"


def load_class_names(path: str | os.PathLike) -> list[str]:
    """847 ADE class names from a .txt (one per line) or .json file, in trainId order."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ADE-847 class-name file not found: {path}.\n{LAYOUT}")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"corrupt class-name file {path}: {exc}") from exc
        if isinstance(data, dict):
            data = [data[k] for k in sorted(data, key=int)]
        if data and all(isinstance(d, dict) for d in data):
            if all("trainId" in d for d in data):
                data = sorted(data, key=lambda d: int(d["trainId"]))
            data = [d.get("name") for d in data]
        names = data if isinstance(data, list) else None
    else:
        names = text.rstrip("\n").split("\n")
    if names is None or not all(isinstance(n, str) and n.strip() for n in names):
        raise ValueError(f"{path} must hold a list of non-empty class names")
    names = [n.strip() for n in names]
    if len(names) != NUM_CLASSES:
        raise ValueError(f"{path} lists {len(names)} class names; ADE-847 has {NUM_CLASSES}")
    return names


def resolve_concepts(
    names: Sequence[str], overrides: Mapping[str, int] | None = None
) -> dict[str, int]:
    """Class id of each Table-5 concept (see the module docstring for the matching rule)."""
    norm = [n.strip().lower() for n in names]
    first = [n.split(",")[0].strip() for n in norm]
    out: dict[str, int] = {}
    for concept in ADE_CONCEPTS:
        if overrides and concept in overrides:
            cid = int(overrides[concept])
            if not 0 <= cid < len(names):
                raise ValueError(f"concept_class_ids[{concept!r}] = {cid} is out of range")
            out[concept] = cid
            continue
        exact = [i for i, n in enumerate(norm) if n == concept]
        hits = exact if exact else [i for i, f in enumerate(first) if f == concept]
        if len(hits) != 1:
            what = "no" if not hits else "ambiguous"
            shown = "; ".join(f"{i}: {names[i]!r}" for i in hits[:5])
            raise ValueError(
                f"{what} ADE-847 class for ADE^per concept {concept!r}"
                f"{' (' + shown + ')' if hits else ''}; pass concept_class_ids={{name: id}}"
            )
        out[concept] = hits[0]
    ids = list(out.values())
    if len(set(ids)) != len(ids):
        raise ValueError(f"two ADE^per concepts share a class id: {out}")
    return out


class ADEPer:
    """ADE^per reader (lazy: the constructor lists files; ``concepts`` scans the label maps
    once, cached; ``sample`` reads one image and its label map)."""

    name = "ADE^per"

    def __init__(
        self,
        root: str | os.PathLike,
        splits: Sequence[str] = ("validation",),
        class_names: Sequence[str] | str | os.PathLike | None = None,
        concept_class_ids: Mapping[str, int] | None = None,
        min_pixels: int = 1,
        cache_dir: str | os.PathLike | None = "auto",
    ) -> None:
        """Locate the images, label maps and class names under ``root``.

        Raises FileNotFoundError naming the expected layout when a folder, a label map or the
        class names are missing; ValueError for a corrupt name list or unresolvable concept.
        """
        if min_pixels < 1:
            raise ValueError(f"min_pixels must be >= 1, got {min_pixels}")
        if isinstance(splits, str):
            splits = (splits,)
        self.splits = tuple(splits)
        self.min_pixels = int(min_pixels)
        self.root = Path(root)
        require_dir(self.root, "ADE20K root", LAYOUT)
        ade = first_existing(
            d
            for d in (self.root / "ADE20K_2021_17_01", self.root)
            if (d / "annotations_detectron2").is_dir()
        )
        if ade is None:
            raise FileNotFoundError(
                f"no annotations_detectron2/ folder in {self.root / 'ADE20K_2021_17_01'} or "
                f"{self.root}.\n{LAYOUT}"
            )
        self.ade_dir = ade

        if class_names is None:
            found = first_existing(d / f for d in (ade, self.root) for f in NAME_FILES)
            if found is None:
                raise FileNotFoundError(
                    f"ADE-847 class names not found: none of {', '.join(NAME_FILES)} in {ade} "
                    f"or {self.root}, and no class_names= given. See povss_lab/eval/datasets/"
                    f"ade.py for how to write {NAME_FILES[0]}.\n{LAYOUT}"
                )
            names = load_class_names(found)
        elif isinstance(class_names, (str, os.PathLike)):
            names = load_class_names(class_names)
        else:
            names = [str(n).strip() for n in class_names]
            if len(names) != NUM_CLASSES:
                raise ValueError(f"class_names has {len(names)} names; ADE-847 has {NUM_CLASSES}")
        self.vocabulary: list[str] = names
        self.class_ids = resolve_concepts(names, concept_class_ids)
        self._concept_id_set = set(self.class_ids.values())

        self._images: dict[str, Path] = {}
        self._labels: dict[str, Path] = {}
        for split in self.splits:
            img_dir = first_existing(
                d for d in (ade / "images_detectron2" / split, ade / "images" / split) if d.is_dir()
            )
            if img_dir is None:
                raise FileNotFoundError(
                    f"ADE20K image folder for split {split!r} not found: "
                    f"{ade / 'images_detectron2' / split}.\n{LAYOUT}"
                )
            ann_dir = require_dir(
                ade / "annotations_detectron2" / split, f"ADE20K label folder ({split})", LAYOUT
            )
            stems = sorted((p.stem for p in img_dir.glob("*.jpg")), key=natural_key)
            if not stems:
                raise FileNotFoundError(f"no .jpg images in {img_dir}.\n{LAYOUT}")
            labelled = {p.stem for p in ann_dir.glob("*.tif")}
            missing = [s for s in stems if s not in labelled]
            if missing:
                raise FileNotFoundError(
                    f"{len(missing)} image(s) of {img_dir} have no label map in {ann_dir} "
                    f"(first: {missing[0]}.tif).\n{LAYOUT}"
                )
            for s in stems:
                key = f"{split}/{s}"
                self._images[key] = img_dir / f"{s}.jpg"
                self._labels[key] = ann_dir / f"{s}.tif"
        self.cache_dir = (
            None
            if cache_dir is None
            else _default_cache_dir()
            if cache_dir == "auto"
            else Path(cache_dir)
        )
        self._counts: dict[str, dict[int, int]] | None = None
        self._concepts: list[ConceptSpec] | None = None

    # ------------------------------------------------------------------ presence index

    def _signature(self) -> str:
        h = hashlib.sha1()
        for key, path in self._labels.items():
            st = path.stat()
            h.update(f"{key}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    def _cache_path(self) -> Path | None:
        if self.cache_dir is None:
            return None
        tag = hashlib.sha1(f"{self.ade_dir.resolve()}|{','.join(self.splits)}".encode())
        return self.cache_dir / f"presence_{tag.hexdigest()[:16]}.json"

    def _read_labels(self, key: str) -> np.ndarray:
        path = self._labels[key]
        label = read_label_map(path, LAYOUT)
        bad = (label >= NUM_CLASSES) & (label != UNLABELED)
        if bad.any():
            values = np.unique(label[bad])[:5].tolist()
            raise ValueError(
                f"label map {path} has ids outside 0..{NUM_CLASSES - 1} and {UNLABELED}: "
                f"{values} (not an ADE-847 map?)"
            )
        return label

    def class_pixel_counts(self) -> dict[str, dict[int, int]]:
        """Pixels of each class present in each image (scanned once, cached on disk)."""
        if self._counts is not None:
            return self._counts
        signature = self._signature()
        cache = self._cache_path()
        if cache is not None and cache.is_file():
            try:
                data = json.loads(cache.read_text(encoding="utf-8"))
                if data.get("version") == CACHE_VERSION and data.get("signature") == signature:
                    self._counts = {
                        k: {int(c): int(n) for c, n in v} for k, v in data["counts"].items()
                    }
                    return self._counts
            except (OSError, ValueError, KeyError, TypeError):
                pass  # a stale or damaged cache is rebuilt
        counts: dict[str, dict[int, int]] = {}
        for key in self._labels:
            hist = np.bincount(self._read_labels(key).ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
            present = np.flatnonzero(hist)
            counts[key] = {int(c): int(hist[c]) for c in present}
        self._counts = counts
        if cache is not None:
            try:
                cache.parent.mkdir(parents=True, exist_ok=True)
                tmp = cache.with_suffix(".tmp")
                payload = {
                    "version": CACHE_VERSION,
                    "signature": signature,
                    "counts": {k: sorted(v.items()) for k, v in counts.items()},
                }
                tmp.write_text(json.dumps(payload), encoding="utf-8")
                tmp.replace(cache)
            except OSError:
                pass  # caching is an optimization; a read-only home must not break evaluation
        return counts

    # ------------------------------------------------------------------ benchmark interface

    def concepts(self) -> list[ConceptSpec]:
        """The 30 Table-5 classes in Table-5 order (a partial copy may give few positives)."""
        if self._concepts is None:
            counts = self.class_pixel_counts()
            out = []
            for concept in ADE_CONCEPTS:
                cid = self.class_ids[concept]
                pos = tuple(
                    positive_id(k, cid)
                    for k, c in counts.items()
                    if c.get(cid, 0) >= self.min_pixels
                )
                neg = tuple(negative_id(k) for k, c in counts.items() if cid not in c)
                out.append(ConceptSpec(concept, self.vocabulary[cid], pos, neg))
            self._concepts = out
        return self._concepts

    def sample(self, sample_id: str) -> Sample:
        """Read one image and its 847-class label map; the personal mask is the id's class."""
        key, negative, cls = parse_id(sample_id)
        if key not in self._images or (negative is False and cls not in self._concept_id_set):
            raise KeyError(sample_id)
        image_path, label_path = self._images[key], self._labels[key]
        image = read_rgb(image_path, LAYOUT)
        label = self._read_labels(key)
        check_same_size(image, label, image_path, label_path)
        if negative:
            mask = np.zeros(label.shape, dtype=bool)
        else:
            mask = label == cls
            if not mask.any():
                raise ValueError(
                    f"{sample_id!r} is not a positive: class {cls} ({self.vocabulary[cls]!r}) "
                    f"has no pixel in {label_path}"
                )
        return Sample(sample_id=sample_id, image=image, personal_mask=mask, semantic=label)
