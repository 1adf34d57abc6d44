"""Presentation timestamps of decoded file frames: FFmpeg's best-effort guess, then one repair rule.

Output timestamps must strictly increase (the muxer refuses anything else), while a variable frame rate must
survive. Two steps get there:

1. ``BestEffortTimestamps`` picks, frame by frame, the packet's reordered pts or its dts: whichever of the two has
   gone backwards less often so far. This is FFmpeg's ``guess_correct_pts`` (libavcodec/decode.c, the value behind
   ``AVFrame.best_effort_timestamp``), which PyAV does not expose. It turns the decode-order timestamps of B-frame
   video in AVI (pts taken from dts) into presentation order.
2. ``TimestampRepair`` then applies one rule to what is left. A timestamp is kept when it lies after the previous
   output timestamp by at most ``max_gap``; otherwise the frame gets the previous timestamp plus one nominal frame
   duration. That covers a missing timestamp, a duplicate or reordered one (not after the previous) and a jump
   (more than ``max_gap`` forward or backward); after a jump, later frames keep the new offset, so the timing
   between them survives. Every frame that needed the rule is counted in ``repaired``.
"""

from __future__ import annotations

from fractions import Fraction


class BestEffortTimestamps:
    """FFmpeg's ``guess_correct_pts``: the frame's pts unless its pts went backwards more often than its dts."""

    def __init__(self) -> None:
        self._faulty_pts = self._faulty_dts = 0
        self._last_pts: int | None = None
        self._last_dts: int | None = None

    def guess(self, pts: int | None, dts: int | None) -> int | None:
        if dts is not None:
            self._faulty_dts += self._last_dts is not None and dts <= self._last_dts
            self._last_dts = dts
        elif pts is not None:
            self._last_dts = pts
        if pts is not None:
            self._faulty_pts += self._last_pts is not None and pts <= self._last_pts
            self._last_pts = pts
        elif dts is not None:
            self._last_pts = dts
        if pts is not None and (self._faulty_pts <= self._faulty_dts or dts is None):
            return pts
        return dts


class TimestampRepair:
    """Strictly increasing output timestamps, in ``time_base`` units (see the module's rule)."""

    def __init__(self, time_base: Fraction, frame_rate: Fraction, max_gap_s: float) -> None:
        self.step = max(1, round(1 / (frame_rate * time_base)))
        self.max_gap = max(self.step, round(max_gap_s / time_base))
        self.repaired = 0
        self._offset = 0  # output minus input timestamp, changed by jumps
        self._last: int | None = None

    def stamp(self, pts: int | None) -> int:
        if self._last is None:
            stamped = 0 if pts is None else pts
            self.repaired += pts is None
        elif pts is not None and 0 < pts + self._offset - self._last <= self.max_gap:
            stamped = pts + self._offset
        else:
            stamped = self._last + self.step
            self.repaired += 1
            if pts is not None and abs(pts + self._offset - self._last) > self.max_gap:  # a jump: re-base
                self._offset = stamped - pts
        self._last = stamped
        return stamped
