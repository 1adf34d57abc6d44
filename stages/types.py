"""Small value types shared by every stage and by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np


@dataclass
class Frame:
    """One decoded video frame. ``image`` is HxWx3 BGR uint8; ``captured_at`` is when it was decoded
    (``time.time()``), the start of its latency."""

    seq: int
    pts: int | None
    time_base: Fraction
    image: np.ndarray
    captured_at: float | None = None
    # (height, width) of the picture at the image's top left when the image is a canvas larger than it (a photo
    # of a set of photos of several sizes): parsed alone, as if the canvas were not there; (0, 0): no picture (a
    # photo that could no longer be read)
    picture: tuple[int, int] | None = None

    @property
    def seconds(self) -> float | None:
        return None if self.pts is None else float(self.pts * self.time_base)


@dataclass
class Detections:
    """Person boxes in frame pixels: ``boxes`` N x 4 float32 (x1, y1, x2, y2), ``scores`` N float32."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    scores: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.float32))

    def __len__(self) -> int:
        return len(self.boxes)


@dataclass(frozen=True)
class LabelSet:
    """The classes a parser produces. Index 0 is always background."""

    name: str
    names: tuple[str, ...]
    colors: np.ndarray  # len(names) x 3 uint8, BGR
    # scoring scheme ("coarse", "garments") -> class name -> that scheme's class (evaluation; stages/labels.py)
    groups: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def coarse(self) -> dict[str, str]:
        return self.groups["coarse"]

    def __len__(self) -> int:
        return len(self.names)


@dataclass
class PersonStats:
    box: tuple[float, float, float, float]
    score: float
    part_pixels: dict[str, int]
    track_id: int | None = None  # tracking: the person's id, stable from frame to frame
    bridged: bool = False  # tracking: not detected in this frame, drawn at its track's predicted box


@dataclass
class FrameResult:
    """What parsing one frame produced, besides the label map itself."""

    seq: int
    persons: list[PersonStats] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # stage name -> seconds
    status: str = "ok"  # "unparsed": parsing failed twice and the frame was written without labels; "missing": a
    # photo of a set that could no longer be read when its turn came (moved, deleted, changed): nothing is written
    carried_from: int | None = None  # keyframe mode: the parsed frame these labels were carried from by optical flow
    cut: bool = False  # a new shot starts here: the temporal vote forgot the frames before it, every track ended
