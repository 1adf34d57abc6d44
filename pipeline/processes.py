"""Bodies of the child processes: the source (decode into slots) and the parser workers."""

from __future__ import annotations

import functools
import logging
import os
import pickle
import signal
import time
import traceback
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Callable

from vidparse.pipeline.messages import (Connecting, Done, Failed, FrameFailed, FrameKey, Forget, Opened, Parsed, Ready,
                                        Task, receive, send)
from vidparse.pipeline.slots import SharedSlots, SlotsHandle
from vidparse.pipeline.spawning import STOP_SIGNALS

if TYPE_CHECKING:
    from vidparse.pipeline.contracts import ParserFactory, SourceFactory

log = logging.getLogger(__name__)

POLL_S = 0.2


def _portable(error: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


@dataclass(frozen=True)
class Resume:
    """Where a replacement source process picks up: numbering after ``seq`` and timestamps after ``pts``
    (shifted by the wall-clock time since ``captured_at``, so an outage stays visible as a gap)."""

    seq: int
    pts: int
    captured_at: float
    time_base: Fraction


def leave_signals_to_the_main_process() -> None:
    """Ctrl-C, SIGTERM and SIGHUP reach a whole process group; the main process decides how its children stop (it
    asks a source to stop, and ends workers when it is done with them), so a child killed by them is not mistaken for
    a crash ("the source process died"). The child was launched with them blocked (`spawning`), so one that came
    while it started is dropped here rather than raised in the middle of its imports."""
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


def quiet_when_orphaned(main: Callable[..., None]) -> Callable[..., None]:
    """A child's ``main`` that ends without a traceback when its pipes to the main process break: that process is
    gone (killed, or ended by a signal its program left at Python's default), and nobody is left to read one."""
    @functools.wraps(main)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            main(*args, **kwargs)
        except (EOFError, BrokenPipeError, ConnectionResetError) as exc:
            log.debug("the main process is gone (%s): ending", type(exc).__name__)

    return run


def logging_levels() -> dict[str, int]:
    """This process's logging levels that children should keep: the root's and any set on vidparse loggers."""
    levels = {"": logging.getLogger().level}
    for name, logger in logging.Logger.manager.loggerDict.items():
        if name.startswith("vidparse") and isinstance(logger, logging.Logger) and logger.level != logging.NOTSET:
            levels[name] = logger.level
    return levels


def configure_logging(levels: dict[str, int], name: str) -> None:
    """Spawned children start with no logging set up: mirror the parent's levels, timestamped, on stderr."""
    logging.basicConfig(level=levels.get("", logging.WARNING), force=True,
                        format=f"%(asctime)s %(levelname)-7s {name}: %(message)s", datefmt="%H:%M:%S")
    for name, level in levels.items():
        if name:
            logging.getLogger(name).setLevel(level)


class StopFlag:
    """A stop signal shared with child processes without a lock: a process killed while reading it cannot
    leave anything held (a multiprocessing Event's lock could be)."""

    def __init__(self, context: Any) -> None:
        self._value = context.RawValue("b", 0)

    def set(self) -> None:
        self._value.value = 1

    def is_set(self) -> bool:
        return bool(self._value.value)

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(min(0.05, max(0.0, deadline - time.monotonic())) if deadline else 0.05)
        return True


@quiet_when_orphaned
def source_main(source_spec: SourceFactory, stream: int, inbox: Any, events: Any, stop: StopFlag,
                log_levels: dict[str, int], resume: Resume | None = None) -> None:
    """Decode frames into free slots and announce each one, in order, on ``events``.

    ``inbox`` and ``events`` are this process's own pipes: the main process sends the slots handle first, then
    the number of each slot that becomes free. A source killed at any moment leaves no shared lock held. The
    frame goes into the layout's first array.
    """
    leave_signals_to_the_main_process()
    configure_logging(log_levels, f"source {stream}")  # the stream's number, as the main process's lines say
    next_seq = resume.seq + 1 if resume else 0
    source = source_spec.make_source(stop, lambda attempt, reason: send(events, Connecting(attempt, reason)),
                                     next_seq)
    pts_shift: int | None = None if resume else 0
    slots: SharedSlots | None = None
    try:
        info = source.open()
        send(events, Opened(info))
        handle: SlotsHandle | None = receive(inbox)
        if handle is None:
            return
        slots = SharedSlots.attach(handle)
        frames = source.frames()
        while not stop.is_set():
            started = time.perf_counter()
            frame = next(frames, None)
            if frame is None:
                break
            decode_s = time.perf_counter() - started
            captured_at = frame.captured_at or time.time()
            if pts_shift is None:
                assert resume is not None
                if not info.live:  # a file picks up exactly where the stalled process left it (it seeks there)
                    if frame.seq <= resume.seq:  # a source that could not start there itself
                        continue
                    pts_shift = 0
                else:  # a live stream starts a new timeline: continue after the last frame, keeping the gap
                    gap = round((captured_at - resume.captured_at) / resume.time_base)
                    pts_shift = resume.pts + max(1, gap) - (frame.pts or 0)
            slot = _take_slot(inbox, stop)
            if slot is None:
                break
            slots.view(slot, handle.layout.input)[:] = frame.image
            pts = None if frame.pts is None else frame.pts + pts_shift
            send(events, Task(key=FrameKey(stream, next_seq), slot=slot, block=handle, pts=pts,
                             time_base=frame.time_base, decode_s=decode_s, captured_at=captured_at,
                             reconnects=getattr(source, "reconnects", 0), picture=frame.picture))
            next_seq += 1
        send(events, Done(frames=next_seq, skipped_packets=source.skipped_packets))
    except Exception as exc:  # reported to the main process, which owns user-facing errors
        if stop.is_set():  # asked to stop (while connecting, say): what failed since is no failure of the input
            log.info("stopped: %s", exc)
            send(events, Done(frames=next_seq, skipped_packets=getattr(source, "skipped_packets", 0)))
        else:
            send(events, Failed("source", _portable(exc)))
    finally:
        source.close()
        if slots is not None:
            slots.close()


def _take_slot(inbox: Any, stop: StopFlag) -> int | None:
    while not stop.is_set():
        if inbox.poll(POLL_S):
            return receive(inbox)
    return None


@quiet_when_orphaned
def worker_main(spec: ParserFactory, index: int, threads: int, inbox: Any, events: Any,
                log_levels: dict[str, int], niceness: int = 0) -> None:
    """Parse the frames the main process sends down ``inbox`` until it sends ``None``, ``niceness`` nicer than the
    main process.

    ``inbox`` and ``events`` are this worker's own pipes: a worker killed mid-message can break only its own
    pipe, never a lock that other processes share. Each task names its stream's slot block, attached on first use.
    """
    leave_signals_to_the_main_process()
    configure_logging(log_levels, f"worker {index}")
    if niceness:
        os.nice(niceness)
    import cv2

    cv2.setNumThreads(threads)
    try:
        stage = spec.make_parser(threads)
        stage.open()
    except Exception as exc:
        send(events, Failed(f"worker {index}", _portable(exc)))
        return
    blocks: dict[str, SharedSlots] = {}
    send(events, Ready(index))
    try:
        while (task := receive(inbox)) is not None:
            if isinstance(task, Forget):
                stage.forget(task.stream)
                if (block := blocks.pop(task.block, None)) is not None:
                    block.close()
                continue
            slots = blocks.get(task.block.name)
            if slots is None:
                try:
                    slots = blocks[task.block.name] = SharedSlots.attach(task.block)
                except FileNotFoundError:  # its stream failed and was closed before this worker first saw it
                    send(events, FrameFailed(task, "the stream's frame slots are gone", index))
                    continue
            image = slots.view(task.slot, task.block.layout.input)
            if task.picture is not None:
                image = image[:task.picture[0], :task.picture[1]]
            try:
                arrays, result = stage.process(image, task.key, task.group)
            except Exception as exc:
                log.debug("frame %s failed in worker %d:\n%s", task.key, index, traceback.format_exc())
                send(events, FrameFailed(task, f"{type(exc).__name__}: {exc}", index))
                continue
            for name, array in arrays.items():
                output = slots.view(task.slot, name)
                if task.picture is not None:
                    output[:] = 0
                    output = output[:task.picture[0], :task.picture[1]]
                output[:] = array
            result.timings["decode"] = task.decode_s
            send(events, Parsed(task=task, result=result, worker=index))
    finally:
        stage.close()
        for block in blocks.values():
            block.close()
