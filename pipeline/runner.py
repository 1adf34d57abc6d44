"""One stream on an engine of its own: what bench, tune and a batch segment use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from vidparse.pipeline.contracts import OnOpen, StreamFactory
from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.settings import StreamSettings
from vidparse.pipeline.stats import RunStats
from vidparse.pipeline.writer import Subscriber, Written


class Runner:
    """``engine`` (not started, no streams yet) runs ``stream`` (the input, its slot layout and output) alone.
    `run`, `stop` (any thread, e.g. a subscriber); `results` iterates copies."""

    def __init__(self, engine: Engine, stream: StreamFactory, settings: StreamSettings,
                 on_open: OnOpen | None = None, subscribers: list[Subscriber] | None = None) -> None:
        self.engine = engine
        self.stream = stream
        self.settings = settings
        self.on_open = on_open
        self.subscribers = list(subscribers or [])
        self.end: StreamEnd | None = None  # how the stream ended, once it has

    @property
    def stats(self) -> RunStats:
        return self.end.stats if self.end is not None else RunStats()

    @property
    def output(self) -> Any:
        """The stream's output stage, once the run ended (also after a failure); None if its input never opened."""
        return self.end.output if self.end is not None else None

    @property
    def slots_name(self) -> str | None:
        """The stream's shared-memory block, for diagnostics."""
        return self.end.slots_name if self.end is not None else None

    def _add(self) -> None:
        self.engine.add_source(self.stream, self.settings, self.subscribers, on_open=self.on_open, on_end=self._end)

    def _end(self, end: StreamEnd) -> None:
        self.end = end

    def _raise(self) -> None:
        if self.end is not None and self.end.error is not None:
            raise self.end.error

    def stop(self) -> None:
        self.engine.stop()

    def run(self) -> RunStats:
        """Run to the end and raise what stopped the stream; a KeyboardInterrupt meanwhile (second Ctrl-C) aborts
        the run and is raised."""
        self._add()
        self.engine.run()
        self._raise()
        return self.stats

    def results(self) -> Iterator[Written]:
        """Run, yielding a copy of every frame as it is written."""
        results = self.engine.results()
        self._add()
        self.engine.start()
        yield from results
        self._raise()
