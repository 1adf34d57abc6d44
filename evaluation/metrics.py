"""Metrics on label maps: confusion over a scheme's classes (coarse, garments), IoU and pixel accuracy, and the
flicker rate of a label sequence."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidparse.stages.labels import COARSE_CLASSES, IGNORE, SCHEMES
from vidparse.stages.temporal import still_mask
from vidparse.stages.types import LabelSet

UNSCORED = 255  # class index of pixels left out of the scores
OTHER = max(map(len, SCHEMES.values()))  # class index of a predicted class the ground truth cannot express
STILL_THRESHOLD = 8  # flicker is counted where no BGR channel changed by more than this between frames


def producible(label_set: LabelSet, scheme: str = "coarse") -> set[str]:
    """The classes of ``scheme`` a label set can express."""
    return set(label_set.groups[scheme].values()) - {IGNORE}


def coarse_lut(label_set: LabelSet, scored: set[str], rest: int = UNSCORED, scheme: str = "coarse") -> np.ndarray:
    """A 256-entry table from class index to the index of its class in ``scheme``; classes outside ``scored`` and
    unknown values -> ``rest``."""
    lut = np.full(256, rest, np.uint8)
    for index, name in enumerate(label_set.names):
        group = label_set.groups[scheme][name]
        if group in scored:
            lut[index] = SCHEMES[scheme].index(group)
    return lut


def confusion(truth: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Pixel counts, rows: truth, columns: prediction, both class indices of a scheme (OTHER + 1 square).

    Truth pixels marked UNSCORED are left out. A prediction of OTHER over background is a person where there is
    none and counts as an error; over a person it is a matter of definition (BodyPix's arms over CCP's sleeves)
    and is left out.
    """
    size = OTHER + 1
    scored = (truth != UNSCORED) & ((predicted != OTHER) | (truth == 0))
    pairs = truth[scored].astype(np.int64) * size + predicted[scored]
    return np.bincount(pairs, minlength=size * size).reshape(size, size)


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
    frames: int = 0
    considered: int = 0
    flipped: int = 0
    coarse_flipped: int = 0


class FlickerMeter:
    """Counts, over consecutive frames, the pixels that stood still (no channel changed by more than
    STILL_THRESHOLD) and that either frame labels as a person, and how many of them changed label."""

    def __init__(self, label_set: LabelSet) -> None:
        self.coarse = coarse_lut(label_set, set(COARSE_CLASSES))
        self.count = FlickerCount()
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def update(self, image: np.ndarray, labels: np.ndarray) -> None:
        if self._previous is not None:
            previous_image, previous_labels = self._previous
            considered = still_mask(previous_image, image, STILL_THRESHOLD) & ((previous_labels != 0) | (labels != 0))
            self.count.considered += int(np.count_nonzero(considered))
            self.count.flipped += int(np.count_nonzero(considered & (previous_labels != labels)))
            coarse_change = self.coarse[previous_labels] != self.coarse[labels]
            self.count.coarse_flipped += int(np.count_nonzero(considered & coarse_change))
        self._previous = (image, labels)
        self.count.frames += 1
