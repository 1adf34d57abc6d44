"""Restore sequence order from workers that finish out of order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class ReorderBuffer(Generic[T]):
    def __init__(self, first_seq: int = 0) -> None:
        self._next = first_seq
        self._waiting: dict[int, T] = {}

    def push(self, seq: int, item: T) -> Iterator[T]:
        """Add an item; yield every item now ready, in sequence order."""
        if seq < self._next or seq in self._waiting:
            raise ValueError(f"sequence number {seq} was already delivered")
        self._waiting[seq] = item
        while self._next in self._waiting:
            yield self._waiting.pop(self._next)
            self._next += 1

    @property
    def next_seq(self) -> int:
        return self._next

    def __len__(self) -> int:
        return len(self._waiting)
