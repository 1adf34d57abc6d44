"""Runs a job: a source process, N parser worker processes, and ordered output in this process.

The main process is the hub: the source announces each decoded frame, the main process hands frames to the
workers' inboxes (so it always knows which frames a worker holds), supervises the workers, restores order and
writes. The runner moves slot numbers and small records; what a frame holds is the job's business.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import multiprocess
import multiprocess.connection

from vidparse.errors import ConfigError, VidparseError
from vidparse.pipeline.memory import MB
from vidparse.pipeline.messages import Done, Failed, FrameFailed, Opened, Parsed, Ready, Task
from vidparse.pipeline.processes import POLL_S, Resume, StopFlag, logging_levels, source_main
from vidparse.pipeline.reorder import ReorderBuffer
from vidparse.pipeline.slots import SharedSlots, SlotLayout
from vidparse.pipeline.workers import WorkerPool, WorkerStartError
from vidparse.stages.types import Frame, FrameResult

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
JOIN_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 2  # a frame is parsed at most twice; then it is written unannotated
STOP_GRACE_S = 2.0
SOURCE_EXIT_GRACE_S = 1.0  # after Ctrl-C, how long the source may take to notice before it is killed
LATENCY_WINDOW = 1000
# Memory outside the frame slots, from 3840x2160 runs with one BodyPix worker (docs/faults.md: 607 to 829 MB
# besides the slots): each process's interpreter, libraries and models, plus frame copies in flight (decoder,
# temporal vote, compose, x264 lookahead), rounded up so a budget holds.
PROCESS_MB = 120
FRAME_COPIES_OUTSIDE_SLOTS = 24  # 16 let 24 4K frames reach 1213 MB under a 1000 MB budget (test_faults.py)


class Job(Protocol):
    """What the runner needs from the stages side. Must pickle (it is sent to child processes)."""

    def make_source(self, stop: Any) -> Any: ...  # open() -> info, frames(), close(), skipped_packets; ends on stop

    def make_parser(self, threads: int) -> Any: ...  # open(), process(image, seq) -> (labels, result), close()

    def slot_layout(self, info: Any) -> SlotLayout: ...  # arrays "image" and "labels"

    def make_output(self, info: Any) -> Any: ...  # open(), write(frame, labels, result), close()


@dataclass
class RunSettings:
    workers: int
    threads: int
    queue_size: int
    frame_timeout_s: float = 120.0  # a worker busy longer than this on one frame is treated as dead
    drop_oldest: bool = False  # live policy: only the newest frame waits; older waiting frames are dropped
    source_timeout_s: float | None = None  # restart a source that sends nothing for this long while slots are free
    max_memory_mb: int = 0  # budget for the whole process tree; 0 = none
    # Frames seq // group_size == g go to one worker, in order, so the job can carry state between them (keyframe
    # mode). Only an affinity: a job must give the same results when a group is split (a worker was replaced).
    group_size: int = 1

    def slot_count(self, slot_bytes: int) -> int:
        """Frames waiting for a worker, up to two handed to each worker, and room for out-of-order results;
        fewer when a memory budget cannot hold that many."""
        wanted = self.queue_size + 2 * self.workers
        if not self.max_memory_mb:
            return wanted
        slot_mb = slot_bytes / MB
        fixed_mb = PROCESS_MB * (self.workers + 2) + FRAME_COPIES_OUTSIDE_SLOTS * slot_mb
        fitting = int((self.max_memory_mb - fixed_mb) // slot_mb)
        least = 1 + 2 * self.workers
        if fitting < least:
            need = fixed_mb + least * slot_mb
            raise ConfigError(f"max_memory_mb {self.max_memory_mb} is too small for these frames with {self.workers} "
                              f"workers: about {need:.0f} MB is needed",
                              hint=f"raise --max-memory to {need:.0f} or more, or use fewer --workers")
        return min(wanted, fitting)


def percentile(values: Iterable[float], q: float) -> float | None:
    """The value below which ``q`` percent of ``values`` lie (nearest rank); None when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else None


