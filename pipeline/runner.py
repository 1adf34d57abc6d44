"""Runs a job: a source process, N parser worker processes, and ordered output in this process.

The main process is the hub: the source announces each decoded frame, the main process hands frames to the
workers' inboxes (so it always knows which frames a worker holds), supervises the workers, restores order and
writes. The runner moves slot numbers and small records; what a frame holds is the job's business.
"""

from __future__ import annotations

import logging
import os
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import multiprocess
import multiprocess.connection

from vidparse.errors import VidparseError
from vidparse.pipeline.messages import Done, Failed, FrameFailed, Opened, Parsed, Ready, Task
from vidparse.pipeline.processes import POLL_S, source_main
from vidparse.pipeline.reorder import ReorderBuffer
from vidparse.pipeline.slots import SharedSlots, SlotLayout
from vidparse.pipeline.workers import WorkerPool, WorkerStartError
from vidparse.stages.types import Frame, FrameResult

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
JOIN_TIMEOUT_S = 5.0
MAX_ATTEMPTS = 2  # a frame is parsed at most twice; then it is written unannotated


class Job(Protocol):
    """What the runner needs from the stages side. Must pickle (it is sent to child processes)."""

    def make_source(self) -> Any: ...  # open() -> info, frames() -> Iterator[Frame], close(), skipped_packets

    def make_parser(self, threads: int) -> Any: ...  # open(), process(image, seq) -> (labels, result), close()

    def slot_layout(self, info: Any) -> SlotLayout: ...  # arrays "image" and "labels"

    def make_output(self, info: Any) -> Any: ...  # open(), write(frame, labels, result), close()


@dataclass
class RunSettings:
    workers: int
    threads: int
    queue_size: int
    frame_timeout_s: float = 120.0  # a worker busy longer than this on one frame is treated as dead

    @property
    def slot_count(self) -> int:
        # Frames waiting for a worker, PREFETCH per worker, and room for out-of-order results.
        return self.queue_size + 2 * self.workers


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
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))

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
        on_frame: Callable[[Frame, Any], None] | None = None,
    ) -> None:
        self.job = job
        self.settings = settings
        self.on_open = on_open
        self.on_frame = on_frame
        self.stats = RunStats()
        self.slots_name: str | None = None  # the shared-memory block of the last run, for diagnostics
        self._context = multiprocess.get_context("spawn")

    def run(self) -> RunStats:
        ctx = self._context
        self._source_events, source_send = ctx.Pipe(duplex=False)
        self._control = ctx.Queue()
        self._free = ctx.Queue()
        self._stop = ctx.Event()
        self._pool: WorkerPool | None = None
        self._slots: SharedSlots | None = None
        self._output = None
        self._pending: deque[Task] = deque()
        self._attempts: dict[int, int] = {}
        self._reorder: ReorderBuffer[tuple[Task, Any]] = ReorderBuffer()
        self._started = time.perf_counter()
        self._source_done = False
        self._source = ctx.Process(target=source_main, args=(self.job, self._control, self._free, source_send, self._stop),
                                   name="vidparse-source", daemon=True)
        with _thread_environment(1):
            self._source.start()
        source_send.close()
        clean = False
        try:
            self._start(self._wait_for_open())
            self._drain()
            clean = True
        except WorkerStartError as exc:
            raise PipelineError(str(exc), hint="out of memory? try fewer --workers") from None
        finally:
            self._shutdown(clean)
            self.stats.wall_s = time.perf_counter() - self._started
        return self.stats

    def _wait_for_open(self) -> Any:
        while not isinstance(message := self._next_event(), Opened):
            pass
        return message.info

    def _start(self, info: Any) -> None:
        self._slots = SharedSlots(self.job.slot_layout(info), self.settings.slot_count)
        self.slots_name = self._slots.handle.name
        for slot in range(self.settings.slot_count):
            self._free.put(slot)
        self._output = self.job.make_output(info)
        self._output.open()

        def spawn(start: Callable[[], None]) -> None:
            with _thread_environment(self.settings.threads):
                start()

        self._pool = WorkerPool(self._context, self.job, self.settings.workers, self.settings.threads,
                                self._slots.handle, self.settings.frame_timeout_s, spawn)
        self._control.put(self._slots.handle)
        if self.on_open:
            self.on_open(info)

    def _drain(self) -> None:
        """Dispatch, supervise and write until the source is done and every frame it sent is written."""
        total: int | None = None
        while total is None or self.stats.frames < total:
            try:
                message = self._next_event()
                if isinstance(message, Task):
                    self._pending.append(message)
                elif isinstance(message, Done):
                    self._source_done = True
                    total = message.frames
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
                while self._pending and self._pool.has_capacity():
                    self._pool.dispatch(self._pending.popleft())
            except KeyboardInterrupt:
                if self.stats.interrupted:
                    raise
                self.stats.interrupted = True
                self._stop.set()
                log.warning("interrupted: finishing the frames in flight (press Ctrl-C again to stop at once)")

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

    def _deliver(self, task: Task, result: Any) -> None:
        self._attempts.pop(task.seq, None)
        for ready_task, ready_result in self._reorder.push(task.seq, (task, result)):
            self._write(ready_task, ready_result)

    def _write(self, task: Task, result: Any) -> None:
        frame = Frame(seq=task.seq, pts=task.pts, time_base=task.time_base, image=self._slots.view(task.slot, "image"))
        self._output.write(frame, self._slots.view(task.slot, "labels"), result)
        self._free.put(task.slot)
        for stage, seconds in result.timings.items():
            self.stats.stage_s[stage] += seconds
        self.stats.frames += 1
        if self.stats.frames == 1:
            self.stats.startup_s = time.perf_counter() - self._started
        if self.on_frame:
            self.on_frame(frame, result)

    def _next_event(self) -> Any:
        """The next message from a child, or ``None`` after a quiet poll interval or a worker's pipe closing.

        Raises what a child reported, or a source crash nobody reported.
        """
        workers = self._pool.connections() if self._pool is not None else {}
        sources = [] if self._source_done else [self._source_events]
        ready = multiprocess.connection.wait([*sources, *workers], timeout=POLL_S)
        if not ready:
            self._check_source()
            return None
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
        self._control.put(None)  # releases a source still waiting for its slots
        try:
            if self._output is not None:
                self._output.close()
        finally:
            if self._pool is not None:
                self.stats.worker_restarts = self._pool.restarts
                self._pool.stop(JOIN_TIMEOUT_S if clean else 0.0)
            self._source.join(timeout=JOIN_TIMEOUT_S if clean else 0.0)
            if self._source.is_alive():
                self._source.kill()
                self._source.join(timeout=JOIN_TIMEOUT_S)
            if self._slots is not None:
                self._slots.close()
