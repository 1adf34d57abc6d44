"""Ctrl-C, SIGTERM and SIGHUP (a closed terminal, a dropped SSH session) for commands that run the engine: the first
asks for a graceful stop, the second aborts."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from vidparse.pipeline.spawning import STOP_SIGNALS

log = logging.getLogger(__name__)


@dataclass
class Signals:
    received: bool = False


@contextmanager
def stop_on_signals(stop: Callable[[], None], doing: str = "finishing the frames in flight") -> Iterator[Signals]:
    """The first of `STOP_SIGNALS` calls ``stop`` (which does what ``doing`` says, logged); the second raises
    KeyboardInterrupt at once. Outside the main thread, signals are left alone."""
    signals = Signals()
    if threading.current_thread() is not threading.main_thread():
        yield signals
        return

    def request_stop(signum: int, frame: Any) -> None:
        if signals.received:
            raise KeyboardInterrupt
        signals.received = True
        again = "press Ctrl-C again" if signum == signal.SIGINT else f"send {signal.Signals(signum).name} again"
        log.warning("interrupted: %s (%s to stop at once)", doing, again)
        stop()

    previous = {sig: signal.signal(sig, request_stop) for sig in STOP_SIGNALS}
    try:
        yield signals
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
