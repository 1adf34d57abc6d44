"""Ctrl-C and SIGTERM for commands that run the engine: the first asks for a graceful stop, the second aborts."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Signals:
    received: bool = False


@contextmanager
def stop_on_signals(stop: Callable[[], None]) -> Iterator[Signals]:
    """The first SIGINT or SIGTERM calls ``stop`` (frames in flight are finished and written); the second raises
    KeyboardInterrupt at once. Outside the main thread, signals are left alone."""
    signals = Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return

    def request_stop(signum: int, frame: Any) -> None:
        if signals.received:
            raise KeyboardInterrupt
        signals.received = True
        again = "press Ctrl-C again" if signum == signal.SIGINT else "send SIGTERM again"
        log.warning("interrupted: finishing the frames in flight (%s to stop at once)", again)
        stop()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield signals
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
