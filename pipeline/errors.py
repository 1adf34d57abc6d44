"""The engine's own user-facing error, and what a child process reported."""

from __future__ import annotations

from typing import NoReturn

from vidparse.errors import VidparseError
from vidparse.pipeline.messages import Failed


class PipelineError(VidparseError):
    exit_code = 7


def raise_failure(message: Failed) -> NoReturn:
    """Raise what a child reported: its own user-facing error, or a pipeline error naming where it failed."""
    if isinstance(message.error, VidparseError):
        raise message.error
    raise PipelineError(f"{message.where} failed: {message.error}",
                        hint="this is a bug or a broken model; run with --verbose for details")


class EngineEndedError(PipelineError):
    """A stream was added to an engine that has ended (`Engine.add_source`), or was still waiting to start when
    the engine ended."""
