"""Metrics on label maps: coarse-class confusion, IoU and pixel accuracy, and the flicker rate of a label sequence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidparse.stages.labels import COARSE_CLASSES, IGNORE
from vidparse.stages.temporal import still_mask
from vidparse.stages.types import LabelSet

UNSCORED = 255  # coarse index of pixels left out of the scores


def producible(label_set: LabelSet) -> set[str]:
    """The coarse classes a label set can express."""
    return set(label_set.coarse.values()) - {IGNORE}


def coarse_lut(label_set: LabelSet, scored: set[str]) -> np.ndarray:
    """A 256-entry table from class index to coarse index; classes outside ``scored`` (and unknown values) -> UNSCORED."""
    lut = np.full(256, UNSCORED, np.uint8)
    for index, name in enumerate(label_set.names):
        coarse = label_set.coarse[name]
        if coarse in scored:
            lut[index] = COARSE_CLASSES.index(coarse)
    return lut


def confusion(truth: np.ndarray, predicted: np.ndarray, classes: int = len(COARSE_CLASSES)) -> np.ndarray:
    """``classes`` x ``classes`` pixel counts (rows: truth, columns: prediction) over pixels scored on both sides."""
    scored = (truth != UNSCORED) & (predicted != UNSCORED)
    pairs = truth[scored].astype(np.int64) * classes + predicted[scored]
    return np.bincount(pairs, minlength=classes * classes).reshape(classes, classes)


def iou_per_class(matrix: np.ndarray) -> np.ndarray:
    """IoU of every class; NaN where a class appears on neither side."""
    hits = np.diag(matrix).astype(np.float64)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - hits
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, hits / union, np.nan)


def pixel_accuracy(matrix: np.ndarray) -> float:
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else float("nan")


@dataclass
class FlickerCount:
    """Of the pixels that stood still between consecutive frames and that either frame labels as a person,
    how many changed label."""

    considered: int = 0
    flipped: int = 0

    @property
    def rate(self) -> float:
        return self.flipped / self.considered if self.considered else float("nan")


class FlickerMeter:
    def __init__(self, still_threshold: int) -> None:
        self.still_threshold = still_threshold
        self.count = FlickerCount()
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, image: np.ndarray, labels: np.ndarray) -> None:
        if self._previous is not None:
            previous_image, previous_labels = self._previous
            considered = still_mask(previous_image, image, self.still_threshold) & ((previous_labels != 0) | (labels != 0))
            self.count.considered += int(np.count_nonzero(considered))
            self.count.flipped += int(np.count_nonzero(considered & (previous_labels != labels)))
        self._previous = (image, labels)
