"""Recolor: blend each labelled pixel with its class color through lookup tables; draw an optional legend."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from vidparse.stages.types import LabelSet


@dataclass
class ComposeOptions:
    alpha: float = field(default=0.6, metadata={"range": (0.0, 1.0)})  # weight of the class color over the frame
    legend: bool = False


class Recolor:
    def __init__(self, label_set: LabelSet, options: ComposeOptions) -> None:
        self.label_set = label_set
        self.options = options
        # Lookup tables indexed by label: color*alpha, and the weight kept of the original pixel (x256).
        alpha = np.full(256, options.alpha, np.float32)
        alpha[0] = 0.0
        colors = np.zeros((256, 3), np.float32)
        colors[: len(label_set)] = label_set.colors
        self._tint = np.rint(colors * alpha[:, None] * 256).astype(np.uint32)
        self._keep = np.rint((1 - alpha) * 256).astype(np.uint32)

    def process(self, image: np.ndarray, labels: np.ndarray) -> np.ndarray:
        mask = labels != 0
        out = image.copy()
        if not mask.any():
            return out
        ys, xs = np.nonzero(mask)
        picked = labels[ys, xs]
        blended = (image[ys, xs].astype(np.uint32) * self._keep[picked][:, None] + self._tint[picked] + 128) >> 8
        out[ys, xs] = blended.astype(np.uint8)
        if self.options.legend:
            self._draw_legend(out, np.unique(picked))
        return out

    def _draw_legend(self, image: np.ndarray, present: np.ndarray) -> None:
        row = 18
        for i, label in enumerate(int(v) for v in present):
            y = 6 + i * row
            color = tuple(int(c) for c in self.label_set.colors[label])
            cv2.rectangle(image, (6, y), (20, y + 12), color, -1)
            cv2.putText(image, self.label_set.names[label], (26, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                        (255, 255, 255), 1, cv2.LINE_AA)
