"""Temporal smoothing: a per-pixel vote on body parts over the last few label maps, where the image stood still."""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np
from vidparse.stages.options import TemporalOptions


def still_mask(previous: np.ndarray, current: np.ndarray, threshold: int) -> np.ndarray:
    """Pixels whose BGR value barely changed between two frames."""
    return cv2.absdiff(previous, current).max(axis=2) <= threshold


def majority_vote(votes: np.ndarray, valid: np.ndarray, current: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Most frequent label among the ``valid`` entries of each column of ``votes`` (K x N), and its count;
    a tie keeps ``current``."""
    best = current.copy()
    best_count = ((votes == current) & valid).sum(axis=0)
    for label in np.unique(votes):
        count = ((votes == label) & valid).sum(axis=0)
        better = count > best_count
        best[better] = label
        best_count[better] = count[better]
    return best, best_count


class TemporalVote:
    """Stage object: ``process(labels, image)`` returns labels voted over up to ``window`` recent frames.

    A pixel is voted on over the frames it has stood still in (at most ``window``), so moving people are never
    dragged behind. There it keeps its previous output label unless another label has at least two votes more:
    this hysteresis stops the back-and-forth flicker a plain sliding majority passes through, and follows a
    lasting change after two to four frames. The vote only chooses among body
    parts where the parser found a person: which pixels are person stays the parser's (and the statistics')
    answer, and no label is left behind outside this frame's person regions. Frames must come in order.
    """

    def __init__(self, options: TemporalOptions) -> None:
        self.options = options
        self.open()

    def open(self) -> None:
        self._history: deque[np.ndarray] = deque(maxlen=self.options.window)
        self._image: np.ndarray | None = None
        self._output: np.ndarray | None = None
        self._still_for: np.ndarray | None = None  # past frames each pixel stood still for, up to window - 1

    def process(self, labels: np.ndarray, image: np.ndarray) -> np.ndarray:
        window = self.options.window
        if window == 1:
            return labels
        if self._image is None or self._image.shape != image.shape:
            self._history.clear()
            self._still_for = np.zeros(labels.shape, np.uint8)
        else:
            still = still_mask(self._image, image, self.options.still_threshold)
            self._still_for = np.where(still, np.minimum(self._still_for + 1, window - 1), 0).astype(np.uint8)
        self._history.append(labels.copy())  # callers may hand in views of reused buffers
        self._image = image.copy()
        output = labels.copy()
        if len(self._history) > 1:
            self._vote(output)
        self._output = output
        return output

    def _vote(self, output: np.ndarray) -> None:
        where = np.nonzero((self._still_for > 0) & (output != 0) & self._unsettled())
        votes = np.stack([past[where] for past in self._history])  # oldest first
        ages = np.arange(len(self._history) - 1, -1, -1)[:, None]
        valid = (ages <= self._still_for[where]) & (votes != 0)
        previous = self._output[where]
        majority, count = majority_vote(votes, valid, output[where])
        keep = (previous != 0) & (count < ((votes == previous) & valid).sum(axis=0) + 2)
        output[where] = np.where(keep, previous, majority)

    def _unsettled(self) -> np.ndarray:
        """Pixels where the window's labels or the previous output disagree; elsewhere the vote changes nothing."""
        current = self._history[-1]
        unsettled = self._output != current
        for past in list(self._history)[:-1]:
            unsettled |= past != current
        return unsettled

    def close(self) -> None:
        self._history.clear()
        self._image = self._output = self._still_for = None
