"""FSS^per: 15 pairs of similar FSS-1000 classes, each side the other's negative.

Supported layout (the official FSS-1000 archive ``fewshot_data.zip``)::

    ROOT/fewshot_data/<class_name>/<n>.jpg     images (224x224 RGB), n = 1..10
    ROOT/fewshot_data/<class_name>/<n>.png     foreground mask of <n>.jpg (0/255)

``ROOT`` may also be the ``fewshot_data`` folder itself, or hold it renamed ``FSS-1000`` (the
name HSNet-style few-shot code uses). Only the 30 class folders of the pairs are needed.

How the benchmark is built (paper, supp. A): "In the FSS dataset, we create pairs of similar
categories and use images from these similar yet distinct categories as images without the
personal concept (e.g. wooden boat--banana boat)", with the 15 pairs of its Table 5. So there
are 30 concepts (each side of each pair, in Table-5 order); a concept's positives are all
images of its class, its negatives are all images of the other class of its pair (ids
``"neg:<class>/<n>"``, read without their masks). The paper lists the pairs "folding
chair--hair razor" and "hair drier--rocking chair" (probably swapped partners, but kept as
written); ``pairs=`` lets a caller try another list.

``Sample.semantic`` is None: FSS-1000 has no open-vocabulary ground truth, so the paper takes
the frozen model's prediction (COCO-Stuff vocabulary) with the personal mask pasted on top
(``eval.metrics.paste_personal``).

``ConceptSpec.name`` is the paper's class name ("banana boat"): the paper initializes the
prompt with "the class name of the visual concept" (Sec. 3.1). ``base_class`` must be a word of
the COCO-Stuff vocabulary (the ``ConceptSpec`` contract): the word the pair shares where
COCO-Stuff has it (boat, bird, chair, "sports ball" for every ball), and otherwise the closest
COCO-Stuff word, an approximation (logo / icon -> "banner", hair razor -> "hair drier");
``base_classes=`` overrides any of them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from povss_lab.eval.benchmark import ConceptSpec, Sample
from povss_lab.eval.datasets.common import (
    image_sample,
    natural_key,
    negative_id,
    parse_id,
    positive_id,
)
from povss_ros.vocabulary import COCO_STUFF_171

__all__ = ["FSS_BASE_CLASS", "FSS_FOLDER", "FSS_PAIRS", "FSSPer"]

LAYOUT = (
    "Expected FSS-1000 layout: ROOT/fewshot_data/<class_name>/<n>.jpg with its mask "
    "<n>.png beside it (ROOT may also be the fewshot_data folder itself, or hold it as "
    "FSS-1000/), with a folder for each of the 30 FSS^per classes."
)

# Paper Table 5, in its order (names as printed there).
FSS_PAIRS: tuple[tuple[str, str], ...] = (
    ("adidas logo1", "jordan logo"),
    ("apple icon", "yonex icon"),
    ("banana boat", "wooden boat"),
    ("bath ball", "pokermon ball"),
    ("bulbul bird", "chickadee bird"),
    ("cactus ball", "gym ball"),
    ("croquet ball", "french ball"),
    ("esport chair", "ganeva chair"),
    ("folding chair", "hair razor"),
    ("golf ball", "soccer ball"),
    ("hair drier", "rocking chair"),
    ("jay bird", "magpie bird"),
    ("kappa logo", "nike logo"),
    ("kobe logo", "puma logo"),
    ("ping-pong ball", "rugby ball"),
)

# FSS-1000 folder names: spaces become underscores; "ping-pong ball" is "pingpong_ball".
FSS_FOLDER: dict[str, str] = {
    name: ("pingpong_ball" if name == "ping-pong ball" else name.replace(" ", "_"))
    for pair in FSS_PAIRS
    for name in pair
}


def _default_base(name: str) -> str:
    if name == "hair drier" or name == "hair razor":
        return "hair drier"
    last = name.split()[-1]
    if last.startswith("logo") or last == "icon":
        return "banner"
    return {"ball": "sports ball", "boat": "boat", "bird": "bird", "chair": "chair"}[last]


# COCO-Stuff word of each concept (see the module docstring for the approximations).
FSS_BASE_CLASS: dict[str, str] = {name: _default_base(name) for name in FSS_FOLDER}


class FSSPer:
    """FSS^per reader (lazy: the constructor lists folders, ``sample`` reads one image)."""

    name = "FSS^per"

    def __init__(
        self,
        root: str | os.PathLike,
        pairs: Sequence[tuple[str, str]] = FSS_PAIRS,
        base_classes: Mapping[str, str] | None = None,
    ) -> None:
        """Locate the class folders of ``pairs`` under ``root`` and list their images.

        Raises FileNotFoundError naming the expected layout when ``root``, a class folder or
        its images are missing; ValueError for a base class outside the vocabulary.
        """
        self.vocabulary: list[str] = list(COCO_STUFF_171)
        self.pairs = tuple((str(a), str(b)) for a, b in pairs)
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"FSS-1000 root not found: {self.root}.\n{LAYOUT}")
        folders = {n: FSS_FOLDER.get(n, n.replace(" ", "_")) for p in self.pairs for n in p}
        self.data_dir = self._find_data_dir(list(folders.values()))
        self.folders = folders
        bases = dict(FSS_BASE_CLASS)
        bases.update(base_classes or {})
        self.base_classes: dict[str, str] = {}
        for n in folders:
            base = bases.get(n)
            if base not in self.vocabulary:
                raise ValueError(
                    f"base class {base!r} of FSS concept {n!r} is not a COCO-Stuff word; "
                    "pass base_classes={name: word} with a word of the vocabulary"
                )
            self.base_classes[n] = base
        self._images: dict[str, list[str]] = {}  # folder -> image keys
        self._known: set[str] = set()
        missing = []
        for folder in folders.values():
            d = self.data_dir / folder
            if not d.is_dir():
                missing.append(folder)
                continue
            stems = sorted((p.stem for p in d.glob("*.jpg")), key=natural_key)
            if not stems:
                raise FileNotFoundError(
                    f"no <n>.jpg images in FSS-1000 class folder {d}.\n{LAYOUT}"
                )
            keys = [f"{folder}/{s}" for s in stems]
            self._images[folder] = keys
            self._known.update(keys)
        if missing:
            raise FileNotFoundError(
                f"{len(missing)} FSS^per class folder(s) missing under {self.data_dir}: "
                f"{', '.join(sorted(missing)[:8])}{' ...' if len(missing) > 8 else ''}.\n{LAYOUT}"
            )

    def _find_data_dir(self, folders: Sequence[str]) -> Path:
        for cand in (self.root / "fewshot_data", self.root / "FSS-1000", self.root):
            if cand.is_dir() and any((cand / f).is_dir() for f in folders):
                return cand
        raise FileNotFoundError(
            f"no FSS^per class folder (e.g. {folders[0]}/) under {self.root}, "
            f"{self.root / 'fewshot_data'} or {self.root / 'FSS-1000'}.\n{LAYOUT}"
        )

    def concepts(self) -> list[ConceptSpec]:
        """Both sides of every pair, in pair order; negatives are the partner's images."""
        out = []
        for a, b in self.pairs:
            for me, other in ((a, b), (b, a)):
                out.append(
                    ConceptSpec(
                        name=me,
                        base_class=self.base_classes[me],
                        positive_ids=tuple(positive_id(k) for k in self._images[self.folders[me]]),
                        negative_ids=tuple(
                            negative_id(k) for k in self._images[self.folders[other]]
                        ),
                    )
                )
        return out

    def sample(self, sample_id: str) -> Sample:
        """Read ``<class>/<n>.jpg`` (and ``<n>.png`` for a positive); KeyError if unknown."""
        key, negative, cls = parse_id(sample_id)
        if cls is not None or key not in self._known:
            raise KeyError(sample_id)
        mask_path = None if negative else self.data_dir / f"{key}.png"
        return image_sample(sample_id, self.data_dir / f"{key}.jpg", mask_path, LAYOUT)
