"""What travels through the queues: small records, never frames."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class Task:
    seq: int
    slot: int
    pts: int | None
    time_base: Fraction
    decode_s: float


@dataclass(frozen=True)
class Done:
    """The source has no more frames; ``frames`` were sent in all."""

    frames: int
    skipped_packets: int


@dataclass(frozen=True)
class Parsed:
    task: Task
    result: Any  # the stage's per-frame result object, opaque to the pipeline
    worker: int


@dataclass(frozen=True)
class Failed:
    """A stage raised in a child process; ``error`` is the exception (picklable) or its text."""

    where: str
    error: BaseException


@dataclass(frozen=True)
class Opened:
    info: Any  # the source's stream description, opaque to the pipeline
