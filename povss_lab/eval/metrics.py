"""Segmentation metrics of the personalized-OVSS protocol (numpy only: no torch, no ROS).

Two numbers are reported, as in the paper (Park et al., ICCV 2025, Sec. 4.1):

* **mIoU** over all classes, the personal one included, from a confusion matrix accumulated
  over the whole test set (:class:`ConfusionMatrix`). A class absent from both ground truth
  and prediction over the whole set has an undefined IoU (NaN) and is left out of the mean,
  the usual semantic-segmentation convention (mmseg / detectron2 also skip it).
* **IoU^per**: personal pixels positive, everything else negative, TP/FP/FN summed over the
  whole test set (NOT a mean of per-image IoUs), plus its precision and recall
  (:class:`PersonalAccumulator`). Negative images (no personal pixel in the ground truth) add
  only false positives: that is how the protocol punishes over-confident personalization.

For FSS^per / CUB^per there is no open-vocabulary ground truth; the paper uses the frozen
model's own prediction with the personal mask pasted on top (:func:`paste_personal`).

Edge-case conventions (see :class:`PersonalScores`): a ratio whose denominator is empty is
``0.0`` when the accumulator has seen some error (FP or FN > 0): there is nothing correct to
credit; it is ``NaN`` when nothing at all was seen (TP = FP = FN = 0), because "perfect" and
"useless" cannot be told apart there, and NaN keeps that from silently inflating an average.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from povss_ros.vocabulary import UNLABELED

DEFAULT_IGNORE_INDEX = UNLABELED  # the `mono16` "unlabeled" value of ~/labels

__all__ = [
    "DEFAULT_IGNORE_INDEX",
    "ConfusionMatrix",
    "EvalResult",
    "PersonalAccumulator",
    "PersonalScores",
    "paste_personal",
]


def _check_same_shape(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} and {name_b} must have the same shape, got {a.shape} and {b.shape}"
        )


def _as_label_map(name: str, x: np.ndarray) -> np.ndarray:
    """Integer [H, W] label map; floats and bools are refused so a probability map or a
    binary mask is not mistaken for class ids."""
    x = np.asarray(x)
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{name} must be an integer label map, got dtype {x.dtype}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [H, W], got shape {x.shape}")
    return x


def _as_mask(name: str, x: np.ndarray) -> np.ndarray:
    """Boolean [H, W] mask; integer 0/1 arrays are accepted, anything else is refused so a
    label map cannot be silently binarized to "non-zero"."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [H, W], got shape {x.shape}")
    if x.dtype == np.bool_:
        return x
    if np.issubdtype(x.dtype, np.integer) and (x.size == 0 or (x.min() >= 0 and x.max() <= 1)):
        return x.astype(bool)
    raise ValueError(f"{name} must be a boolean mask (or integer 0/1), got dtype {x.dtype}")


