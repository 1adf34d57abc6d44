"""Settings of the worker pool (shared by every stream) and of one stream."""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

from vidparse.errors import ConfigError
from vidparse.pipeline.memory import MB
from vidparse.pipeline.slots import slots_with_room

log = logging.getLogger(__name__)

# Memory outside the frame slots, from 3840x2160 runs with one BodyPix worker (docs/faults.md: 607 to 829 MB
# besides the slots): each process's interpreter, libraries and models, plus frame copies in flight (decoder,
# temporal vote, compose, x264 lookahead), rounded up so a budget holds.
PROCESS_MB = 120
# 16 let 24 4K frames reach 1213 MB under a 1000 MB budget; with the writer thread and tracking, 24 let them reach
# 1378 MB under 1300 MB (4 slots: about 27 copies outside them), so 30 (test_faults.py)
FRAME_COPIES_OUTSIDE_SLOTS = 30
# Photos written as photos (no video encoder, no vote or tracking across them) hold far fewer: with BodyPix, one
# 6000x4000 photo peaked at 2.3 slot-sized copies outside its slot, two of them at 4.2 (one or two workers: one
# decoded while another is composed), a folder of four 3000x2000 ones at 3.0 (docs/faults.md), so 6
PHOTO_COPIES_OUTSIDE_SLOTS = 6
# numba and LLVM, loaded by the main process for the compiled temporal vote: 126 MB of PSS measured (docs/faults.md)
COMPILED_VOTE_MB = 130


@dataclass
class PoolSettings:
    workers: int
    threads: int
    frame_timeout_s: float = 120.0  # a worker busy longer than this on one frame is treated as dead
    prefetch: int = 2  # frames handed to a worker at once; 1 for live inputs, so none waits behind another
    max_memory_mb: int = 0  # budget for the whole process tree, shared by every stream (`MemoryBudget`); 0 = none
    # Workers are many and throughput-bound; each stream's hub and writer threads are one of a kind and every frame
    # waits for them: with the workers this much nicer, those threads go first when the CPUs are full.
    worker_niceness: int = 0


@dataclass
class StreamSettings:
    queue_size: int
    drop_oldest: bool = False  # live policy: only the newest frame waits; older waiting frames are dropped
    # the input is live only if it opens as live (a URL that may name a stream or a file): otherwise nothing drops
    drop_only_if_live: bool = False
    source_timeout_s: float | None = None  # restart a source that sends nothing for this long while slots are free
    max_source_restarts: int = 3  # a source silent once more after this many restarts fails the stream
    # Frames seq // group_size == g go to one worker, in order, so the parser can carry state between them
    # (keyframe mode). Only an affinity: a parser must give the same results when a group is split.
    group_size: int = 1
    stills: bool = False  # photos, each its own picture: with groups, each frame is one alone (parsed, never carried)

    def group_of(self, seq: int) -> int | None:
        """The affinity group of frame ``seq``; None without fixed groups (dropping frames breaks them, but not a
        photo's group of one)."""
        if self.group_size == 1:
            return None
        if self.stills:
            return seq
        return None if self.drop_oldest else seq // self.group_size


class MemoryBudget:
    """The process tree's memory budget, shared by the streams of one engine. The main process and the workers
    take their share first; each stream, as it opens, reserves its source process and its frames (the slots and
    the copies outside them) from what the streams before it left, and gives them back when it ends. A stream
    gets the slots it wants (frames waiting for a worker, up to two handed to each worker, room for out-of-order
    results), fewer when the rest of the budget cannot hold that many, and fails alone when not even the least
    fits."""

    def __init__(self, total_mb: int, workers: int) -> None:
        self.total_mb = total_mb
        self.workers = workers
        self._reserved_mb: dict[int, float] = {}  # stream -> its source process and frames
        self._lock = threading.Lock()  # streams open in the hub thread and are released by their closing thread

    def slot_count(self, stream: int, queue_size: int, slot_bytes: int, frames: int | None = None,
                   photos: bool = False) -> int:
        """How many slots ``stream`` gets (reserved until `release`); never more than its ``frames``, if known.
        ``photos``: its frames are photos written each alone (`SlotLayout.photos`), with few copies outside the slots."""
        copies = PHOTO_COPIES_OUTSIDE_SLOTS if photos else FRAME_COPIES_OUTSIDE_SLOTS
        with self._lock:
            return self._reserve(stream, queue_size, slot_bytes, frames, copies)

    def _reserve(self, stream: int, queue_size: int, slot_bytes: int, frames: int | None, copies: int) -> int:
        workers = self.workers
        wanted = queue_size + 2 * workers
        least = 1 + 2 * workers
        if frames:
            wanted, least = min(wanted, frames), min(least, frames)
        if (room := slots_with_room(slot_bytes)) is not None and room < wanted:
            log.warning("/dev/shm has room for %d of the %d frame slots wanted (%.0f MB each): the queue is shorter "
                        "(in Docker, --shm-size 512m gives it room)", room, wanted, slot_bytes / MB)
            wanted = max(least, room)  # under the least, allocating fails with a clear error
        if not self.total_mb:
            return wanted
        slot_mb = slot_bytes / MB
        others = [mb for other, mb in self._reserved_mb.items() if other != stream]
        others_mb = sum(others)
        fixed_mb = PROCESS_MB * (workers + 2) + COMPILED_VOTE_MB + copies * slot_mb + others_mb
        fitting = int((self.total_mb - fixed_mb) // slot_mb)
        if fitting < least:
            need = math.ceil(fixed_mb + least * slot_mb)  # rounded up: the value the hint names is enough
            held = f" ({others_mb:.0f} MB of it held by {len(others)} other streams)" if others_mb else ""
            raise ConfigError(f"--max-memory {self.total_mb} is too small for these frames with {workers} "
                              f"worker{'s' if workers > 1 else ''}{held}: about {need} MB is needed",
                              hint=f"raise --max-memory to {need} or more"
                                   + (", or use fewer --workers" if workers > 1 else ""))
        count = min(wanted, fitting)
        self._reserved_mb[stream] = PROCESS_MB + (copies + count) * slot_mb
        return count

    def release(self, stream: int) -> None:
        with self._lock:
            self._reserved_mb.pop(stream, None)
