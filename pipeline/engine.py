"""The engine: one worker pool shared by stream sessions, driven by the hub thread.

The hub thread waits on every pipe (each source's, each worker's, and a control pipe through which other threads
add or remove streams and ask for a stop), reads everything that is ready, supervises the workers and hands
waiting frames out. Ordered output runs in each stream's writer thread. The engine moves slot numbers and small
records; what a frame holds is the specs' business.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import replace
from typing import Any

import multiprocess.connection

from vidparse.pipeline.contracts import OnConnecting, OnEnd, OnOpen, ParserFactory, StreamFactory
from vidparse.pipeline.ends import EndState, StreamEnd
from vidparse.pipeline.errors import EngineEndedError, PipelineError, raise_failure
from vidparse.pipeline.messages import FrameFailed, Parsed, Ready, receive
from vidparse.pipeline.processes import POLL_S
from vidparse.pipeline.scheduler import Scheduler
from vidparse.pipeline.session import JOIN_TIMEOUT_S, StreamSession
from vidparse.pipeline.settings import MemoryBudget, PoolSettings, StreamSettings
from vidparse.pipeline.spawning import package_context
from vidparse.pipeline.stats import RunStats
from vidparse.pipeline.threads import thread_environment
from vidparse.pipeline.workers import Lost, WorkerPool, WorkerStartError
from vidparse.pipeline.writer import Subscriber, Written

log = logging.getLogger(__name__)

JOIN_POLL_S = 0.2  # `run` waits in short steps, so the caller's signal handlers run


class _Aborted(Exception):
    """Ends the hub loop at once (`Engine.abort`); not an error for whoever joins."""


class Engine:
    """``parser`` (``make_parser(threads)``; pickled to every worker) is shared by all streams. Streams are added
    with `add_source` and removed with `remove_source`, before or after `start`; with ``until_idle`` the engine
    ends when its last stream does, else when `stop` was called and its last stream ended. A stream that fails (its
    input unreachable, lost or damaged, its output not writable) ends alone: its session's ``error`` says why, and
    the others go on. Every stream added gets its `StreamEnd` through ``on_end``, and a stream's output is closed
    off the hub thread, so the other streams keep their pace meanwhile. Callbacks run in the hub thread
    (``on_open``), the stream's closing thread (``on_end``) or its writer thread (subscribers)."""

    def __init__(self, parser: ParserFactory, settings: PoolSettings, until_idle: bool = True) -> None:
        self.parser = parser
        self.settings = settings
        self.until_idle = until_idle
        self._context = package_context()  # children never import the caller's __main__
        self._sessions: dict[int, StreamSession] = {}
        self._on_end: dict[int, OnEnd | None] = {}
        self._next_stream = 0
        self._add_lock = threading.Lock()
        self._commands: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake_receive, self._wake_send = self._context.Pipe(duplex=False)
        self._wake_lock = threading.Lock()
        self._stopping = False
        self._aborting = threading.Event()  # set by `abort` in the caller's thread: nothing waits on a reader then
        self._ended = False  # the hub has left its loop: no stream can be added any more
        self._end_reason = "it ended"  # without an error: stopped, aborted, or its last stream ended
        self._error: BaseException | None = None
        self._callback_error: BaseException | None = None  # an on_end callback's own failure ends the engine
        self._closing: list[threading.Thread] = []  # streams whose outputs are being closed
        self._pool: WorkerPool | None = None
        self._budget = MemoryBudget(settings.max_memory_mb, settings.workers)
        self._subscribers: list[Subscriber] = []  # every stream's, after the stream's own
        self._after: list[Callable[[], None]] = []  # run when the hub has shut down
        self._hub_busy_s = 0.0  # the hub thread's time outside its wait for messages
        self._hub_busy_from: dict[int, float] = {}  # stream -> the hub's busy time when it was added
        self._thread = threading.Thread(target=self._hub, name="vidparse-hub", daemon=True)

    def add_source(self, spec: StreamFactory, settings: StreamSettings, subscribers: list[Subscriber] | None = None,
                   on_open: OnOpen | None = None, on_end: OnEnd | None = None,
                   on_connecting: OnConnecting | None = None) -> int:
        """Start a stream (its source opens in the hub thread; any thread may call this, also while the engine
        runs); returns its number. ``on_end`` gets its `StreamEnd` once its output is closed, also when the engine
        ends before the stream could start; ``on_connecting`` gets its statistics (``connecting``: attempts, why)
        in the hub thread each time a live input fails to connect. Raises `EngineEndedError` once the engine has
        ended."""
        with self._add_lock:  # counted after the command is queued: the hub never sees a stream it cannot find
            if self._ended:
                raise EngineEndedError(f"the engine has ended ({self._reason()}); stream not added",
                                       hint="start a new engine for new streams")
            stream = self._next_stream
            self._command("add", (stream, spec, settings, list(subscribers or []), on_open, on_connecting, on_end))
            self._next_stream = stream + 1
        return stream

    def remove_source(self, stream: int) -> None:
        """Stop one stream (any thread) as `stop` stops them all: frames in flight are finished and written; the
        other streams go on."""
        self._command("remove", stream)

    def start(self) -> None:
        # Before multiprocess's own exit handler (atexit runs the last registered first): that one would wait for
        # children which leave stop signals to this process, and a program that ends with the engine running (a
        # stream never closed) would never exit.
        atexit.register(self._abort_at_exit)
        self._thread.start()

    def _abort_at_exit(self) -> None:
        if self._thread.is_alive():
            log.warning("the program ends with vidparse still running: stopping it (close the stream to finish it)")
            self.abort()
            self._thread.join(JOIN_TIMEOUT_S)

    @property
    def running(self) -> bool:
        """Whether the hub runs: started, and not ended (by `stop`, `abort`, an error or its last stream). False
        from the moment it takes no more streams, while it may still be closing the last ones."""
        return self._thread.is_alive() and not self._ended

    def stop(self) -> None:
        """Stop reading every stream and finish the frames already being parsed (any thread)."""
        self._command("stop", None)

    def abort(self) -> None:
        """Stop at once: kill the processes, close the outputs without what was in flight; then `join`."""
        self._aborting.set()
        self._command("abort", None)

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the hub to end (True; False on timeout), without raising what ended it. An engine never started
        has nothing to wait for."""
        if self._thread.ident is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the hub to end (True) and raise what ended it; False on timeout."""
        if not self.wait(timeout):
            return False
        if self._error is not None:
            raise self._error
        return True

    def run(self) -> None:
        """`start`, then wait for the end in short steps (so the caller's signal handlers run) and raise what ended
        the engine; a KeyboardInterrupt meanwhile (a second Ctrl-C) aborts and is raised."""
        self.start()
        try:
            while not self.join(JOIN_POLL_S):
                pass
        except KeyboardInterrupt:
            self.abort()
            self.join()
            raise

    def results(self) -> Generator[Written, None, None]:
        """Copies of every frame any stream writes (the arrays outlive their slot), until the engine ends; then
        raises what ended it, as `join` does. Call before streams are added; leaving the loop early aborts."""
        items: queue.Queue[Written | None] = queue.Queue(maxsize=4)
        self._subscribers.append(lambda written, stats: self._offer(items, _copied(written)))
        self._after.append(lambda: self._offer(items, None))
        return self._iterate(items)

    def _offer(self, items: queue.Queue[Written | None], item: Written | None) -> None:
        """Put ``item`` for the reader of `results`, unless the engine is aborted meanwhile: a reader that stopped
        reading (a program ending, a loop closed from another thread) must not hold a writer, and so the hub."""
        while not self._aborting.is_set():
            try:
                items.put(item, timeout=POLL_S)
                return
            except queue.Full:
                continue

    def _iterate(self, items: queue.Queue[Written | None]) -> Generator[Written, None, None]:
        try:
            while True:
                try:
                    item = items.get(timeout=POLL_S)
                except queue.Empty:
                    if self.wait(0) and items.empty():  # ended, its last item dropped by an abort
                        break
                    continue
                if item is None:
                    break
                yield item
        finally:
            if self._thread.is_alive():  # the caller stopped early
                self.abort()
                self.wait()
        self.join()

    def _command(self, name: str, argument: Any) -> None:
        self._commands.put((name, argument))
        with self._wake_lock:
            if not self._wake_send.closed:  # after the hub ended, nothing is listening
                self._wake_send.send_bytes(b"!")

    def _hub(self) -> None:
        clean = False
        try:
            self._loop()
            clean = True
            self._end_reason = "it was stopped" if self._stopping else "its last stream ended"
        except _Aborted:
            self._end_reason = "it was aborted"
        except WorkerStartError as exc:
            self._error = PipelineError(str(exc), hint="out of memory? try fewer --workers")
        except BaseException as exc:  # handed to whoever joins
            self._error = exc
        finally:
            self._shutdown(clean)

    def _start_pool(self) -> WorkerPool:
        def spawn(start: Callable[[], None]) -> None:
            with thread_environment(self.settings.threads):
                start()

        return WorkerPool(self._context, self.parser, self.settings.workers, self.settings.threads,
                          self.settings.frame_timeout_s, spawn, self.settings.prefetch, self.settings.worker_niceness)

    def _loop(self) -> None:
        pool: WorkerPool | None = None  # started once the first stream is open (and its output with it)
        scheduler: Scheduler | None = None
        busy_since = time.perf_counter()
        # Streams are awaited until `stop`: always without ``until_idle``, else until the first one was added.
        while (self._sessions or not self._commands.empty()
               or not (self._stopping or (self.until_idle and self._next_stream > 0))):
            if self._callback_error is not None:
                raise self._callback_error
            if pool is None and any(session.opened for session in self._sessions.values()):
                pool = self._pool = self._start_pool()
                scheduler = Scheduler(pool)
            workers = pool.connections() if pool is not None else {}
            sources = {conn: s for s in self._sessions.values() if (conn := s.connection()) is not None}
            self._hub_busy_s += time.perf_counter() - busy_since
            ready = multiprocess.connection.wait([self._wake_receive, *sources, *workers], timeout=POLL_S)
            busy_since = time.perf_counter()
            for conn in ready:
                if conn is self._wake_receive:
                    self._run_commands()
                elif conn in sources:
                    self._guard(sources[conn], sources[conn].receive)
                elif pool is not None and scheduler is not None:  # a worker's pipe: workers come with the pool
                    self._receive_from_worker(pool, scheduler, conn, workers[conn])
            if not ready:
                for session in self._sessions.values():
                    self._guard(session, session.check_source)
            if pool is not None and scheduler is not None:
                for lost in pool.check():
                    self._requeue(scheduler, lost)
            for session in list(self._sessions.values()):
                self._guard(session, session.tick)
                if session.error is not None or session.finished:
                    self._end(scheduler, session, clean=session.error is None)
            if scheduler is not None:
                scheduler.dispatch([s for s in self._sessions.values() if s.opened])

    def _run_commands(self) -> None:
        while self._wake_receive.poll():
            self._wake_receive.recv_bytes()
        while not self._commands.empty():
            name, argument = self._commands.get()
            if name == "abort":
                raise _Aborted
            if name == "add":
                stream, spec, settings, subscribers, on_open, on_connecting, on_end = argument
                session = StreamSession(stream, spec, settings, self._context, self._budget,
                                        [*subscribers, self._every_stream], on_open, on_connecting)
                self._sessions[stream], self._on_end[stream] = session, on_end
                self._hub_busy_from[stream] = self._hub_busy_s
                if self._stopping:
                    session.interrupt()
            elif name == "stop":
                self._stopping = True
                for session in self._sessions.values():
                    session.interrupt()
            elif name == "remove" and argument in self._sessions:
                self._sessions[argument].interrupt(cancel=True)

    def _every_stream(self, written: Written, stats: RunStats) -> None:
        for subscriber in self._subscribers:
            subscriber(written, stats)

    def _receive_from_worker(self, pool: WorkerPool, scheduler: Scheduler, conn: Any, index: int) -> None:
        try:
            while conn.poll():
                message = receive(conn)
                if isinstance(message, Ready):
                    pool.mark_ready(message.worker)
                    continue
                if isinstance(message, (Parsed, FrameFailed)):
                    session = self._sessions.get(message.task.stream)
                    if not pool.finished(message.worker, message.task.key) or session is None:
                        continue
                    if isinstance(message, Parsed):
                        scheduler.parsed(message.task.key)
                        session.deliver(message.task, message.result)
                    else:
                        log.warning("frame %d failed in worker %d: %s", message.task.seq, message.worker,
                                    message.error)
                        scheduler.retry_or_give_up(session, message.task)
                else:
                    raise_failure(message)
        except (EOFError, OSError):
            pool.wait_for_exit(index)

    @staticmethod
    def _guard(session: StreamSession, call: Callable[[], None]) -> None:
        """Run a stream's own step; what it raises stops that stream alone (the hub ends it next)."""
        if session.error is not None:
            return
        try:
            call()
        except Exception as exc:
            log.info("stream %d failed: %s", session.stream, getattr(exc, "message", exc))
            session.error = exc

    def _requeue(self, scheduler: Scheduler, lost: Lost) -> None:
        """A worker was replaced: the restart counts in each stream that had a frame on it."""
        held = [task for task in (lost.current, *lost.waiting) if task is not None]
        for stream in {task.stream for task in held}:
            if (session := self._sessions.get(stream)) is not None:
                session.stats.worker_restarts += 1
        for task in reversed(lost.waiting):
            if (session := self._sessions.get(task.stream)) is not None:
                session.wait_again(task)
        if lost.current is not None and (session := self._sessions.get(lost.current.stream)) is not None:
            scheduler.retry_or_give_up(session, lost.current)

    def _end(self, scheduler: Scheduler | None, session: StreamSession, clean: bool) -> None:
        """Take a stream out of the hub; its output and source are closed on a thread of its own, so the other
        streams keep their pace while an encoder flushes or a file is remuxed."""
        del self._sessions[session.stream]
        session.stats.serial_s["hub"] = self._hub_busy_s - self._hub_busy_from.pop(session.stream)
        if self._pool is not None and session.slots is not None:
            self._pool.forget(session.stream, session.slots.handle.name)
        if scheduler is not None:
            scheduler.forget(session.stream)
        closing = threading.Thread(target=self._close, args=(session, clean, self._on_end.pop(session.stream)),
                                   name=f"vidparse-close-{session.stream}", daemon=True)
        self._closing = [thread for thread in self._closing if thread.is_alive()] + [closing]
        closing.start()

    def _close(self, session: StreamSession, clean: bool, on_end: OnEnd | None) -> None:
        """Close a stream (a failure doing so is that stream's error) and tell ``on_end`` how it ended."""
        try:
            session.close(clean)
        except Exception as exc:
            session.error = session.error or exc
        state, error = self._end_state(session)
        end = StreamEnd(session.stream, state, error, stats=session.stats, output=session.output,
                        slots_name=session.slots.handle.name if session.slots is not None else None,
                        with_engine=error is not None and error is self._error)
        self._call_on_end(on_end, end)

    def _end_state(self, session: StreamSession) -> tuple[EndState, Exception | None]:
        """The one place a stream's end is decided: its own error first (an output that fails at close included),
        then a stop asked for, then a clean end; a stream cut short otherwise ended with the engine."""
        if session.error is not None:
            return "failed", session.error
        if session.stats.interrupted:
            return ("cancelled" if session.cancelled else "interrupted"), None
        if session.finished:
            return "ok", None
        if isinstance(self._error, Exception):
            return "failed", self._error
        return "interrupted", None

    def _call_on_end(self, on_end: OnEnd | None, end: StreamEnd) -> None:
        if on_end is None:
            return
        try:
            on_end(end)
        except BaseException as exc:
            log.error("the end callback of stream %d failed: %s", end.stream, exc)
            self._callback_error = self._callback_error or exc

    def _reason(self) -> str:
        """Why the engine ended, in a few words."""
        if self._error is not None:
            return getattr(self._error, "message", None) or f"{type(self._error).__name__}: {self._error}"
        return self._end_reason

    def _shutdown(self, clean: bool) -> None:
        """Refuse new streams; streams still queued end at once (failed with the engine's error, else interrupted);
        finish every open stream's output; then let the workers exit (after a clean end) or stop them."""
        try:
            with self._add_lock:
                self._ended = True
            while not self._commands.empty():
                name, argument = self._commands.get()
                if name == "add":
                    stream, on_end = argument[0], argument[-1]
                    error = self._error if isinstance(self._error, Exception) else None
                    log.info("stream %d ended before it started: the engine ended (%s)", stream, self._reason())
                    self._call_on_end(on_end, StreamEnd(stream, "failed" if error else "interrupted", error,
                                                        with_engine=error is not None))
            for session in list(self._sessions.values()):
                self._end(None, session, clean)
            for closing in self._closing:
                closing.join()
            self._error = self._error or self._callback_error
        finally:
            if self._pool is not None:
                self._pool.stop(JOIN_TIMEOUT_S if clean else 0.0)
            with self._wake_lock:
                self._wake_receive.close()
                self._wake_send.close()
            for after in self._after:
                after()
            atexit.unregister(self._abort_at_exit)


def _copied(written: Written) -> Written:
    return replace(written, frame=replace(written.frame, image=written.frame.image.copy()),
                   labels=written.labels.copy(), annotated=written.annotated.copy())
