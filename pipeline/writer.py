"""One stream's ordered output, off the hub thread: the output stage (measured, composed, then emitted, each on a
thread of its own), then subscribers, then the slot goes back."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vidparse.pipeline.ledger import SlotLedger

if TYPE_CHECKING:
    from vidparse.pipeline.contracts import StreamOutput
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
AHEAD = 2  # frames measured and waiting to be composed, and composed and waiting to be emitted


class OutputWriter:
    """Three threads per stream, behind a bounded queue, each taking the frames in order: one measures them
    (``output.measure(frame, arrays)``: the optical flow), one composes them (``output.compose(frame, arrays, result,
    measured)``: the vote, tracking, the recolor), one emits them (``output.emit(composed)``: encoding, masks,
    statistics), then the subscribers run and the slot goes back. So a frame is encoded while the next is composed
    and the one after is measured (OpenCV and the encoder release the GIL). The writer owns the output from the
    first frame until it closes it."""

    def __init__(self, stream: int, output: StreamOutput, slots: SharedSlots, ledger: SlotLedger, stats: RunStats,
                 subscribers: list[Subscriber], started: float) -> None:
        self.stream = stream
        self._output = output
        self._slots = slots
        self._ledger = ledger
        self._stats = stats
        self._subscribers = subscribers
        self._started = started
        # Every queued frame holds a slot, so the queues never hold more than the slots (plus the end markers).
        self._queue: queue.Queue[tuple[Task, Any, Any] | None] = queue.Queue(maxsize=ledger.count + 1)
        self._measured: queue.Queue[tuple[Task, Any, Any] | None] = queue.Queue(maxsize=AHEAD)
        self._composed: queue.Queue[tuple[Task, Any, Any] | None] = queue.Queue(maxsize=AHEAD)
        self.error: BaseException | None = None
        self._discard = False
        relays = (("motion", self._queue, self._measured, self._measure),
                  ("compose", self._measured, self._composed, self._compose))
        self._threads = [threading.Thread(target=self._relay, args=relay, name=f"vidparse-{relay[0]}-{stream}",
                                          daemon=True) for relay in relays]
        self._threads.append(threading.Thread(target=self._emit_frames, name=f"vidparse-writer-{stream}", daemon=True))
        for thread in self._threads:
            thread.start()

    def put(self, task: Task, result: Any) -> None:
        self._queue.put((task, result, task))  # what the first step takes: the frame as it came

    def close(self, discard: bool = False) -> None:
        """Write what is queued (nothing after an error, or with ``discard``), close the output, end the threads."""
        self._discard = discard
        self._queue.put(None)
        for thread in self._threads:
            thread.join()

    def _measure(self, task: Task, result: Any, _: Task) -> tuple[Frame, Any]:
        frame = Frame(seq=task.seq, pts=task.pts, time_base=task.time_base,
                      image=self._slots.view(task.slot, self._slots.layout.input), captured_at=task.captured_at,
                      picture=task.picture)
        return frame, self._output.measure(frame, self._slots.outputs(task.slot))

    def _compose(self, task: Task, result: Any, measured: tuple[Frame, Any]) -> Any:
        frame, motion = measured
        return self._output.compose(frame, self._slots.outputs(task.slot), result, motion)

    def _relay(self, name: str, inbox: queue.Queue, outbox: queue.Queue,
               step: Callable[[Task, Any, Any], Any]) -> None:
        """Every frame from ``inbox`` to ``outbox``, in order, with what ``step`` made of it (its busy time counted
        as ``name``'s). After an error anywhere, or a discard, frames pass on with nothing made (None), so their
        slots still reach the emit thread, which hands them back."""
        try:
            while (item := inbox.get()) is not None:
                started = time.perf_counter()
                task, result, made = item
                if self.error is None and not self._discard and made is not None:
                    try:
                        made = step(task, result, made)
                    except BaseException as exc:  # reported by the hub thread, which owns errors
                        self.error, made = self.error or exc, None
                else:
                    made = None
                self._stats.serial_s[name] += time.perf_counter() - started
                outbox.put((task, result, made))
        finally:
            outbox.put(None)

    def _emit_frames(self) -> None:
        """Every frame composed is emitted (at most AHEAD more after an error elsewhere or a discard), so the frames
        before a failing one are all written; after an error here, none is."""
        broken = False
        try:
            while (item := self._composed.get()) is not None:
                started = time.perf_counter()
                task, result, composed = item
                if composed is not None and not broken:
                    try:
                        self._emit(task, result, composed)
                    except BaseException as exc:
                        self.error, broken = self.error or exc, True
                self._ledger.release(task.slot)
                self._stats.serial_s["emit"] += time.perf_counter() - started
        finally:
            try:
                self._output.close()
            except BaseException as exc:
                self.error = self.error or exc

    def _emit(self, task: Task, result: Any, composed: Any) -> None:
        self._output.emit(composed)
        stats = self._stats
        if task.captured_at is not None:
            stats.recent_latency_s.append(time.time() - task.captured_at)
        for stage, seconds in result.timings.items():
            stats.stage_s[stage] += seconds
        stats.frames += 1
        if stats.frames == 1:
            stats.startup_s = time.perf_counter() - self._started
        written = Written(self.stream, composed.frame, composed.labels, composed.annotated, result)
        for subscriber in self._subscribers:
            subscriber(written, stats)
