"""One input stream inside the engine: its source process, slots, waiting frames, order and output."""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import deque
from dataclasses import replace
from typing import Any

from vidparse.pipeline.contracts import OnConnecting, OnOpen, StreamFactory, StreamOutput
from vidparse.pipeline.errors import PipelineError, raise_failure
from vidparse.pipeline.ledger import Holder, SlotLedger
from vidparse.pipeline.memory import MB
from vidparse.pipeline.messages import Connecting, Done, Failed, Opened, Task, receive, send
from vidparse.pipeline.processes import Resume, StopFlag, logging_levels, source_main
from vidparse.pipeline.reorder import ReorderBuffer
from vidparse.pipeline.settings import MemoryBudget, StreamSettings
from vidparse.pipeline.slots import SharedSlots
from vidparse.pipeline.stats import RunStats
from vidparse.pipeline.threads import thread_environment
from vidparse.pipeline.writer import OutputWriter, Subscriber
from vidparse.stages.types import FrameResult

log = logging.getLogger(__name__)

JOIN_TIMEOUT_S = 5.0
STOP_GRACE_S = 2.0
SOURCE_EXIT_GRACE_S = 1.0  # after the last frame, how long the source may take to exit before it is killed


class StreamSession:
    """Owns one stream: the source process and its stop flag, the watchdog that restarts a silent source, the
    slot block and its ledger, frames waiting for a worker (and the drop policy), the reorder buffer, the writer
    thread and the stream's statistics. The hub thread calls every method; only the writer runs elsewhere.

    ``spec`` describes the source, the slot layout and the output (``source_spec()``, ``slot_layout(info)``,
    ``make_output(info)``); only what ``source_spec()`` returns (it has ``make_source(stop)``) is pickled into
    the source process, so that process imports no more than the source needs.
    """

    def __init__(self, stream: int, spec: StreamFactory, settings: StreamSettings, context: Any, budget: MemoryBudget,
                 subscribers: list[Subscriber], on_open: OnOpen | None = None,
                 on_connecting: OnConnecting | None = None) -> None:
        self.stream = stream
        self.spec = spec
        self.settings = settings
        self.stats = RunStats()
        self.error: Exception | None = None  # what stopped this stream alone (the engine goes on)
        self.cancelled = False  # removed on its own (`Engine.remove_source`), not stopped with the engine
        self.pending: deque[Task] = deque()
        self.slots: SharedSlots | None = None
        self.output: StreamOutput | None = None  # the stream's output stage, once the input is open
        self._context = context
        self._budget = budget
        self._subscribers = subscribers
        self._on_open = on_open
        self._on_connecting = on_connecting  # told each failed connection attempt (in ``stats.connecting``)
        self._stop = StopFlag(context)
        # Taken for every message to the source: the writer thread hands slots back while the hub talks to it.
        self._lock = threading.RLock()
        self._ledger: SlotLedger | None = None
        self._writer: OutputWriter | None = None
        self._reorder: ReorderBuffer[tuple[Task, Any]] = ReorderBuffer()
        self._started = time.perf_counter()
        self._source_done = False
        self._last_task: Task | None = None
        self._total: int | None = None  # frames the source sent, once it is done
        self._delivered = 0  # frames handed to the writer or dropped
        self._interrupted_at = 0.0
        self._reconnects_before = 0  # reconnects counted by source processes the watchdog replaced
        self._start_source()

    @property
    def opened(self) -> bool:
        return self._ledger is not None

    @property
    def finished(self) -> bool:
        return self._total is not None and self._delivered >= self._total

    # What exists once the input is open: the hub reaches these only after the source's `Opened`.
    @property
    def _open_ledger(self) -> SlotLedger:
        if self._ledger is None:
            raise RuntimeError(f"stream {self.stream} is not open")
        return self._ledger

    @property
    def _open_slots(self) -> SharedSlots:
        if self.slots is None:
            raise RuntimeError(f"stream {self.stream} is not open")
        return self.slots

    @property
    def _open_writer(self) -> OutputWriter:
        if self._writer is None:
            raise RuntimeError(f"stream {self.stream} is not open")
        return self._writer

    def connection(self) -> Any | None:
        """The source's pipe to wait on, while it has something to say."""
        return None if self._source_done else self._source_events

    def _start_source(self, resume: Resume | None = None) -> None:
        self._source_events, source_send = self._context.Pipe(duplex=False)
        source_inbox, self._source_inbox = self._context.Pipe(duplex=False)
        self._source = self._context.Process(
            target=source_main,
            args=(self.spec.source_spec(), self.stream, source_inbox, source_send, self._stop, logging_levels(),
                  resume),
            name=f"vidparse-source-{self.stream}", daemon=True)
        with thread_environment(1):
            self._source.start()
        source_send.close()
        source_inbox.close()
        self._source_heard_at = time.monotonic()

    def _send_to_source(self, message: Any) -> None:
        with self._lock:
            try:
                send(self._source_inbox, message)
            except OSError:
                pass  # the source is gone; a replacement is given every free slot when it starts

    def _give_slot(self, slot: int, in_use: int) -> None:
        if in_use + 1 >= self._open_ledger.count:
            self._source_heard_at = time.monotonic()  # the source was waiting for this slot, not stalled
        self._send_to_source(slot)

    def receive(self) -> None:
        """Read every message the source has sent."""
        try:
            while self._source_events.poll():
                self._source_heard_at = time.monotonic()
                self._handle(receive(self._source_events))
                if self._source_done:
                    return
        except (EOFError, OSError):
            self._source.join(timeout=JOIN_TIMEOUT_S)
            self.check_source()
            raise PipelineError("the source process ended without a word", hint="run with --verbose") from None

    def _handle(self, message: Any) -> None:
        if isinstance(message, Task):
            if (group := self.settings.group_of(message.seq)) is not None:
                message = replace(message, group=group)
            self._open_ledger.move(message.slot, Holder.PENDING)
            self._last_task = message
            self.stats.reconnects = self._reconnects_before + message.reconnects
            self.stats.connecting = None
            self.pending.append(message)
            if self.stats.interrupted:  # sent before the source saw the stop: not parsed any more
                self._let_go(self.pending.popleft())
            if self.settings.drop_oldest and len(self.pending) > 1:
                self.drop(self.pending.popleft())
        elif isinstance(message, Done):
            self._source_done = True
            self._total = message.frames
            self.stats.skipped_packets = message.skipped_packets
        elif isinstance(message, Connecting):
            self.stats.connecting = (message.attempt, message.reason)
            if self._on_connecting is not None:
                self._on_connecting(self.stats)
        elif isinstance(message, Opened) and not self.opened:  # a restarted source opens again: nothing new
            self._open(message.info)
        elif isinstance(message, Failed):
            raise_failure(message)

    def _open(self, info: Any) -> None:
        if self.settings.drop_only_if_live and not info.live:
            self.settings = replace(self.settings, drop_oldest=False)
        layout = self.spec.slot_layout(info)
        count = self._budget.slot_count(self.stream, self.settings.queue_size, layout.slot_bytes, layout.frames,
                                        layout.photos)
        try:
            self.slots = SharedSlots(layout, count)
        except OSError as exc:
            need_mb = layout.slot_bytes * count / MB
            raise PipelineError(f"cannot allocate {need_mb:.0f} MB of shared memory for frames: {exc.strerror}",
                                hint="/dev/shm is full or too small (in Docker: --shm-size); or use fewer --workers, "
                                     "a lower --queue-size or --max-memory") from exc
        self.output = self.spec.make_output(info)
        self.output.open()
        self._ledger = ledger = SlotLedger(count, self._give_slot, self._lock)
        self._writer = OutputWriter(self.stream, self.output, self.slots, ledger, self.stats,
                                    self._subscribers, self._started)
        with self._lock:
            self._send_to_source(self.slots.handle)
            ledger.give_free()
        if self._on_open:
            self._on_open(info)

    def dispatched(self, task: Task) -> None:
        self._open_ledger.move(task.slot, Holder.WORKER)

    def wait_again(self, task: Task) -> None:
        """A frame back from a worker (replaced, or to be retried): first in line again."""
        self._open_ledger.move(task.slot, Holder.PENDING)
        self.pending.appendleft(task)

    def deliver(self, task: Task, result: Any) -> None:
        """Hand a result (None: a dropped frame) to the reorder buffer; what is now in order goes to the writer."""
        if result is not None:
            self._open_ledger.move(task.slot, Holder.REORDER)
        for ready_task, ready_result in self._reorder.push(task.seq, (task, result)):
            self._delivered += 1
            if ready_result is not None:
                self._open_ledger.move(ready_task.slot, Holder.WRITER)
                self._open_writer.put(ready_task, ready_result)

    def give_up(self, task: Task, attempts: int) -> None:
        """A frame that failed too often: written with zeroed parser outputs, marked unparsed."""
        log.warning("frame %d failed %d times; writing it without labels", task.seq, attempts)
        self.stats.unparsed_frames.append(task.seq)
        for array in self._open_slots.outputs(task.slot).values():
            array[:] = 0
        self.deliver(task, FrameResult(seq=task.seq, status="unparsed"))

    def drop(self, task: Task) -> None:
        """The live policy: a waiting frame dropped so that a newer one is parsed."""
        self.stats.dropped_frames += 1
        self._let_go(task)

    def _let_go(self, task: Task) -> None:
        """A frame that will not be written: its slot freed, its place in the order passed."""
        self._open_ledger.release(task.slot)
        self.deliver(task, None)

    def interrupt(self, cancel: bool = False) -> None:
        """Stop reading, drop frames not yet started, finish the ones being parsed. ``cancel``: this stream alone
        was asked to stop."""
        self.cancelled = self.cancelled or cancel
        if self.stats.interrupted:
            return
        self.stats.interrupted = True
        self._interrupted_at = time.monotonic()
        self._stop.set()
        if self.output is not None:
            self.output.stopped_early()
        while self.pending:
            self._let_go(self.pending.popleft())

    def tick(self) -> None:
        """Between messages: the writer's errors surface here; the watchdog and the stop grace run."""
        if self._writer is not None and self._writer.error is not None:
            raise self._writer.error
        if self._source_done:
            return
        if self.stats.interrupted:
            self._stop_source_after_interrupt()
        elif self.opened:
            self._restart_stalled_source()

    def check_source(self) -> None:
        """A source crash nobody reported."""
        if not self._source_done and self._source.exitcode not in (None, 0):
            killed = self._source.exitcode == -signal.SIGKILL  # what the kernel's out-of-memory killer sends
            raise PipelineError(f"the source process died (exit code {self._source.exitcode})",
                                hint="it was killed (SIGKILL): out of memory? try fewer --workers or --max-memory"
                                if killed else "the input may be damaged; run with --verbose for details")

    def _stop_source_after_interrupt(self) -> None:
        """A source blocked on a silent stream is not waited for: the frames it announced are all there is."""
        if time.monotonic() - self._interrupted_at < STOP_GRACE_S:
            return
        self._source.kill()
        self._source_done = True
        self._total = self._last_task.seq + 1 if self._last_task else 0
        while self.pending:
            self._let_go(self.pending.popleft())

    def _restart_stalled_source(self) -> None:
        """Watchdog: a source silent past its timeout while frame slots were free is killed and started again
        where it left off. (A source waiting for a free slot is held back by the workers, not stalled.)"""
        timeout = self.settings.source_timeout_s
        if timeout is None or self._open_ledger.in_use() >= self._open_ledger.count:
            return
        if time.monotonic() - self._source_heard_at < timeout:
            return
        if self.stats.source_restarts >= self.settings.max_source_restarts:
            raise PipelineError(f"the source stalled {self.stats.source_restarts + 1} times (nothing for {timeout:g} s "
                                "while frame slots were free); giving up",
                                hint="the input keeps hanging: check it (run with --verbose), or the source timeout")
        log.warning("source %d sent nothing for %.0f s; restarting it", self.stream, timeout)
        with self._lock:  # the new source gets the handle first, then every free slot
            self._source.kill()
            self._source.join(timeout=JOIN_TIMEOUT_S)
            self._source_events.close()
            self._source_inbox.close()
            self.stats.source_restarts += 1
            self._reconnects_before = self.stats.reconnects + 1
            last = self._last_task
            self._start_source(Resume(last.seq, last.pts or 0, last.captured_at or time.time(), last.time_base)
                               if last else None)
            self._send_to_source(self._open_slots.handle)
            self._open_ledger.give_free()

    def close(self, clean: bool) -> None:
        """Finish the output (what is queued is written after a clean end), then stop the source and free the
        slots. Workers must be done with the slots (or be stopped) first."""
        self._stop.set()
        self._send_to_source(None)  # releases a source still waiting for its slots
        try:
            if self._writer is not None:
                self._writer.close(discard=not clean)
            elif self.output is not None:
                self.output.close()
        finally:
            # After Done the source owes nothing; closing a network stream can block, so it gets a short grace.
            self._source.join(timeout=SOURCE_EXIT_GRACE_S if clean else 0.0)
            if self._source.is_alive():
                self._source.kill()
                self._source.join(timeout=JOIN_TIMEOUT_S)
            self._source_events.close()
            self._source_inbox.close()
            if self.slots is not None:
                self.slots.close()
            self._budget.release(self.stream)
            self.stats.wall_s = time.perf_counter() - self._started
        if clean and self._writer is not None and self._writer.error is not None:
            raise self._writer.error
