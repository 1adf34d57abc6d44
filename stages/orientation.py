"""Turning decoded pixels upright: the display matrix of phone videos, the EXIF orientation of photos.

The display matrix is read the way FFmpeg's own players read it (fftools ``autorotate``): the rotation angle of
the matrix decides between a quarter, half or three-quarter turn, and the signs of its entries add the flips.
"""

from __future__ import annotations

import logging
import math
from enum import Enum

import numpy as np

log = logging.getLogger(__name__)


class Turn(Enum):
    """What turns a decoded image upright (named after FFmpeg's transpose/hflip/vflip filters)."""

    NONE = "none"
    CLOCK = "clock"  # a quarter turn clockwise
    CCLOCK = "cclock"  # a quarter turn counterclockwise
    TRANSPOSE = "cclock_flip"  # rows become columns: counterclockwise, then flipped upside down
    ANTITRANSPOSE = "clock_flip"  # clockwise, then flipped upside down
    HALF = "half"  # half a turn (hflip + vflip)
    HFLIP = "hflip"
    VFLIP = "vflip"

    @property
    def swaps_axes(self) -> bool:
        return self in (Turn.CLOCK, Turn.CCLOCK, Turn.TRANSPOSE, Turn.ANTITRANSPOSE)

    def apply(self, image: np.ndarray) -> np.ndarray:
        turned = {
            Turn.NONE: lambda a: a,
            Turn.CLOCK: lambda a: np.rot90(a, -1),
            Turn.CCLOCK: lambda a: np.rot90(a, 1),
            Turn.TRANSPOSE: lambda a: a.swapaxes(0, 1),
            Turn.ANTITRANSPOSE: lambda a: np.rot90(a, -1)[::-1],
            Turn.HALF: lambda a: a[::-1, ::-1],
            Turn.HFLIP: lambda a: a[:, ::-1],
            Turn.VFLIP: lambda a: a[::-1],
        }[self](image)
        return turned if self is Turn.NONE else np.ascontiguousarray(turned)


def turn_for_display_matrix(matrix: np.ndarray | None) -> Turn:
    """The turn that shows a frame as its 3x3 display matrix (9 int32, 16.16 fixed point) says it should be shown."""
    if matrix is None:
        return Turn.NONE
    a, b, c, d = (float(matrix[i]) / 65536 for i in (0, 1, 3, 4))
    scale_a, scale_b = math.hypot(a, c), math.hypot(b, d)
    if scale_a == 0 or scale_b == 0:
        return Turn.NONE
    theta = round(math.degrees(math.atan2(b / scale_b, a / scale_a)))  # minus av_display_rotation_get
    theta -= 360 * math.floor(theta / 360 + 0.9 / 360)
    if abs(theta - 90) < 1:
        return Turn.TRANSPOSE if c > 0 else Turn.CLOCK
    if abs(theta - 180) < 1:
        if a < 0 and d < 0:
            return Turn.HALF
        return Turn.HFLIP if a < 0 else Turn.VFLIP if d < 0 else Turn.NONE
    if abs(theta - 270) < 1:
        return Turn.ANTITRANSPOSE if c < 0 else Turn.CCLOCK
    if abs(theta) >= 1:
        log.warning("display rotation of %.0f degrees is not a quarter turn; frames are left as decoded", theta)
        return Turn.NONE
    return Turn.VFLIP if d < 0 else Turn.NONE
