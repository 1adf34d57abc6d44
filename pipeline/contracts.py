"""What the engine calls, as typed contracts: the specs it is given, the stages they make, and the callbacks.

The engine never looks inside a frame: a stream's input description (``info``) is opaque to it, and the arrays it
moves are named in the stream's `SlotLayout`. `jobs.ParserSpec` and `jobs.StreamSpec` are the real ones; tests use
trivial ones (`tests/test_pipeline.py`). Structural (`typing.Protocol`): nothing inherits from these.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.messages import FrameKey
from vidparse.pipeline.slots import SlotLayout
from vidparse.pipeline.stats import RunStats
from vidparse.stages.types import Frame, FrameResult


class ParserStage(Protocol):
    """The per-frame work in a worker: named output arrays (as in the stream's `SlotLayout`) and a result."""

    def open(self) -> None: ...

    def process(self, image: np.ndarray, key: FrameKey, group: int | None
                ) -> tuple[dict[str, np.ndarray], FrameResult]: ...

    def forget(self, stream: int) -> None: ...

    def close(self) -> None: ...


class ParserFactory(Protocol):
    """What every worker is given (pickled once into each): it makes the worker's stage."""

    def make_parser(self, threads: int) -> ParserStage: ...


class FrameSource(Protocol):
    """Decodes one input in the stream's source process."""

    skipped_packets: int

    def open(self) -> Any: ...  # the input's description (``info``), opaque to the engine

    def frames(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...


class SourceFactory(Protocol):
    """What a stream's source process is given (pickled): ``on_attempt(failures, reason)`` hears of each failed
    connection of a live input; ``resume_at`` is where a replacement for a stalled source starts."""

    def make_source(self, stop: Any, on_attempt: Callable[[int, str], None] | None = None,
                    resume_at: int = 0) -> FrameSource: ...


class ComposedFrame(Protocol):
    """A frame an output composed: what its subscribers see."""

    frame: Frame
    labels: np.ndarray
    annotated: np.ndarray


class StreamOutput(Protocol):
    """Where a stream's frames go, in order: measured, composed and emitted, each on a writer thread of its own."""

    @property
    def paths(self) -> list[Path]: ...

    def open(self) -> None: ...

    # what compose needs of the frame and its parser arrays (its motion), a step ahead
    def measure(self, frame: Frame, arrays: dict[str, np.ndarray]) -> Any: ...

    def compose(self, frame: Frame, arrays: dict[str, np.ndarray], result: FrameResult,
                measured: Any) -> ComposedFrame: ...

    def emit(self, composed: Any) -> None: ...  # what ``compose`` made

    def stopped_early(self) -> None: ...  # the stream was stopped before its input ended (Ctrl-C, a removal)

    def close(self) -> None: ...


class StreamFactory(Protocol):
    """One input and its output, in the main process."""

    def source_spec(self) -> SourceFactory: ...

    def slot_layout(self, info: Any) -> SlotLayout: ...

    def make_output(self, info: Any) -> StreamOutput: ...


OnOpen = Callable[[Any], None]  # the input opened: its description (hub thread)
OnEnd = Callable[[StreamEnd], None]  # how the stream ended (its closing thread)
OnConnecting = Callable[[RunStats], None]  # a live input failed to connect: ``stats.connecting`` (hub thread)
