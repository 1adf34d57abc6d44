"""Frame transport through shared memory: a fixed pool of slots, each holding named arrays.

Queues carry only slot numbers; the arrays themselves never get pickled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from multiprocess import shared_memory


@dataclass(frozen=True)
class SlotLayout:
    """The arrays in every slot: name -> (shape, dtype string). The source decodes into the first (``input``);
    the parser fills the others (``outputs``), named as the parser returns them."""

    arrays: tuple[tuple[str, tuple[int, ...], str], ...]

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


class SharedSlots:
    """``count`` slots of ``layout`` in one shared-memory block. The creator owns (and unlinks) it."""

    def __init__(self, layout: SlotLayout, count: int, name: str | None = None) -> None:
        self.layout = layout
        self.count = count
        self._owner = name is None
        if self._owner:
            self._shm = shared_memory.SharedMemory(create=True, size=max(1, layout.slot_bytes * count))
        else:
            # Spawned children share the creator's resource tracker, so attaching registers nothing new.
            self._shm = shared_memory.SharedMemory(name=name)
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
