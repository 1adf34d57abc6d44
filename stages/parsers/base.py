"""The interface every human-parsing backend implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from vidparse.stages.roi import Crop
from vidparse.stages.types import LabelSet


class Parser(ABC):
    """Turns BGR images (person crops, or whole frames) into label maps.

    Stages call ``open`` once (load weights, build sessions), ``parse`` per frame, ``close`` at the end.
    A parser never sees processes or queues; it uses the threads the worker process was given.
    """

    label_set: LabelSet

    def open(self) -> None:  # noqa: B027 - optional hook
        """Load weights; called once in the process that will parse."""

    @abstractmethod
    def parse(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Return one uint8 label map per image, each of that image's height and width."""

    def parse_crops(self, crops: Sequence[Crop], frame_width: int = 0) -> list[np.ndarray]:
        """``parse`` of person crops cut from a frame ``frame_width`` wide (0: not known); a parser that can use how
        much each crop was enlarged, or how wide its frame is, overrides this."""
        return self.parse([crop.image for crop in crops])

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions and memory."""
