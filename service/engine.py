"""The service's one engine: one worker pool for every job and live stream, for the life of the server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from vidparse.config import Config
from vidparse.jobs import ParserSpec, StreamSpec, add_stream, build_engine
from vidparse.pipeline.cpus import threads_per_worker
from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.errors import EngineEndedError
from vidparse.pipeline.stats import RunStats
from vidparse.pipeline.writer import Subscriber

log = logging.getLogger(__name__)

STOP_TIMEOUT_S = 8.0


class EngineHost:
    """Starts the engine at once (streams come and go; it never ends by itself). A failing stream ends alone; should
    a failure of every stream's concern end the engine (a worker that cannot load its models), the next job or
    stream gets a fresh one."""

    def __init__(self, config: Config, parser: ParserSpec) -> None:
        self.config = config
        self.parser = parser
        self.threads = threads_per_worker(config.worker_count, config.threads)
        self._lock = threading.Lock()
        self._engine: Engine | None = None

    def _current(self) -> Engine:
        if self._engine is None or not self._engine.running:
            if self._engine is not None:
                log.warning("the engine ended; starting a fresh one")
            # Live streams share the pool: one frame per worker at a time keeps their latency low.
            self._engine = build_engine(self.config, live=True, until_idle=False, parser=self.parser)
            self._engine.start()
        return self._engine

    @property
    def running(self) -> bool:
        engine = self._engine
        return engine is not None and engine.running

    def start(self) -> None:
        with self._lock:
            self._current()

    def add(self, spec: StreamSpec, subscribers: list[Subscriber], on_open: Callable[[Any], None],
            on_end: Callable[[StreamEnd], None],
            on_connecting: Callable[[RunStats], None] | None = None) -> tuple[Engine, int]:
        """Add a stream; ``on_end`` gets its `StreamEnd`, whatever ends it; ``on_connecting`` each failed attempt
        to connect (or reconnect) of a live input."""
        def added(engine: Engine) -> tuple[Engine, int]:
            return engine, add_stream(engine, spec, subscribers, on_open=on_open, on_end=on_end,
                                      on_connecting=on_connecting)

        with self._lock:
            try:
                return added(self._current())
            except EngineEndedError:  # it ended since `_current` looked: the stream goes to a fresh one
                return added(self._current())

    @staticmethod
    def remove(engine: Engine, stream: int) -> None:
        """Stop one stream of ``engine`` (the one `add` returned): frames in flight are finished and written."""
        engine.remove_source(stream)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """Finish the frames in flight and close every output (playable files); abort what takes longer."""
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is None:
            return
        engine.stop()
        try:
            if not engine.join(timeout):
                log.warning("the engine did not stop within %.0f s; aborting", timeout)
                engine.abort()
                engine.join(timeout)
        except Exception as exc:  # the server is going down: a stream's failure is only worth a line
            log.warning("the engine ended with an error: %s", exc)
