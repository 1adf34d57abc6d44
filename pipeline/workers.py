"""The parser worker processes: start them, hand them frames, notice when one dies or hangs, replace it."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vidparse.pipeline.messages import Task
from vidparse.pipeline.processes import logging_levels, worker_main
from vidparse.pipeline.slots import SlotsHandle

log = logging.getLogger(__name__)

GROUP_OWNERS_KEPT = 256  # recent groups whose worker is remembered; a group is done long before it falls out


@dataclass
class Lost:
    """Frames a dead or hung worker held: ``current`` was being parsed, ``waiting`` never started."""

    worker: int
    reason: str
    current: Task | None
    waiting: list[Task]


@dataclass
class _Worker:
    index: int
    process: Any
    inbox: Any  # main's sending end of the worker's task pipe
    events: Any  # main's receiving end of the worker's result pipe
    in_flight: deque[Task] = field(default_factory=deque)
    ready: bool = False
    busy_since: float | None = None  # when the frame at the head of in_flight started (for hang detection)


class WorkerPool:
    def __init__(self, context: Any, job: Any, count: int, threads: int, slots: SlotsHandle,
                 frame_timeout_s: float, spawn: Callable[[Callable[[], None]], None], prefetch: int = 2,
                 group_size: int = 1) -> None:
        self._context = context
        self._job = job
        self._threads = threads
        self._slots = slots
        self._frame_timeout_s = frame_timeout_s
        self._spawn = spawn  # runs a start-up callable with the worker thread environment applied
        # Frames handed to a worker at once: two keep it busy while the main process is elsewhere.
        self._prefetch = prefetch
        self._group_size = group_size
        self._group_owner: dict[int, int] = {}  # group number -> worker index
        self._workers = [self._start(i) for i in range(count)]

    def _start(self, index: int) -> _Worker:
        inbox_receive, inbox_send = self._context.Pipe(duplex=False)
        events_receive, events_send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=worker_main,
            args=(self._job, index, self._threads, self._slots, inbox_receive, events_send, logging_levels()),
            name=f"vidparse-worker-{index}",
            daemon=True,
        )
        self._spawn(process.start)
        inbox_receive.close()  # the child has its own copies; closing ours lets a dead child show up as EOF
        events_send.close()
        return _Worker(index, process, inbox_send, events_receive)

    def connections(self) -> dict[Any, int]:
        """The result pipes to wait on, mapped to their worker's index."""
        return {worker.events: worker.index for worker in self._workers}

    def mark_ready(self, index: int) -> None:
        worker = self._workers[index]
        worker.ready = True
        if worker.in_flight and worker.busy_since is None:
            worker.busy_since = time.monotonic()

    def slots_in_use(self) -> set[int]:
        return {task.slot for worker in self._workers for task in worker.in_flight}

    def has_capacity(self) -> bool:
        return any(len(w.in_flight) < self._prefetch for w in self._workers)

    def dispatch(self, task: Task) -> bool:
        """Send a frame to a worker with room: its group's worker if the group has one. False: no room now."""
        group = task.seq // self._group_size
        owner = self._group_owner.get(group) if self._group_size > 1 else None
        if owner is not None:
            worker = self._workers[owner]
        else:
            worker = min(self._workers, key=lambda w: (len(w.in_flight), not w.ready, w.index))
        if len(worker.in_flight) >= self._prefetch:
            return False
        if self._group_size > 1 and owner is None:
            self._group_owner[group] = worker.index
            if len(self._group_owner) > GROUP_OWNERS_KEPT:
                del self._group_owner[next(iter(self._group_owner))]
        if worker.ready and not worker.in_flight:
            worker.busy_since = time.monotonic()
        worker.in_flight.append(task)
        worker.inbox.send(task)
        log.debug("frame %d -> worker %d (holds %s)", task.seq, worker.index, [t.seq for t in worker.in_flight])
        return True

    def finished(self, index: int, seq: int) -> None:
        worker = self._workers[index]
        if not worker.in_flight or worker.in_flight[0].seq != seq:
            log.debug("ignored a late result for frame %d from worker %d", seq, index)
            return  # a result from a worker that was already given up on (hung, then answered)
        worker.in_flight.popleft()
        worker.busy_since = time.monotonic() if worker.in_flight else None

    def wait_for_exit(self, index: int) -> None:
        """A worker's pipe closed: give its process a moment to be reaped so ``check`` sees the exit code."""
        self._workers[index].process.join(timeout=5)

    def check(self) -> list[Lost]:
        """Replace workers that died or hang on a frame; return what they held."""
        lost = []
        now = time.monotonic()
        for i, worker in enumerate(self._workers):
            if worker.process.exitcode == 0:
                continue  # a clean exit: asked to stop, or it reported a start-up failure itself
            if worker.process.exitcode is not None:
                reason = f"died (exit code {worker.process.exitcode})"
            elif worker.busy_since is not None and now - worker.busy_since > self._frame_timeout_s:
                reason = f"hung for more than {self._frame_timeout_s:g} s on frame {worker.in_flight[0].seq}"
                worker.process.kill()
                worker.process.join(timeout=5)
            else:
                continue
            if not worker.ready:
                raise WorkerStartError(f"{worker.process.name} {reason} while loading its models")
            worker.inbox.close()
            worker.events.close()
            held = list(worker.in_flight)
            lost.append(Lost(i, reason, held[0] if held else None, held[1:]))
            log.warning("%s %s; starting a replacement", worker.process.name, reason)
            self._workers[i] = self._start(i)
        return lost

    def stop(self, wait_s: float) -> None:
        """Ask every worker to finish (after ``wait_s`` at most), then kill the ones still running."""
        for worker in self._workers:
            if worker.process.exitcode is None:
                try:
                    worker.inbox.send(None)
                except OSError:  # the worker is gone already
                    pass
        deadline = time.monotonic() + wait_s
        for worker in self._workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=5)
            worker.inbox.close()
            worker.events.close()


class WorkerStartError(RuntimeError):
    pass
