"""The ``batch:`` section of the configuration."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class BatchOptions:
    # a video longer than this is split at keyframes into segments of about this length that run in parallel;
    # 0 = never split
    segment_seconds: float = field(default=60.0, metadata={"range": (0.0, 86_400.0)})
    # frames parsed before a segment's first frame and not written: they bring the tracker and the temporal vote
    # up to date (decoding starts at the keyframe before them); docs/batch.md says when masks match `vidparse run`
    warmup_frames: int = field(default=10, metadata={"range": (0, 10_000)})
    # tracking's state (track ids, each person's smoothed labels) cannot be rebuilt at a cut: with tracking on, a
    # video runs whole unless this is true (then its masks differ from `vidparse run`'s after each cut)
    split_tracked: bool = False
    retries: int = field(default=2, metadata={"range": (0, 100)})  # a failed segment runs again this many times
    cpus_per_task: int = field(default=1, metadata={"range": (1, 1024)})  # CPUs (workers) of one segment task
