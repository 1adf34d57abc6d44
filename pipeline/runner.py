"""Runs a job: a source process, N parser worker processes, and ordered output in this process.

The runner moves slot numbers and small records; what a frame holds is the job's business.
"""

from __future__ import annotations

import logging
import os
import queue
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import multiprocess

from vidparse.errors import VidparseError
from vidparse.pipeline.messages import Done, Failed, Opened, Parsed
from vidparse.pipeline.processes import POLL_S, source_main, worker_main
from vidparse.pipeline.reorder import ReorderBuffer
from vidparse.pipeline.slots import SharedSlots, SlotLayout
from vidparse.stages.types import Frame

log = logging.getLogger(__name__)

THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")
JOIN_TIMEOUT_S = 5.0


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

    @property
    def slot_count(self) -> int:
        # Frames waiting for a worker, one being parsed per worker, and room for out-of-order results.
        return self.queue_size + 2 * self.workers


@dataclass
class RunStats:
    frames: int = 0
    skipped_packets: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0  # from start to the first frame written: processes, model loading, first parse
    interrupted: bool = False
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))

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
        self._context = multiprocess.get_context("spawn")

    def run(self) -> RunStats:
        ctx = self._context
        self._results = ctx.Queue()
        self._control = ctx.Queue()
        self._free = ctx.Queue()
        self._tasks = ctx.Queue(maxsize=self.settings.queue_size)
        self._stop = ctx.Event()
        self._workers: list[Any] = []
        self._slots: SharedSlots | None = None
        self._output = None
        started = time.perf_counter()
        self._source = ctx.Process(
            target=source_main,
            args=(self.job, self._control, self._free, self._tasks, self._results, self._stop, self.settings.workers),
            name="vidparse-source",
            daemon=True,
        )
        with _thread_environment(1):
            self._source.start()
        self._started = started
        clean = False
        try:
            info = self._wait_for_open()
            self._start(info)
            self._drain()
            clean = True
        finally:
            self._shutdown(clean)
            self.stats.wall_s = time.perf_counter() - started
        return self.stats

    def _wait_for_open(self) -> Any:
        while True:
            message = self._next_message()
            if isinstance(message, Opened):
                return message.info

    def _start(self, info: Any) -> None:
        self._slots = SharedSlots(self.job.slot_layout(info), self.settings.slot_count)
        for slot in range(self.settings.slot_count):
            self._free.put(slot)
        self._output = self.job.make_output(info)
        self._output.open()
        with _thread_environment(self.settings.threads):
            for index in range(self.settings.workers):
                worker = self._context.Process(
                    target=worker_main,
                    args=(self.job, index, self.settings.threads, self._slots.handle, self._tasks, self._results),
                    name=f"vidparse-worker-{index}",
                    daemon=True,
                )
                worker.start()
                self._workers.append(worker)
        self._control.put(self._slots.handle)
        if self.on_open:
            self.on_open(info)

    def _drain(self) -> None:
        """Write results in order until the source is done and every frame it sent is written."""
        reorder: ReorderBuffer[Parsed] = ReorderBuffer()
        total: int | None = None
        while total is None or self.stats.frames < total:
            try:
                message = self._next_message()
                if isinstance(message, Done):
                    total = message.frames
                    self.stats.skipped_packets = message.skipped_packets
                elif isinstance(message, Parsed):
                    for ready in reorder.push(message.task.seq, message):
                        self._write(ready)
            except KeyboardInterrupt:
                if self.stats.interrupted:
                    raise
                self.stats.interrupted = True
                self._stop.set()
                log.warning("interrupted: finishing the frames in flight (press Ctrl-C again to stop at once)")

    def _write(self, parsed: Parsed) -> None:
        assert self._slots is not None and self._output is not None
        task = parsed.task
        frame = Frame(seq=task.seq, pts=task.pts, time_base=task.time_base,
                      image=self._slots.view(task.slot, "image"))
        self._output.write(frame, self._slots.view(task.slot, "labels"), parsed.result)
        self._free.put(task.slot)
        for stage, seconds in parsed.result.timings.items():
            self.stats.stage_s[stage] += seconds
        self.stats.frames += 1
        if self.stats.frames == 1:
            self.stats.startup_s = time.perf_counter() - self._started
        if self.on_frame:
            self.on_frame(frame, parsed.result)

    def _next_message(self) -> Any:
        """The next message from a child; raises what a child reported, or a crash nobody reported."""
        while True:
            try:
                message = self._results.get(timeout=POLL_S)
            except queue.Empty:
                self._check_children()
                continue
            if isinstance(message, Failed):
                if isinstance(message.error, VidparseError):
                    raise message.error
                raise PipelineError(f"{message.where} failed: {message.error}",
                                    hint="this is a bug or a broken model; run with --verbose for details")
            return message

    def _check_children(self) -> None:
        if self._source.exitcode not in (None, 0):
            raise PipelineError(f"the source process died (exit code {self._source.exitcode})",
                                hint="the input may be damaged; run with --verbose for details")
        for worker in self._workers:
            if worker.exitcode not in (None, 0):
                raise PipelineError(f"{worker.name} died (exit code {worker.exitcode})",
                                    hint="out of memory? try fewer --workers or a smaller --max-frames")

    def _shutdown(self, clean: bool) -> None:
        """Finalize the output, then let children exit (after a clean run) or stop them (after a failure)."""
        self._stop.set()
        self._control.put(None)  # releases a source still waiting for its slots
        try:
            if self._output is not None:
                self._output.close()
        finally:
            for process in [self._source, *self._workers]:
                if clean:
                    process.join(timeout=JOIN_TIMEOUT_S)
                if process.is_alive():
                    process.terminate()
                process.join(timeout=JOIN_TIMEOUT_S)
            if self._slots is not None:
                self._slots.close()
