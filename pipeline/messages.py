"""What travels through the queues: small records, never frames."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class Task:
    """A decoded frame waiting in shared-memory slot ``slot``."""

    seq: int
    slot: int
    pts: int | None
    time_base: Fraction
    decode_s: float
    captured_at: float | None = None  # wall-clock time the source got the frame (live latency)


@dataclass(frozen=True)
class Opened:
    info: Any  # the source's stream description, opaque to the pipeline


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
class Failed:
    """A child cannot go on (bad input, model that will not load); ``error`` is the exception or its text."""

    where: str
    error: BaseException
