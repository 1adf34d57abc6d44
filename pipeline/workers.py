"""The parser worker processes: start them, hand them frames, notice when one dies or hangs, replace it."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vidparse.pipeline.contracts import ParserFactory
from vidparse.pipeline.messages import FrameKey, Forget, Task, send
from vidparse.pipeline.processes import logging_levels, worker_main

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
    """Parser processes shared by every stream. Frames are known by their `FrameKey`; a task names the slot block
    its frame is in, so streams can come and go while the workers run."""

    def __init__(self, context: Any, spec: ParserFactory, count: int, threads: int, frame_timeout_s: float,
                 spawn: Callable[[Callable[[], None]], None], prefetch: int = 2, niceness: int = 0) -> None:
        self._context = context
        self._spec = spec
        self._threads = threads
        self._frame_timeout_s = frame_timeout_s
        self._spawn = spawn  # runs a start-up callable with the worker thread environment applied
        # Frames handed to a worker at once: two keep it busy while the main process is elsewhere.
        self._prefetch = prefetch
        self._niceness = niceness
        self._group_owner: dict[tuple[int, int], int] = {}  # (stream, group) -> worker index
        self._workers = [self._start(i) for i in range(count)]

    def _start(self, index: int) -> _Worker:
        inbox_receive, inbox_send = self._context.Pipe(duplex=False)
        events_receive, events_send = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=worker_main,
            args=(self._spec, index, self._threads, inbox_receive, events_send, logging_levels(), self._niceness),
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

    def has_capacity(self) -> bool:
        return any(len(w.in_flight) < self._prefetch for w in self._workers)

    def dispatch(self, task: Task) -> bool:
        """Send a frame to a worker with room: its group's worker if the group has one. False: no room now."""
        group = None if task.group is None else (task.stream, task.group)
        owner = None if group is None else self._group_owner.get(group)
        if owner is not None:
            worker = self._workers[owner]
        else:
            worker = min(self._workers, key=lambda w: (len(w.in_flight), not w.ready, w.index))
        if len(worker.in_flight) >= self._prefetch:
            return False
        if group is not None and owner is None:
            self._group_owner[group] = worker.index
            if len(self._group_owner) > GROUP_OWNERS_KEPT:
                del self._group_owner[next(iter(self._group_owner))]
        if worker.ready and not worker.in_flight:
            worker.busy_since = time.monotonic()
        worker.in_flight.append(task)
        send(worker.inbox, task)
        log.debug("frame %s -> worker %d (holds %s)", task.key, worker.index, [t.seq for t in worker.in_flight])
        return True

    def finished(self, index: int, key: FrameKey) -> bool:
        """Worker ``index`` answered for ``key``; False for a late answer from a worker already given up on."""
        worker = self._workers[index]
        if not worker.in_flight or worker.in_flight[0].key != key:
            log.debug("ignored a late result for frame %s from worker %d", key, index)
            return False  # a result from a worker that was already given up on (hung, then answered)
        worker.in_flight.popleft()
        worker.busy_since = time.monotonic() if worker.in_flight else None
        return True

    def forget(self, stream: int, block: str) -> None:
        """A stream ended: its group owners go, and workers detach its slot block and drop its parser state."""
        for group in [group for group in self._group_owner if group[0] == stream]:
            del self._group_owner[group]
        for worker in self._workers:
            self._send(worker, Forget(stream, block))

    @staticmethod
    def _send(worker: _Worker, message: Any) -> None:
        try:
            send(worker.inbox, message)
        except OSError:  # the worker is gone; check() replaces it
            pass

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
                self._send(worker, None)
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
