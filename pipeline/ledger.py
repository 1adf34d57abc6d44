"""Who holds each frame slot of a stream: the one place a slot changes hands, so none is lost or given twice."""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable


class Holder(enum.Enum):
    SOURCE = "source"  # free, or being decoded into: the source process has it
    PENDING = "pending"  # decoded, waiting for a worker
    WORKER = "worker"  # handed to a worker
    REORDER = "reorder"  # parsed, waiting for earlier frames
    WRITER = "writer"  # in the writer thread's queue or being written


class SlotLedger:
    """The holder of every slot. The hub thread moves slots; the writer thread hands them back (`release`), so
    changes take ``lock``. Handing a slot to the source (``give(slot, slots in use)``) happens under the same
    lock, in ledger order."""

    def __init__(self, count: int, give: Callable[[int, int], None], lock: threading.RLock) -> None:
        self._holders = [Holder.SOURCE] * count
        self._give = give
        self._lock = lock

    @property
    def count(self) -> int:
        return len(self._holders)

    def move(self, slot: int, holder: Holder) -> None:
        with self._lock:
            self._holders[slot] = holder

    def release(self, slot: int) -> None:
        """Slot ``slot`` is free again: back to the source."""
        with self._lock:
            self._holders[slot] = Holder.SOURCE
            self._give(slot, self._in_use())

    def in_use(self) -> int:
        """Slots the main process knows are taken (not with the source)."""
        with self._lock:
            return self._in_use()

    def _in_use(self) -> int:
        return sum(holder is not Holder.SOURCE for holder in self._holders)

    def give_free(self) -> None:
        """Hand a (new) source every slot the source side holds; one a killed source took but never announced is
        free again."""
        with self._lock:
            for slot, holder in enumerate(self._holders):
                if holder is Holder.SOURCE:
                    self._give(slot, self._in_use())
