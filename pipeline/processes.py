"""Bodies of the child processes: the source (decode into slots) and the parser workers."""

from __future__ import annotations

import logging
import queue
import signal
import time
from typing import Any

from vidparse.pipeline.messages import Done, Failed, Opened, Parsed, Task
from vidparse.pipeline.slots import SharedSlots, SlotsHandle

log = logging.getLogger(__name__)

POLL_S = 0.2


def _portable(error: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else a RuntimeError with its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def source_main(job: Any, control: Any, free: Any, tasks: Any, results: Any, stop: Any, workers: int) -> None:
    """Decode frames into free slots and hand their numbers to the workers, in order."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process decides when to stop
    source = job.make_source()
    sent = 0
    slots: SharedSlots | None = None
    try:
        info = source.open()
        results.put(Opened(info))
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
            tasks.put(Task(seq=frame.seq, slot=slot, pts=frame.pts, time_base=frame.time_base, decode_s=decode_s))
            sent += 1
        results.put(Done(frames=sent, skipped_packets=source.skipped_packets))
    except Exception as exc:  # reported to the main process, which owns user-facing errors
        results.put(Failed("source", _portable(exc)))
    finally:
        source.close()
        if slots is not None:
            slots.close()
        for _ in range(workers):
            tasks.put(None)


def _take_slot(free: Any, stop: Any) -> int | None:
    while not stop.is_set():
        try:
            return free.get(timeout=POLL_S)
        except queue.Empty:
            continue
    return None


def worker_main(job: Any, index: int, threads: int, handle: SlotsHandle, tasks: Any, results: Any) -> None:
    """Parse frames from slots until the source's end marker arrives."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(threads)
    try:
        stage = job.make_parser(threads)
        stage.open()
    except Exception as exc:
        results.put(Failed(f"worker {index}", _portable(exc)))
        return
    slots = SharedSlots.attach(handle)
    try:
        while (task := tasks.get()) is not None:
            labels, result = stage.process(slots.view(task.slot, "image"), task.seq)
            slots.view(task.slot, "labels")[:] = labels
            result.timings["decode"] = task.decode_s
            results.put(Parsed(task=task, result=result, worker=index))
    except Exception as exc:
        results.put(Failed(f"worker {index}", _portable(exc)))
    finally:
        stage.close()
        slots.close()
