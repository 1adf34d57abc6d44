"""Temporal smoothing: a per-pixel majority vote over the last few label maps, only where the image stood still."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np


@dataclass
class TemporalOptions:
    # label maps voted over (the current one included); 1 = off
    window: int = field(metadata={"range": (1, 15)})
    # a pixel stands still when no BGR channel changed by more than this since the previous frame
    still_threshold: int = field(metadata={"range": (0, 255)})


def still_mask(previous: np.ndarray, current: np.ndarray, threshold: int) -> np.ndarray:
    """Pixels whose BGR value barely changed between two frames."""
    return cv2.absdiff(previous, current).max(axis=2) <= threshold


def majority_vote(votes: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Most frequent label in each column of ``votes`` (K x N); a tie keeps ``current``."""
    best = current.copy()
    best_count = (votes == current).sum(axis=0)
    for label in np.unique(votes):
        count = (votes == label).sum(axis=0)
        better = count > best_count
        best[better] = label
        best_count[better] = count[better]
    return best


class TemporalVote:
    """Stage object: ``process(labels, image)`` returns the labels voted over the last ``window`` frames.

    The vote only touches pixels that stood still for the whole window, so moving people are never dragged
    behind; it removes the label flicker a parser shows on unchanged pixels. Frames must come in order.
    """

    def __init__(self, options: TemporalOptions) -> None:
        self.options = options
        self.open()

    def open(self) -> None:
        self._history: deque[np.ndarray] = deque(maxlen=self.options.window)
        self._previous: np.ndarray | None = None
        self._still_for: np.ndarray | None = None  # frames each pixel has stood still

    def process(self, labels: np.ndarray, image: np.ndarray) -> np.ndarray:
        window = self.options.window
        if window == 1:
            return labels
        if self._previous is None or self._previous.shape != image.shape:
            self._history.clear()
            self._still_for = np.zeros(labels.shape, np.uint8)
        else:
            still = still_mask(self._previous, image, self.options.still_threshold)
            self._still_for = np.where(still, np.minimum(self._still_for + 1, window), 0).astype(np.uint8)
        self._previous = image.copy()
        self._history.append(labels.copy())  # callers may hand in views of reused buffers
        if len(self._history) < window:
            return labels
        disagree = np.zeros(labels.shape, bool)
        for past in list(self._history)[:-1]:
            disagree |= past != labels
        where = np.nonzero(disagree & (self._still_for >= window - 1))
        smoothed = labels.copy()
        smoothed[where] = majority_vote(np.stack([past[where] for past in self._history]), labels[where])
        return smoothed

    def close(self) -> None:
        self._history.clear()
        self._previous = self._still_for = None
