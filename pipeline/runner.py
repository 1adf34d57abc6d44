"""One stream on an engine of its own: what `vidparse run`, bench and tune use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from vidparse.pipeline.engine import Engine
from vidparse.pipeline.session import StreamSession
from vidparse.pipeline.settings import PoolSettings, StreamSettings
from vidparse.pipeline.stats import RunStats
from vidparse.pipeline.writer import Subscriber, Written


class Runner:
    """``parser`` is what the workers need (pickled to them), ``stream`` the input, its slot layout and output.
    `run`, `stop` (any thread, e.g. a subscriber); `results` iterates copies."""

    def __init__(self, parser: Any, stream: Any, pool: PoolSettings, settings: StreamSettings,
                 on_open: Callable[[Any], None] | None = None, subscribers: list[Subscriber] | None = None) -> None:
        self.engine = Engine(parser, pool)
        self.stream = stream
        self.settings = settings
        self.on_open = on_open
        self.subscribers = list(subscribers or [])
        self.stats = RunStats()
        self.output: Any = None  # the stream's output stage, once the run ended (also after a failure)
        self.slots_name: str | None = None  # the stream's shared-memory block, for diagnostics
        self.error: Exception | None = None  # what stopped the stream, raised by `join`

    def _add(self) -> None:
        self.engine.add_source(self.stream, self.settings, self.subscribers, on_open=self.on_open, on_end=self._end)

    def _end(self, session: StreamSession) -> None:
        self.stats, self.output, self.error = session.stats, session.output, session.error
        self.slots_name = session.slots.handle.name if session.slots is not None else None

    def stop(self) -> None:
        self.engine.stop()

    def run(self) -> RunStats:
        """Run to the end and raise what stopped the stream; a KeyboardInterrupt meanwhile (second Ctrl-C) aborts
        the run and is raised."""
        self._add()
        self.engine.run()
        if self.error is not None:
            raise self.error
        return self.stats

    def results(self) -> Iterator[Written]:
        """Run, yielding a copy of every frame as it is written."""
        results = self.engine.results()
        self._add()
        self.engine.start()
        yield from results
        if self.error is not None:
            raise self.error
