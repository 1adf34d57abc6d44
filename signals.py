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


@contextmanager
def interrupted_by_stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt as Ctrl-C does, for a command that stops at once on Ctrl-C with
    its processes (by Python's default they end the process alone, and its children run on); so does SIGINT where
    the process started with it ignored (a background job of a script). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.default_int_handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
