"""Settings of the worker pool (shared by every stream) and of one stream."""

from __future__ import annotations

from dataclasses import dataclass

from vidparse.errors import ConfigError
from vidparse.pipeline.memory import MB

# Memory outside the frame slots, from 3840x2160 runs with one BodyPix worker (docs/faults.md: 607 to 829 MB
# besides the slots): each process's interpreter, libraries and models, plus frame copies in flight (decoder,
# temporal vote, compose, x264 lookahead), rounded up so a budget holds.
PROCESS_MB = 120
# 16 let 24 4K frames reach 1213 MB under a 1000 MB budget; with the writer thread and tracking, 24 let them reach
# 1378 MB under 1300 MB (4 slots: about 27 copies outside them), so 30 (test_faults.py)
FRAME_COPIES_OUTSIDE_SLOTS = 30


@dataclass
class PoolSettings:
    workers: int
    threads: int
    frame_timeout_s: float = 120.0  # a worker busy longer than this on one frame is treated as dead
    prefetch: int = 2  # frames handed to a worker at once; 1 for live inputs, so none waits behind another


@dataclass
class StreamSettings:
    queue_size: int
    drop_oldest: bool = False  # live policy: only the newest frame waits; older waiting frames are dropped
    source_timeout_s: float | None = None  # restart a source that sends nothing for this long while slots are free
    max_memory_mb: int = 0  # budget for the whole process tree (this stream being the only one); 0 = none
    # Frames seq // group_size == g go to one worker, in order, so the parser can carry state between them
    # (keyframe mode). Only an affinity: a parser must give the same results when a group is split.
    group_size: int = 1

    def slot_count(self, slot_bytes: int, workers: int) -> int:
        """Frames waiting for a worker, up to two handed to each worker, and room for out-of-order results;
        fewer when a memory budget cannot hold that many."""
        wanted = self.queue_size + 2 * workers
        if not self.max_memory_mb:
            return wanted
        slot_mb = slot_bytes / MB
        fixed_mb = PROCESS_MB * (workers + 2) + FRAME_COPIES_OUTSIDE_SLOTS * slot_mb
        fitting = int((self.max_memory_mb - fixed_mb) // slot_mb)
        least = 1 + 2 * workers
        if fitting < least:
            need = fixed_mb + least * slot_mb
            raise ConfigError(f"max_memory_mb {self.max_memory_mb} is too small for these frames with {workers} "
                              f"workers: about {need:.0f} MB is needed",
                              hint=f"raise --max-memory to {need:.0f} or more, or use fewer --workers")
        return min(wanted, fitting)

    def group_of(self, seq: int) -> int | None:
        """The affinity group of frame ``seq``; None without fixed groups (dropping frames breaks them)."""
        return None if self.group_size == 1 or self.drop_oldest else seq // self.group_size
