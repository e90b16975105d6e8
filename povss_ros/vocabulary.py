"""Vocabularies (the words SAN scores against) and the label-map value for "no class".

Class ids in every label map are indices into the vocabulary; personal concepts get ids from
`PERSONAL_ID_BASE` up; `UNLABELED` marks pixels with no class (padding, ignored ground truth).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

# The mono16 value of "no class" in label maps (`~/labels`, ground truth, evaluation).
UNLABELED = 65535
# Personal concepts' class ids start here, far above any vocabulary's word ids.
PERSONAL_ID_BASE = 32768
# The most words a vocabulary may hold: its word ids 0..MAX_VOCABULARY-1 must stay below
# PERSONAL_ID_BASE, or a word and a personal concept would share a pixel value in the uint16
# label map and ~/class_map (whose ids stop at 65535 = UNLABELED).
MAX_VOCABULARY = PERSONAL_ID_BASE
# How many duplicate words an error names (a huge list may hold thousands).
NAMED_DUPLICATES = 20

# COCO-Stuff's 171 class names, spelled as SAN's official training used them.
COCO_STUFF_171: tuple[str, ...] = (
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
    "banner",
    "blanket",
    "branch",
    "bridge",
    "building-other",
    "bush",
    "cabinet",
    "cage",
    "cardboard",
    "carpet",
    "ceiling-other",
    "ceiling-tile",
    "cloth",
    "clothes",
    "clouds",
    "counter",
    "cupboard",
    "curtain",
    "desk-stuff",
    "dirt",
    "door-stuff",
    "fence",
    "floor-marble",
    "floor-other",
    "floor-stone",
    "floor-tile",
    "floor-wood",
    "flower",
    "fog",
    "food-other",
    "fruit",
    "furniture-other",
    "grass",
    "gravel",
    "ground-other",
    "hill",
    "house",
    "leaves",
    "light",
    "mat",
    "metal",
    "mirror-stuff",
    "moss",
    "mountain",
    "mud",
    "napkin",
    "net",
    "paper",
    "pavement",
    "pillow",
    "plant-other",
    "plastic",
    "platform",
    "playingfield",
    "railing",
    "railroad",
    "river",
    "road",
    "rock",
    "roof",
    "rug",
    "salad",
    "sand",
    "sea",
    "shelf",
    "sky-other",
    "skyscraper",
    "snow",
    "solid-other",
    "stairs",
    "stone",
    "straw",
    "structural-other",
    "table",
    "tent",
    "textile-other",
    "towel",
    "tree",
    "vegetable",
    "wall-brick",
    "wall-concrete",
    "wall-other",
    "wall-panel",
    "wall-stone",
    "wall-tile",
    "wall-wood",
    "water-other",
    "waterdrops",
    "window-blind",
    "window-other",
    "wood",
)

VOCABULARIES: dict[str, tuple[str, ...]] = {"coco_stuff": COCO_STUFF_171}
# What the official SAN checkpoints were trained on, and so the default for weights that
# declare no words of their own.
DEFAULT_VOCABULARY = "coco_stuff"
# The vocabulary setting that means: the words the weights declare, else DEFAULT_VOCABULARY.
AUTO = "auto"


class VocabularyError(ValueError):
    """A vocabulary that cannot be used; `setting` names the parameter (and CLI flag) it comes
    from, so a caller can say which value to change."""

    setting = "vocabulary"


def _read_words(path: Path) -> list[str]:
    """The lines of a vocabulary file; one that cannot be read (permissions, a bad disk, not
    UTF-8) is a VocabularyError naming it."""
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise VocabularyError(f"cannot read the vocabulary file {path}: {exc}") from None


def parse_vocabulary(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """A built-in name, a comma-separated string, a text file (one word per line) or a list.

    Words are stripped; empty words and duplicates are errors because they would make class
    ids ambiguous for every consumer of the label map, and so is a vocabulary of more than
    `MAX_VOCABULARY` words (its ids would reach the personal concepts'). Every check is
    linear in the number of words: a list of any length is refused in well under a second.
    """
    if isinstance(spec, str):
        if spec in VOCABULARIES:
            words = list(VOCABULARIES[spec])
        elif spec.endswith(".txt") and Path(spec).is_file():
            words = _read_words(Path(spec))
        else:
            words = spec.split(",")
    else:
        words = list(spec)
    words = [w.strip() for w in words]
    words = [w for w in words if w]
    if not words:
        raise VocabularyError("the vocabulary is empty")
    if len(words) > MAX_VOCABULARY:
        raise VocabularyError(
            f"the vocabulary has {len(words)} words, more than the {MAX_VOCABULARY} a label map "
            f"can number: word ids must stay below {PERSONAL_ID_BASE}, where personal concepts' "
            "ids begin; use fewer words")
    counts = Counter(words)
    if len(counts) < len(words):
        dupes = sorted(w for w, n in counts.items() if n > 1)
        more = f" and {len(dupes) - NAMED_DUPLICATES} more" if len(dupes) > NAMED_DUPLICATES else ""
        raise VocabularyError(f"duplicate vocabulary words: {dupes[:NAMED_DUPLICATES]}{more}")
    return words


def stuff_words(spec: list[str] | tuple[str, ...]) -> frozenset[str]:
    """Words that name surfaces rather than objects (`objects.ObjectConfig.stuff_words`):
    ``["auto"]`` = COCO-Stuff's stuff classes (the 91 after its 80 things) and their stems
    ("wall-brick" -> "wall"), so a vocabulary of plain words (wall, floor, table) is covered."""
    if list(spec) != [AUTO]:
        return frozenset(w.strip() for w in spec if w.strip())
    stuff = COCO_STUFF_171[80:]
    return frozenset(stuff) | {w.split("-")[0] for w in stuff}
