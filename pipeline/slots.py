"""Frame transport through shared memory: a fixed pool of slots, each holding named arrays.

Queues carry only slot numbers; the arrays themselves never get pickled.

A run killed outright (SIGKILL, the kernel's out-of-memory killer, a Ray node's worker) cannot unlink its block, and
/dev/shm is memory: every process using a block holds a shared lock on it for as long as it does, and a new block's
creator first removes the blocks of vidparse's that no process holds any more.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import resource
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from multiprocess import shared_memory

SHM_DIR = Path("/dev/shm")  # where Linux keeps POSIX shared memory, one file a block
PREFIX = "vidparse_"
STALE_AFTER_S = 10.0  # a block younger than this may be between its creation and its creator's lock

log = logging.getLogger(__name__)


def _lock(name: str, operation: int) -> int | None:
    """An open descriptor of block ``name`` with ``operation`` (fcntl.LOCK_*) taken on it; None where the block is
    not a file here (not Linux) or the lock is held the other way."""
    try:
        descriptor = os.open(SHM_DIR / name, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(descriptor, operation)
    except OSError:
        os.close(descriptor)
        return None
    return descriptor


def remove_stale_blocks(min_age_s: float = STALE_AFTER_S) -> list[str]:
    """Remove vidparse's blocks that no process holds (their run was killed); their names."""
    removed = []
    for path in SHM_DIR.glob(f"{PREFIX}*"):
        try:
            if time.time() - path.stat().st_ctime < min_age_s:
                continue
        except OSError:
            continue
        descriptor = _lock(path.name, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if descriptor is not None:
            path.unlink(missing_ok=True)
            os.close(descriptor)
            removed.append(path.name)
    if removed:
        log.warning("removed %d shared-memory block(s) left by killed runs: %s", len(removed), ", ".join(removed))
    return removed


@dataclass(frozen=True)
class SlotLayout:
    """The arrays in every slot: name -> (shape, dtype string). The source decodes into the first (``input``);
    the parser fills the others (``outputs``), named as the parser returns them."""

    arrays: tuple[tuple[str, tuple[int, ...], str], ...]
    frames: int | None = None  # the stream's frames, where it knows their number for sure: no more slots than that
    # photos written each alone: no video encoder, temporal vote or tracking holds frames outside the slots
    photos: bool = False

    @property
    def input(self) -> str:
        return self.arrays[0][0]

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.arrays[1:])

    @property
    def slot_bytes(self) -> int:
        return sum(int(np.prod(shape)) * np.dtype(dtype).itemsize for _, shape, dtype in self.arrays)


@dataclass(frozen=True)
class SlotsHandle:
    """What another process needs to attach to the same slots."""

    name: str
    layout: SlotLayout
    count: int


def slots_with_room(slot_bytes: int) -> int | None:
    """How many slots of ``slot_bytes`` the free space of /dev/shm holds (a little kept spare); None where there is
    no /dev/shm to ask."""
    try:
        free = shutil.disk_usage(SHM_DIR).free
    except OSError:
        return None
    return int(free * 0.95 // max(1, slot_bytes))


def _back(name: str, size: int) -> None:
    """Give every page of a new block its memory now: a /dev/shm too small for it (Docker's 64 MB) fails here with
    ENOSPC, where it would otherwise kill whichever process first touched a page past the room left (SIGBUS)."""
    fd = os.open(SHM_DIR / name, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, size)
    finally:
        os.close(fd)


class SharedSlots:
    """``count`` slots of ``layout`` in one shared-memory block. The creator owns (and unlinks) it."""

    def __init__(self, layout: SlotLayout, count: int, name: str | None = None) -> None:
        self.layout = layout
        self.count = count
        self._owner = name is None
        if self._owner:
            remove_stale_blocks()
            size = max(1, layout.slot_bytes * count)
            if (limit := resource.getrlimit(resource.RLIMIT_FSIZE)[0]) != resource.RLIM_INFINITY and size > limit:
                # SharedMemory would fail in ftruncate and unregister a name it never registered (a traceback from
                # the resource tracker)
                raise OSError(errno.EFBIG, f"larger than this process may write ({limit} bytes: ulimit -f)")
            self._shm = shared_memory.SharedMemory(name=f"{PREFIX}{secrets.token_hex(8)}", create=True, size=size)
            try:
                _back(self._shm.name, size)
            except OSError:
                self._shm.close()
                self._shm.unlink()
                raise
        else:
            # Spawned children share the creator's resource tracker, so attaching registers nothing new.
            self._shm = shared_memory.SharedMemory(name=name)
        self._held = _lock(self._shm.name, fcntl.LOCK_SH)
        self._views = [self._slot_views(i) for i in range(count)]

    @classmethod
    def attach(cls, handle: SlotsHandle) -> SharedSlots:
        return cls(handle.layout, handle.count, name=handle.name)

    @property
    def handle(self) -> SlotsHandle:
        return SlotsHandle(self._shm.name, self.layout, self.count)

    def _slot_views(self, index: int) -> dict[str, np.ndarray]:
        offset = index * self.layout.slot_bytes
        views = {}
        for array_name, shape, dtype in self.layout.arrays:
            views[array_name] = np.ndarray(shape, dtype=dtype, buffer=self._shm.buf, offset=offset)
            offset += views[array_name].nbytes
        return views

    def view(self, index: int, array_name: str) -> np.ndarray:
        return self._views[index][array_name]

    def outputs(self, index: int) -> dict[str, np.ndarray]:
        """Slot ``index``'s parser outputs by name."""
        return {name: self._views[index][name] for name in self.layout.outputs}

    def close(self) -> None:
        self._views = []
        self._shm.close()
        if self._owner:
            self._shm.unlink()
        if self._held is not None:
            os.close(self._held)
            self._held = None