class ConfusionMatrix:
    """Pixel confusion matrix accumulated over a test set (rows = ground truth, cols = prediction).

    Accumulating counts and computing IoU once at the end (instead of averaging per-image IoUs)
    is what the paper and the standard mIoU do; it weights every pixel equally.

    Pixels whose ground truth equals ``ignore_index`` are skipped whatever the prediction.
    Every other ground-truth and predicted label must lie in ``[0, num_classes)``: an
    "unlabeled" prediction has to be mapped to a class by the caller (an out-of-range value is
    almost always a vocabulary/id mismatch, so it raises instead of being dropped).
    """

    def __init__(self, num_classes: int, ignore_index: int = DEFAULT_IGNORE_INDEX) -> None:
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if 0 <= int(ignore_index) < int(num_classes):
            raise ValueError(
                f"ignore_index {ignore_index} collides with a class id (num_classes={num_classes})"
            )
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)

    def update(self, pred: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: ``pred`` and ``gt`` are integer [H, W] label maps of equal shape."""
        pred = _as_label_map("pred", pred)
        gt = _as_label_map("gt", gt)
        _check_same_shape("pred", pred, "gt", gt)
        valid = gt != self.ignore_index
        g = gt[valid].astype(np.int64)
        p = pred[valid].astype(np.int64)
        n = self.num_classes
        if g.size:
            if g.min() < 0 or g.max() >= n:
                bad = np.unique(g[(g < 0) | (g >= n)])[:5].tolist()
                raise ValueError(
                    f"gt labels out of range [0, {n}) (ignore_index={self.ignore_index}): {bad}"
                )
            if p.min() < 0 or p.max() >= n:
                bad = np.unique(p[(p < 0) | (p >= n)])[:5].tolist()
                raise ValueError(f"pred labels out of range [0, {n}): {bad}")
        self.matrix += np.bincount(g * n + p, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add another matrix in place (e.g. from a worker process) and return ``self``."""
        if not isinstance(other, ConfusionMatrix):
            raise TypeError(f"can only merge a ConfusionMatrix, got {type(other).__name__}")
        if other.num_classes != self.num_classes or other.ignore_index != self.ignore_index:
            raise ValueError(
                "cannot merge confusion matrices with different num_classes/ignore_index: "
                f"({self.num_classes}, {self.ignore_index}) vs "
                f"({other.num_classes}, {other.ignore_index})"
            )
        self.matrix += other.matrix
        return self

    def reset(self) -> None:
        """Zero the counts, keeping the configuration."""
        self.matrix[...] = 0

    @property
    def total(self) -> int:
        """Number of scored (non-ignored) pixels."""
        return int(self.matrix.sum())

    def iou(self) -> np.ndarray:
        """Per-class IoU in [0, 1]; NaN for a class absent from both ground truth and prediction
        (its IoU is undefined, so it must not count as 0 or 1 in the mean)."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(axis=0) + self.matrix.sum(axis=1) - np.diag(self.matrix)
        out = np.full(self.num_classes, np.nan, dtype=np.float64)
        present = union > 0
        out[present] = tp[present] / union[present]
        return out

    def miou(self) -> float:
        """Mean IoU in [0, 1] over the classes present in gt or pred; NaN if nothing was scored."""
        iou = self.iou()
        if np.all(np.isnan(iou)):
            return math.nan
        return float(np.nanmean(iou))

    def __repr__(self) -> str:
        return (
            f"ConfusionMatrix(num_classes={self.num_classes}, "
            f"ignore_index={self.ignore_index}, pixels={self.total})"
        )


@dataclass(frozen=True)
class PersonalScores:
    """Binary personal-concept scores over a test set, fractions in [0, 1].

    Conventions for empty denominators (chosen so that no error is ever rewarded):

    * ``iou = tp / (tp + fp + fn)``: NaN only when tp = fp = fn = 0 (no personal pixel in the
      ground truth and none predicted anywhere: undefined, not "perfect").
    * ``precision = tp / (tp + fp)``: when nothing was predicted (tp + fp = 0), 0.0 if some
      personal pixel was missed (fn > 0), NaN if there was nothing at all.
    * ``recall = tp / (tp + fn)``: when the ground truth holds no personal pixel
      (tp + fn = 0), 0.0 if something was wrongly predicted (fp > 0), NaN if nothing at all.
    """

    iou: float
    precision: float
    recall: float
    tp: int
    fp: int
    fn: int
    images: int

    def to_dict(self) -> dict:
        """Plain-Python dict (NaN kept; :func:`povss_lab.eval.report.save_json` writes null)."""
        return asdict(self)


def _ratio(num: int, den: int, any_error: bool) -> float:
    if den > 0:
        return num / den
    return 0.0 if any_error else math.nan


class PersonalAccumulator:
    """Accumulates TP/FP/FN of the personal concept over a whole test set (IoU^per).

    Summing counts over images (instead of averaging per-image IoU) is the paper's definition,
    and it is what lets negative images (empty ground truth) contribute their false positives.
    """

    def __init__(self) -> None:
        self.tp = 0
        self.fp = 0
        self.fn = 0
        self.images = 0

    def update(
        self, pred_mask: np.ndarray, gt_mask: np.ndarray, valid: np.ndarray | None = None
    ) -> None:
        """Add one image. ``valid`` (optional bool [H, W]) excludes pixels from scoring, e.g. the
        dataset's unlabeled pixels, consistently with :class:`ConfusionMatrix`'s ignore_index."""
        pred_mask = _as_mask("pred_mask", pred_mask)
        gt_mask = _as_mask("gt_mask", gt_mask)
        _check_same_shape("pred_mask", pred_mask, "gt_mask", gt_mask)
        if valid is not None:
            valid = _as_mask("valid", valid)
            _check_same_shape("valid", valid, "gt_mask", gt_mask)
            pred_mask = pred_mask & valid
            gt_mask = gt_mask & valid
        self.tp += int(np.count_nonzero(pred_mask & gt_mask))
        self.fp += int(np.count_nonzero(pred_mask & ~gt_mask))
        self.fn += int(np.count_nonzero(~pred_mask & gt_mask))
        self.images += 1

    def update_labels(
        self,
        pred: np.ndarray,
        gt: np.ndarray,
        personal_id: int,
        ignore_index: int = DEFAULT_IGNORE_INDEX,
    ) -> None:
        """Add one image given label maps: the personal class vs everything else, with
        ``gt == ignore_index`` pixels excluded (the same pixels the confusion matrix skips)."""
        pred = _as_label_map("pred", pred)
        gt = _as_label_map("gt", gt)
        _check_same_shape("pred", pred, "gt", gt)
        self.update(pred == personal_id, gt == personal_id, valid=gt != ignore_index)

    def merge(self, other: PersonalAccumulator) -> PersonalAccumulator:
        """Add another accumulator's counts in place and return ``self``."""
        if not isinstance(other, PersonalAccumulator):
            raise TypeError(f"can only merge a PersonalAccumulator, got {type(other).__name__}")
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn
        self.images += other.images
        return self

    def result(self) -> PersonalScores:
        """IoU^per, precision and recall with the conventions of :class:`PersonalScores`."""
        tp, fp, fn = self.tp, self.fp, self.fn
        any_error = (fp + fn) > 0
        return PersonalScores(
            iou=_ratio(tp, tp + fp + fn, any_error),
            precision=_ratio(tp, tp + fp, any_error),
            recall=_ratio(tp, tp + fn, any_error),
            tp=tp,
            fp=fp,
            fn=fn,
            images=self.images,
        )


@dataclass(frozen=True)
class EvalResult:
    """One evaluation run, in PERCENT like the paper's tables (mIoU, IoU^per, precision,
    recall); NaN stays NaN (see :class:`PersonalScores`)."""

    miou: float
    iou_per: float
    precision: float
    recall: float
    images: int = 0

    @classmethod
    def from_accumulators(cls, cm: ConfusionMatrix, personal: PersonalAccumulator) -> EvalResult:
        """Build the result from the two accumulators of one test set."""
        s = personal.result()
        return cls(
            miou=100.0 * cm.miou(),
            iou_per=100.0 * s.iou,
            precision=100.0 * s.precision,
            recall=100.0 * s.recall,
            images=s.images,
        )

    def to_dict(self) -> dict:
        """Plain-Python dict with keys miou, iou_per, precision, recall, images."""
        return {
            "miou": float(self.miou),
            "iou_per": float(self.iou_per),
            "precision": float(self.precision),
            "recall": float(self.recall),
            "images": int(self.images),
        }


def paste_personal(
    base_pred: np.ndarray, personal_mask: np.ndarray, personal_id: int
) -> np.ndarray:
    """Pseudo ground truth of FSS^per / CUB^per: the frozen model's own label map with the
    personal mask pasted on top as ``personal_id`` (paper, Sec. 4.1 and supp. Fig. 8).

    Returns a new array (input untouched), upcast only if ``personal_id`` does not fit the
    dtype of ``base_pred``. Raises ValueError if ``base_pred`` already contains
    ``personal_id``: the frozen model's vocabulary has no personal class, so such a value
    means an id collision, and the personal class must come from the mask alone.
    """
    base_pred = _as_label_map("base_pred", base_pred)
    personal_mask = _as_mask("personal_mask", personal_mask)
    _check_same_shape("base_pred", base_pred, "personal_mask", personal_mask)
    personal_id = int(personal_id)
    if personal_id < 0:
        raise ValueError(f"personal_id must be >= 0, got {personal_id}")
    if np.any(base_pred == personal_id):
        raise ValueError(
            f"base_pred already contains personal_id {personal_id}: id collision with the "
            "frozen model's vocabulary"
        )
    info = np.iinfo(base_pred.dtype)
    dtype = base_pred.dtype if info.min <= personal_id <= info.max else np.int64
    gt = base_pred.astype(dtype, copy=True)
    gt[personal_mask] = personal_id
    return gt
