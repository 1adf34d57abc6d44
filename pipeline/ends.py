"""How a stream ended, decided once, by the engine, for everyone who reads it (`vidparse run`, the Python API, the
service, batch)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from vidparse.errors import VidparseError
from vidparse.pipeline.stats import RunStats

EndState = Literal["ok", "failed", "cancelled", "interrupted"]


@dataclass(frozen=True)
class StreamEnd:
    """``ok``: every frame the source gave was written and the output closed. ``failed``: ``error`` says why (the
    stream's own failure, its output failing at close, or what ended the whole engine). ``cancelled``: this stream
    alone was removed (`Engine.remove_source`). ``interrupted``: the engine was stopped or aborted (Ctrl-C, SIGTERM,
    a server shutting down, a loop left early) or ended before the stream could start. Cancelled and interrupted
    streams keep what they wrote. ``error`` is set exactly when the state is ``failed``."""

    stream: int
    state: EndState
    error: Exception | None = None
    stats: RunStats = field(default_factory=RunStats)
    output: Any = None  # the stream's output stage (its files), None when its input never opened
    slots_name: str | None = None  # the stream's shared-memory block, for diagnostics
    # failed with what ended the whole engine (its error, which whoever runs the engine says once for every stream)
    with_engine: bool = False

    def __post_init__(self) -> None:
        if (self.state == "failed") != (self.error is not None):
            raise ValueError(f"a {self.state} stream end with error {self.error!r}")

    @property
    def ok(self) -> bool:
        return self.state == "ok"

    @property
    def failed_alone(self) -> bool:
        """Failed of its own (the other streams may go on), not with the whole engine."""
        return self.error is not None and not self.with_engine

    @property
    def message(self) -> str | None:
        """The error in one line (a `VidparseError`'s message, else its type and text); None unless failed."""
        if self.error is None:
            return None
        return self.error.message if isinstance(self.error, VidparseError) else f"{type(self.error).__name__}: " \
            f"{self.error}"
