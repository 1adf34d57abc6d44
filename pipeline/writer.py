"""One stream's ordered output, off the hub thread: the output stage, then subscribers, then the slot goes back."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vidparse.pipeline.ledger import SlotLedger
from vidparse.pipeline.messages import Task
from vidparse.pipeline.slots import SharedSlots
from vidparse.pipeline.stats import RunStats
from vidparse.stages.types import Frame


@dataclass
class Written:
    """A frame as its subscribers see it. The arrays are views of the frame's slot: valid only during the call
    (copy what you keep)."""

    stream: int
    frame: Frame
    labels: Any  # what the output stage made of the parser's arrays (after the temporal vote)
    annotated: Any  # the image the output stage wrote
    result: Any  # the parser's per-frame result


Subscriber = Callable[[Written, RunStats], None]


class OutputWriter:
    """A thread per stream behind a bounded queue. ``output.write(frame, arrays, result)`` returns
    ``(labels, annotated)``; the writer owns the output from the first write until it closes it."""

    def __init__(self, stream: int, output: Any, slots: SharedSlots, ledger: SlotLedger, stats: RunStats,
                 subscribers: list[Subscriber], started: float) -> None:
        self.stream = stream
        self._output = output
        self._slots = slots
        self._ledger = ledger
        self._stats = stats
        self._subscribers = subscribers
        self._started = started
        # Every queued frame holds a slot, so the queue never holds more than the slots (plus the end marker).
        self._queue: queue.Queue[tuple[Task, Any] | None] = queue.Queue(maxsize=ledger.count + 1)
        self.error: BaseException | None = None
        self._discard = False
        self._thread = threading.Thread(target=self._run, name=f"vidparse-writer-{stream}", daemon=True)
        self._thread.start()

    def put(self, task: Task, result: Any) -> None:
        self._queue.put((task, result))

    def close(self, discard: bool = False) -> None:
        """Write what is queued (nothing after an error, or with ``discard``), close the output, end the thread."""
        self._discard = discard
        self._queue.put(None)
        self._thread.join()

    def _run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                task, result = item
                if self.error is None and not self._discard:
                    try:
                        self._write(task, result)
                    except BaseException as exc:  # reported by the hub thread, which owns errors
                        self.error = exc
                self._ledger.release(task.slot)
        finally:
            try:
                self._output.close()
            except BaseException as exc:
                self.error = self.error or exc

    def _write(self, task: Task, result: Any) -> None:
        frame = Frame(seq=task.seq, pts=task.pts, time_base=task.time_base,
                      image=self._slots.view(task.slot, self._slots.layout.input), captured_at=task.captured_at)
        labels, annotated = self._output.write(frame, self._slots.outputs(task.slot), result)
        stats = self._stats
        if task.captured_at is not None:
            stats.recent_latency_s.append(time.time() - task.captured_at)
        for stage, seconds in result.timings.items():
            stats.stage_s[stage] += seconds
        stats.frames += 1
        if stats.frames == 1:
            stats.startup_s = time.perf_counter() - self._started
        written = Written(self.stream, frame, labels, annotated, result)
        for subscriber in self._subscribers:
            subscriber(written, stats)
