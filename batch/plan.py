"""Segment planning: where a video can be cut, read from its packets' keyframe flags and timestamps (no decoding)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from fractions import Fraction

from vidparse.config import Config
from vidparse.stages.source import FrameWindow, Packets, read_packets

__all__ = ["UNBOUNDED", "Packets", "Segment", "plan_segments", "read_packets", "splits_videos"]
UNBOUNDED = 2**62  # the end of a segment that runs to the end of a file of unknown length


def splits_videos(config: Config) -> bool:
    """Whether ``config`` cuts videos into segments. Keyframe mode parses frames in fixed groups from frame 0: a cut
    elsewhere would move them. Tracking's state cannot be rebuilt at a cut (docs/batch.md)."""
    return config.keyframes.parse_every == 1 and (config.batch.split_tracked or not config.tracking.enabled)


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, end)`` of a file (indices in presentation order), read through ``window``: decoding starts
    at a keyframe up to a warm-up before ``start``. ``offset`` is the time of frame ``start`` from frame 0."""

    number: int
    start: int
    end: int
    window: FrameWindow
    offset: Fraction
    final: bool = True  # the file's last segment: it may decode fewer frames than its packets (a truncated file)

    @property
    def frames(self) -> int:
        return self.end - self.start


def plan_segments(packets: Packets | None, segment_seconds: float, warmup_frames: int,
                  frame_count: int = 0) -> list[Segment]:
    """Cut at the first keyframe ``segment_seconds`` or more after the previous cut. Each segment but the first
    decodes from the last keyframe at or before ``warmup_frames`` ahead of its start. ``frame_count`` is used when
    ``packets`` is None (one segment for the whole file)."""
    if packets is None or not packets.pts:
        everything = FrameWindow(seek_pts=0, seek_index=0, first_index=0, end_index=frame_count or UNBOUNDED)
        return [Segment(0, 0, everything.end_index, everything, Fraction(0))]
    cuts = [0]
    for key in packets.keyframes:
        if segment_seconds > 0 and packets.seconds(key) - packets.seconds(cuts[-1]) >= segment_seconds:
            cuts.append(key)
    ends = cuts[1:] + [len(packets.pts)]
    segments = []
    for number, (start, end) in enumerate(zip(cuts, ends)):
        first = max(0, start - warmup_frames)
        before = bisect.bisect_right(packets.keyframes, first) - 1
        seek = packets.keyframes[before] if number and before >= 0 else 0
        window = FrameWindow(seek_pts=packets.pts[seek], seek_index=seek, first_index=first if number else 0,
                             end_index=end)
        segments.append(Segment(number, start, end, window, (packets.pts[start] - packets.pts[0]) * packets.time_base,
                                final=end == len(packets.pts)))
    return segments
