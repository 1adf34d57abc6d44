"""Which waiting frame goes to the workers next, across streams; and what happens to a frame that failed."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from vidparse.pipeline.messages import FrameKey, Task
from vidparse.pipeline.session import StreamSession
from vidparse.pipeline.workers import WorkerPool

MAX_ATTEMPTS = 2  # a frame is parsed at most twice; then it is written unannotated


class Scheduler:
    def __init__(self, pool: WorkerPool) -> None:
        self._pool = pool
        self._attempts: dict[FrameKey, int] = {}
        self._turn = 0  # which stream is offered the first free worker next time

    def dispatch(self, sessions: Sequence[StreamSession]) -> None:
        """Hand waiting frames to workers, one stream after the other in turn, each stream's in order. A frame whose
        group's worker is full waits without holding back the frames after it."""
        if not self._pool.has_capacity() or not sessions:
            return
        start = self._turn % len(sessions)
        self._turn += 1
        order = [*sessions[start:], *sessions[:start]]
        held: dict[int, deque[Task]] = {session.stream: deque() for session in order}
        progress = True
        while progress:
            progress = False
            for session in order:
                while session.pending:
                    task = session.pending.popleft()
                    if self._pool.dispatch(task):
                        session.dispatched(task)
                        progress = True
                        break
                    held[session.stream].append(task)
        for session in order:
            session.pending.extendleft(reversed(held[session.stream]))

    def parsed(self, key: FrameKey) -> None:
        self._attempts.pop(key, None)

    def retry_or_give_up(self, session: StreamSession, task: Task) -> None:
        attempts = self._attempts.get(task.key, 0) + 1
        if attempts < MAX_ATTEMPTS:
            self._attempts[task.key] = attempts
            session.stats.retried_frames += 1
            session.wait_again(task)
            return
        self._attempts.pop(task.key, None)
        session.give_up(task, attempts)

    def forget(self, stream: int) -> None:
        for key in [key for key in self._attempts if key.stream == stream]:
            del self._attempts[key]
