"""What travels through the queues: small records, never frames."""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from vidparse.pipeline.slots import SlotsHandle


@dataclass(frozen=True, order=True)
class FrameKey:
    """A frame's identity in a pool shared by several streams."""

    stream: int
    seq: int


@dataclass(frozen=True)
class Task:
    """A decoded frame waiting in slot ``slot`` of the shared-memory block ``block`` (attached by its name)."""

    key: FrameKey
    slot: int
    block: SlotsHandle
    pts: int | None
    time_base: Fraction
    decode_s: float
    captured_at: float | None = None  # wall-clock time the source got the frame (live latency)
    # Frames of one group go to one worker, in order, so the parser can carry state between them (keyframe mode);
    # None: no fixed groups (frames may be dropped), a worker carries from the frame before on its stream.
    group: int | None = None
    reconnects: int = 0  # live: reconnects of this source process so far
    # (rows, columns) at the slot's top left that hold the frame, when fewer than the slot's: the parser is given
    # only those, and its outputs are zero elsewhere
    picture: tuple[int, int] | None = None

    @property
    def seq(self) -> int:
        return self.key.seq

    @property
    def stream(self) -> int:
        return self.key.stream


@dataclass(frozen=True)
class Opened:
    info: Any  # the source's stream description, opaque to the pipeline


@dataclass(frozen=True)
class Connecting:
    """A live source could not connect (or reconnect) and waits before its next attempt; ``attempt`` counts the
    failures in a row, ``reason`` is the last one's."""

    attempt: int
    reason: str


@dataclass(frozen=True)
class Done:
    """The source has no more frames; ``frames`` were sent in all."""

    frames: int
    skipped_packets: int


@dataclass(frozen=True)
class Ready:
    """Worker ``worker`` has loaded its models and waits for frames."""

    worker: int


@dataclass(frozen=True)
class Parsed:
    task: Task
    result: Any  # the stage's per-frame result object, opaque to the pipeline
    worker: int


@dataclass(frozen=True)
class FrameFailed:
    """The stage raised on one frame; the worker lives on."""

    task: Task
    error: str
    worker: int


@dataclass(frozen=True)
class Forget:
    """Tells a worker that a stream ended: drop its slot block and whatever state the parser kept for it."""

    stream: int
    block: str


@dataclass(frozen=True)
class Failed:
    """A child cannot go on (bad input, model that will not load); ``error`` is the exception or its text."""

    where: str
    error: BaseException


def send(connection: Any, message: Any) -> None:
    """Send a message down a pipe, pickled by the standard library: multiprocess's own pickling (dill, pure Python)
    is about 20 times slower on these small records, and every frame crosses three pipes."""
    connection.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


def receive(connection: Any) -> Any:
    """A message sent with `send` (blocks until one comes)."""
    return pickle.loads(connection.recv_bytes())
