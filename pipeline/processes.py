"""Bodies of the child processes: the source (decode into slots) and the parser workers."""

from __future__ import annotations

import logging
import pickle
import queue
import signal
import time
import traceback
from typing import Any

from vidparse.pipeline.messages import Done, Failed, FrameFailed, Opened, Parsed, Ready, Task
from vidparse.pipeline.slots import SharedSlots, SlotsHandle

log = logging.getLogger(__name__)

POLL_S = 0.2


def _portable(error: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def source_main(job: Any, control: Any, free: Any, events: Any, stop: Any) -> None:
    """Decode frames into free slots and announce each one, in order, on ``events`` (this process's own pipe)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    source = job.make_source()
    sent = 0
    slots: SharedSlots | None = None
    try:
        info = source.open()
        events.send(Opened(info))
        handle: SlotsHandle | None = control.get()
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
            slot = _take_slot(free, stop)
            if slot is None:
                break
            slots.view(slot, "image")[:] = frame.image
            events.send(Task(seq=frame.seq, slot=slot, pts=frame.pts, time_base=frame.time_base, decode_s=decode_s,
                            captured_at=getattr(frame, "captured_at", None) or time.time()))
            sent += 1
        events.send(Done(frames=sent, skipped_packets=source.skipped_packets))
    except Exception as exc:  # reported to the main process, which owns user-facing errors
        events.send(Failed("source", _portable(exc)))
    finally:
        source.close()
        if slots is not None:
            slots.close()


def _take_slot(free: Any, stop: Any) -> int | None:
    while not stop.is_set():
        try:
            return free.get(timeout=POLL_S)
        except queue.Empty:
            continue
    return None


def worker_main(job: Any, index: int, threads: int, handle: SlotsHandle, inbox: Any, events: Any) -> None:
    """Parse the frames the main process sends down ``inbox`` until it sends ``None``.

    ``inbox`` and ``events`` are this worker's own pipes: a worker killed mid-message can break only its own
    pipe, never a lock that other processes share.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(threads)
    try:
        stage = job.make_parser(threads)
        stage.open()
    except Exception as exc:
        events.send(Failed(f"worker {index}", _portable(exc)))
        return
    slots = SharedSlots.attach(handle)
    events.send(Ready(index))
    try:
        while (task := inbox.recv()) is not None:
            try:
                labels, result = stage.process(slots.view(task.slot, "image"), task.seq)
            except Exception as exc:
                log.debug("frame %d failed in worker %d:\n%s", task.seq, index, traceback.format_exc())
                events.send(FrameFailed(task, f"{type(exc).__name__}: {exc}", index))
                continue
            slots.view(task.slot, "labels")[:] = labels
            result.timings["decode"] = task.decode_s
            events.send(Parsed(task=task, result=result, worker=index))
    finally:
        stage.close()
        slots.close()