@dataclass
class RunStats:
    frames: int = 0
    skipped_packets: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0  # from start to the first frame written: processes, model loading, first parse
    interrupted: bool = False
    worker_restarts: int = 0
    retried_frames: int = 0
    unparsed_frames: list[int] = field(default_factory=list)  # written without labels after failing twice
    dropped_frames: int = 0  # live policy: waiting frames dropped so the newest could be parsed
    source_restarts: int = 0
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    recent_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def latency_percentile(self, q: float) -> float | None:
        """Capture-to-written latency over the last LATENCY_WINDOW frames."""
        return percentile(self.recent_latency_s, q)

    @property
    def degraded(self) -> bool:
        return bool(self.unparsed_frames) or self.worker_restarts > 0 or self.retried_frames > 0

    @property
    def fps(self) -> float:
        """Frames per second over the whole run, start-up included."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steady_fps(self) -> float:
        """Frames per second after the first frame was written: the rate a long video runs at."""
        running = self.wall_s - self.startup_s
        return (self.frames - 1) / running if self.frames > 1 and running > 0 else self.fps


class PipelineError(VidparseError):
    exit_code = 7


@contextmanager
def _thread_environment(threads: int) -> Iterator[None]:
    """Child processes read these at start-up (OpenMP, BLAS, torch); set them only while spawning."""
    saved = {name: os.environ.get(name) for name in THREAD_ENV}
    os.environ.update({name: str(threads) for name in THREAD_ENV})
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class Runner:
    def __init__(
        self,
        job: Job,
        settings: RunSettings,
        on_open: Callable[[Any], None] | None = None,
        on_frame: Callable[[Frame, Any, RunStats], None] | None = None,
    ) -> None:
        self.job = job
        self.settings = settings
        self.on_open = on_open
        self.on_frame = on_frame
        self.stats = RunStats()
        self.slots_name: str | None = None  # the shared-memory block of the last run, for diagnostics
        self.output: Any = None  # the job's output stage, once the input is open
        self._stopped_by_signal = False
        self._context = multiprocess.get_context("spawn")

    def run(self) -> RunStats:
        ctx = self._context
        self._stop = StopFlag(ctx)
        self._pool: WorkerPool | None = None
        self._slots: SharedSlots | None = None
        self._output = None
        self._pending: deque[Task] = deque()
        self._attempts: dict[int, int] = {}
        self._reorder: ReorderBuffer[tuple[Task, Any]] = ReorderBuffer()
        self._reorder_slots: set[int] = set()  # slots of results waiting in the reorder buffer
        self._started = time.perf_counter()
        self._source_done = False
        self._last_task: Task | None = None
        self._stop_requested = False
        self._stopped_by_signal = False
        self._start_source()
        clean = False
        try:
            with self._signals_request_stop():
                self._start(self._wait_for_open())
                self._drain()
            clean = True
        except WorkerStartError as exc:
            raise PipelineError(str(exc), hint="out of memory? try fewer --workers") from None
        finally:
            self._shutdown(clean)
            self.stats.wall_s = time.perf_counter() - self._started
        return self.stats

    @contextmanager
    def _signals_request_stop(self) -> Iterator[None]:
        """The first SIGINT or SIGTERM only asks the loop to stop, so it is handled between two messages (an
        exception raised mid-receive would lose a frame); the second one raises KeyboardInterrupt at once."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            if self._stop_requested:
                raise KeyboardInterrupt
            self._stop_requested = self._stopped_by_signal = True

        previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    @property
    def stopped_by_signal(self) -> bool:
        """The last run was stopped by SIGINT or SIGTERM (rather than by `stop` or the input's end)."""
        return self._stopped_by_signal

    def stop(self) -> None:
        """Stop reading and finish the frames already being parsed, as the first Ctrl-C does (callable from
        ``on_frame``)."""
        self._stop_requested = True

    def _start_source(self, resume: Resume | None = None) -> None:
        self._source_events, source_send = self._context.Pipe(duplex=False)
        source_inbox, self._source_inbox = self._context.Pipe(duplex=False)
        self._source = self._context.Process(
            target=source_main,
            args=(self.job, source_inbox, source_send, self._stop, logging_levels(), resume),
            name="vidparse-source", daemon=True)
        with _thread_environment(1):
            self._source.start()
        source_send.close()
        source_inbox.close()
        self._source_heard_at = time.monotonic()

    def _send_to_source(self, message: Any) -> None:
        try:
            self._source_inbox.send(message)
        except OSError:
            pass  # the source is gone; a replacement is given every free slot when it starts

    def _restart_stalled_source(self) -> None:
        """Watchdog: a source silent past its timeout while frame slots were free is killed and started again
        where it left off. (A source waiting for a free slot is held back by the workers, not stalled.)"""
        timeout = self.settings.source_timeout_s
        if timeout is None or self._source_done or self._slots_in_use() >= self._slot_count:
            return
        if time.monotonic() - self._source_heard_at < timeout:
            return
        log.warning("the source sent nothing for %.0f s; restarting it", timeout)
        self._source.kill()
        self._source.join(timeout=JOIN_TIMEOUT_S)
        self._source_events.close()
        self._source_inbox.close()
        self.stats.source_restarts += 1
        last = self._last_task
        self._start_source(Resume(last.seq, last.pts or 0, last.captured_at or time.time(), last.time_base)
                           if last else None)
        self._send_to_source(self._slots.handle)
        self._give_free_slots()

    def _used_slots(self) -> set[int]:
        """Slots the main process knows are taken: waiting, in a worker, or waiting in the reorder buffer."""
        return {t.slot for t in self._pending} | self._pool.slots_in_use() | self._reorder_slots

    def _slots_in_use(self) -> int:
        return len(self._used_slots())

    def _release_slot(self, slot: int) -> None:
        if self._slots_in_use() + 1 >= self._slot_count:
            self._source_heard_at = time.monotonic()  # the source was waiting for this slot, not stalled
        self._send_to_source(slot)

    def _give_free_slots(self) -> None:
        """Hand a (new) source every slot not in use; one a killed source took but never announced is free."""
        used = self._used_slots()
        for slot in range(self._slot_count):
            if slot not in used:
                self._send_to_source(slot)

    def _wait_for_open(self) -> Any:
        while not isinstance(message := self._next_event(), Opened):
            if self._stop_requested:
                raise KeyboardInterrupt  # nothing written yet: stopping now loses nothing
        return message.info

    def _start(self, info: Any) -> None:
        layout = self.job.slot_layout(info)
        self._slot_count = self.settings.slot_count(layout.slot_bytes)
        try:
            self._slots = SharedSlots(layout, self._slot_count)
        except OSError as exc:
            need_mb = layout.slot_bytes * self._slot_count / MB
            raise PipelineError(f"cannot allocate {need_mb:.0f} MB of shared memory for frames: {exc.strerror}",
                                hint="/dev/shm is full or too small (in Docker: --shm-size); or lower --queue-size "
                                     "or --max-memory") from exc
        self.slots_name = self._slots.handle.name
        self._output = self.job.make_output(info)
        self.output = self._output
        self._output.open()

        def spawn(start: Callable[[], None]) -> None:
            with _thread_environment(self.settings.threads):
                start()

        # Live: one frame per worker, so a frame never waits behind another in a worker's inbox.
        prefetch = 1 if self.settings.drop_oldest else 2
        self._pool = WorkerPool(self._context, self.job, self.settings.workers, self.settings.threads,
                                self._slots.handle, self.settings.frame_timeout_s, spawn, prefetch,
                                self.settings.group_size)
        self._send_to_source(self._slots.handle)
        self._give_free_slots()
        if self.on_open:
            self.on_open(info)

    def _drain(self) -> None:
        """Dispatch, supervise and write until the source is done and every frame it sent is written."""
        self._total: int | None = None
        while self._total is None or self.stats.frames + self.stats.dropped_frames < self._total:
            if self._stop_requested and not self.stats.interrupted:
                self._interrupt()
            message = self._next_event()
            if isinstance(message, Task):
                self._last_task = message
                self._pending.append(message)
                if self.stats.interrupted:  # sent before the source saw the stop: not parsed any more
                    self._drop(self._pending.popleft())
                if self.settings.drop_oldest and len(self._pending) > 1:
                    self._drop(self._pending.popleft())
            elif isinstance(message, Done):
                self._source_done = True
                self._total = message.frames
                self.stats.skipped_packets = message.skipped_packets
            elif isinstance(message, Ready):
                self._pool.mark_ready(message.worker)
            elif isinstance(message, Parsed):
                self._pool.finished(message.worker, message.task.seq)
                self._deliver(message.task, message.result)
            elif isinstance(message, FrameFailed):
                self._pool.finished(message.worker, message.task.seq)
                log.warning("frame %d failed in worker %d: %s", message.task.seq, message.worker, message.error)
                self._retry_or_give_up(message.task)
            self._supervise()
            if self.stats.interrupted:
                self._stop_source_after_interrupt()
            else:
                self._restart_stalled_source()
            self._dispatch_pending()

    def _dispatch_pending(self) -> None:
        """Hand waiting frames to workers in order; a frame whose group's worker is full waits without holding back
        frames of other groups."""
        if not self._pool.has_capacity():
            return
        kept: deque[Task] = deque()
        while self._pending:
            task = self._pending.popleft()
            if not self._pool.dispatch(task):
                kept.append(task)
        self._pending = kept

    def _interrupt(self) -> None:
        """First Ctrl-C: stop reading, drop frames not yet started, finish the ones being parsed."""
        self.stats.interrupted = True
        self._interrupted_at = time.monotonic()
        self._stop.set()
        while self._pending:
            self._drop(self._pending.popleft())
        if self._stopped_by_signal:
            log.warning("interrupted: finishing the frames in flight (press Ctrl-C again to stop at once)")

    def _stop_source_after_interrupt(self) -> None:
        """A source blocked on a silent stream is not waited for: the frames it announced are all there is."""
        if self._source_done or time.monotonic() - self._interrupted_at < STOP_GRACE_S:
            return
        self._source.kill()
        self._source_done = True
        self._total = self._last_task.seq + 1 if self._last_task else 0
        while self._pending:
            self._drop(self._pending.popleft())

    def _supervise(self) -> None:
        for lost in self._pool.check():
            self.stats.worker_restarts += 1
            self._pending.extendleft(reversed(lost.waiting))
            if lost.current is not None:
                self._retry_or_give_up(lost.current)

    def _retry_or_give_up(self, task: Task) -> None:
        attempts = self._attempts.get(task.seq, 0) + 1
        self._attempts[task.seq] = attempts
        if attempts < MAX_ATTEMPTS:
            self.stats.retried_frames += 1
            self._pending.appendleft(task)
            return
        log.warning("frame %d failed %d times; writing it without labels", task.seq, attempts)
        self.stats.unparsed_frames.append(task.seq)
        self._slots.view(task.slot, "labels")[:] = 0
        self._deliver(task, FrameResult(seq=task.seq, status="unparsed"))

    def _drop(self, task: Task) -> None:
        self.stats.dropped_frames += 1
        self._release_slot(task.slot)
        self._deliver(task, None)

    def _deliver(self, task: Task, result: Any) -> None:
        """Hand a result (None: a dropped frame) to the reorder buffer and write whatever is now in order."""
        self._attempts.pop(task.seq, None)
        if result is not None:
            self._reorder_slots.add(task.slot)
        for ready_task, ready_result in self._reorder.push(task.seq, (task, result)):
            if ready_result is not None:
                self._reorder_slots.discard(ready_task.slot)
                self._write(ready_task, ready_result)

    def _write(self, task: Task, result: Any) -> None:
        frame = Frame(seq=task.seq, pts=task.pts, time_base=task.time_base, image=self._slots.view(task.slot, "image"),
                      captured_at=task.captured_at)
        self._output.write(frame, self._slots.view(task.slot, "labels"), result)
        self._release_slot(task.slot)
        if task.captured_at is not None:
            self.stats.recent_latency_s.append(time.time() - task.captured_at)
        for stage, seconds in result.timings.items():
            self.stats.stage_s[stage] += seconds
        self.stats.frames += 1
        if self.stats.frames == 1:
            self.stats.startup_s = time.perf_counter() - self._started
        if self.on_frame:
            self.on_frame(frame, result, self.stats)

    def _next_event(self) -> Any:
        """The next message from a child, or ``None`` after a quiet poll interval or a worker's pipe closing.

        Raises what a child reported, or a source crash nobody reported.
        """
        workers = self._pool.connections() if self._pool is not None else {}
        sources = [] if self._source_done else [self._source_events]
        ready = multiprocess.connection.wait([*sources, *workers], timeout=POLL_S)
        if not ready:
            if not self._source_done:
                self._check_source()
            return None
        if ready[0] is self._source_events:
            self._source_heard_at = time.monotonic()
        try:
            message = ready[0].recv()
        except (EOFError, OSError):
            if ready[0] is self._source_events:
                self._source.join(timeout=JOIN_TIMEOUT_S)
                self._check_source()
                raise PipelineError("the source process ended without a word", hint="run with --verbose") from None
            self._pool.wait_for_exit(workers[ready[0]])
            return None
        if isinstance(message, Failed):
            if isinstance(message.error, VidparseError):
                raise message.error
            raise PipelineError(f"{message.where} failed: {message.error}",
                                hint="this is a bug or a broken model; run with --verbose for details")
        return message

    def _check_source(self) -> None:
        if self._source.exitcode not in (None, 0):
            raise PipelineError(f"the source process died (exit code {self._source.exitcode})",
                                hint="the input may be damaged; run with --verbose for details")

    def _shutdown(self, clean: bool) -> None:
        """Finalize the output, then let children exit (after a clean run) or stop them (after a failure)."""
        self._stop.set()
        self._send_to_source(None)  # releases a source still waiting for its slots
        try:
            if self._output is not None:
                self._output.close()
        finally:
            if self._pool is not None:
                self._pool.stop(JOIN_TIMEOUT_S if clean else 0.0)
            # After Done the source owes nothing; closing a network stream can block, so it gets a short grace.
            self._source.join(timeout=SOURCE_EXIT_GRACE_S if clean else 0.0)
            if self._source.is_alive():
                self._source.kill()
                self._source.join(timeout=JOIN_TIMEOUT_S)
            if self._slots is not None:
                self._slots.close()
