"""Child processes that start from the package, never from the user's program.

``spawn`` starts a fresh interpreter and, before it unpickles the process object, re-runs the parent's main module
(``spawn.get_preparation_data`` sends ``init_main_from_path`` or ``init_main_from_name``; the child's
``spawn.prepare`` imports it as ``__mp_main__``). A script without an ``if __name__ == "__main__":`` guard then
starts the engine again inside every child, which dies while bootstrapping; ``python -`` sends ``<stdin>`` as the
path, which the child cannot open; a notebook's kernel module is imported into every child.

The engine's children need none of it: their targets live in `vidparse.pipeline.processes` and their arguments
are the package's specs. (``multiprocess`` pickles with dill: a class defined in ``__main__`` travels by value, and
with ``dill.settings["recurse"]`` the ``__main__`` globals its methods use go with it; `tests/faulty_run.py`.)
So the processes of `package_context` are launched with preparation data that names no main module: they start
from ``multiprocess.spawn.spawn_main`` and import only what unpickling their target and arguments needs.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from multiprocess import context as mp_context
from multiprocess import popen_spawn_posix, resource_tracker, spawn

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # a terminal's or a service manager's stop
MAIN_KEYS = ("init_main_from_path", "init_main_from_name")

_launching = threading.local()  # set while this thread launches one of the package's processes
_parent_preparation_data = spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    """``spawn.get_preparation_data``, less the main module for the package's own processes (other processes of
    the same program, the user's included, are launched as ``multiprocess`` always did)."""
    data: dict[str, Any] = _parent_preparation_data(name)
    if getattr(_launching, "active", False):
        for key in MAIN_KEYS:
            data.pop(key, None)
    return data


@contextmanager
def stop_signals_held() -> Iterator[None]:
    """Stop signals wait until the block ends, and the processes launched meanwhile start with them blocked: one sent
    to the process group while such a child imports waits until the child has chosen what to do with it
    (`processes.leave_signals_to_the_main_process`). In the main thread the handlers wait too: the kernel may give
    the signal to another thread, and a KeyboardInterrupt raised mid-launch would leave the child without its
    instructions (an EOFError traceback); a signal that came is handled as the block ends."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    came: list[tuple[int, Any]] = []
    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda signum, frame: came.append((signum, frame))) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        for signum, frame in came:  # as they came (a handler that raises ends the replay)
            handler = previous[signum]
            if callable(handler):
                handler(signum, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(signum)


def start_resource_tracker() -> None:
    """Start multiprocess's resource tracker (once) with every stop signal blocked: it ignores SIGINT and SIGTERM, and
    a SIGHUP to the process group (a closed terminal) would otherwise kill it and leak the shared memory it tracks."""
    with stop_signals_held():
        resource_tracker.ensure_running()


class _Popen(popen_spawn_posix.Popen):
    def _launch(self, process_obj: Any) -> None:
        start_resource_tracker()  # first: starting it unblocks SIGINT and SIGTERM in this thread
        _launching.active = True
        try:
            with stop_signals_held():
                super()._launch(process_obj)
        finally:
            _launching.active = False


class PackageProcess(mp_context.SpawnProcess):
    """A spawned process that does not import the parent's ``__main__``."""

    @staticmethod
    def _Popen(process_obj: Any) -> _Popen:
        return _Popen(process_obj)


class PackageContext(mp_context.SpawnContext):
    Process = PackageProcess


def package_context() -> PackageContext:
    """The context the engine starts its workers and sources with (pipes, shared values, processes)."""
    spawn.get_preparation_data = _preparation_data  # popen_spawn_posix looks it up on the module at each launch
    start_resource_tracker()  # before any shared memory is made: the blocks register with it
    return PackageContext()
