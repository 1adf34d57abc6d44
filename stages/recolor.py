"""Recolor: blend each labelled pixel with its class color through lookup tables; draw an optional legend."""

from __future__ import annotations


import cv2
import numpy as np

from vidparse.stages.types import LabelSet
from vidparse.stages.options import ComposeOptions


class Recolor:
    def __init__(self, label_set: LabelSet, options: ComposeOptions) -> None:
        self.label_set = label_set
        self.options = options
        # A 3-channel lookup table from label to class color, for cv2.LUT.
        colors = np.zeros((256, 3), np.uint8)
        colors[: len(label_set)] = label_set.colors
        self._lut = colors[None]

    def process(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Blend labelled pixels with their class color, only inside the labels' bounding box (SIMD OpenCV calls;
        the frame outside it is copied as is)."""
        out = image.copy()
        x, y, width, height = cv2.boundingRect(labels)  # of the labelled pixels
        if not width:
            return out
        box = slice(y, y + height), slice(x, x + width)
        boxed = labels[box]
        tint = cv2.LUT(cv2.merge((boxed, boxed, boxed)), self._lut)
        alpha = self.options.alpha
        blended = cv2.addWeighted(image[box], 1 - alpha, tint, alpha, 0)
        cv2.copyTo(image[box], (boxed == 0).view(np.uint8), blended)  # background back, in place
        out[box] = blended
        if self.options.legend:
            self._draw_legend(out, np.flatnonzero(np.bincount(boxed.ravel(), minlength=256)[1:]) + 1)
        return out

    def _draw_legend(self, image: np.ndarray, present: np.ndarray) -> None:
        row = 18
        for i, label in enumerate(int(v) for v in present):
            y = 6 + i * row
            color = tuple(int(c) for c in self.label_set.colors[label])
            cv2.rectangle(image, (6, y), (20, y + 12), color, -1)
            cv2.putText(image, self.label_set.names[label], (26, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
