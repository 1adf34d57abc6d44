"""The engine's pieces with trivial stages: the writer thread's subscribers and two streams on one pool."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import multiprocess
import numpy as np

from test_pipeline import Collected, TrivialJob, runner
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.messages import FrameKey
from vidparse.pipeline.scheduler import Scheduler
from vidparse.pipeline.settings import PoolSettings, StreamSettings
from vidparse.pipeline.writer import Written
from vidparse.stages.source import VideoSource


def decoded(clip: Path) -> list[np.ndarray]:
    source = VideoSource(str(clip))
    source.open()
    try:
        return [frame.image for frame in source.frames()]
    finally:
        source.close()


def test_a_slow_subscriber_sees_each_frame_with_its_own_pixels(clip: Path) -> None:
    """The slot goes back to the source only after the subscribers: with the source refilling slots as fast as
    it can, a subscriber that holds a frame a while still sees that frame's pixels and labels."""
    frames = decoded(clip)
    seen: list[tuple[int, bool, bool]] = []

    def slow(written: Written, stats) -> None:
        time.sleep(0.02)  # the source decodes later frames meanwhile
        image = written.frame.image
        seen.append((written.frame.seq, np.array_equal(image, frames[written.frame.seq]),
                     np.array_equal(written.labels, (image[:, :, 0] > 100).astype(np.uint8))))

    job = TrivialJob(str(clip), Collected(), jitter_s=0.0)
    racing = runner(job, workers=2, queue_size=1)
    racing.subscribers.append(slow)
    racing.run()
    assert [seq for seq, _, _ in seen] == list(range(len(frames)))
    foreign = [seq for seq, own, _ in seen if not own]
    assert not foreign, f"frames a subscriber saw with another frame's pixels: {foreign}"
    assert all(labelled for _, _, labelled in seen)


def test_results_are_copies_that_outlive_their_slot(clip: Path) -> None:
    frames = decoded(clip)
    results = list(runner(TrivialJob(str(clip), Collected(), jitter_s=0.0), workers=2, queue_size=1).results())
    assert [r.frame.seq for r in results] == list(range(len(frames)))
    assert all(np.array_equal(r.frame.image, frames[r.frame.seq]) for r in results)


def test_leaving_the_results_early_ends_the_run(clip: Path) -> None:
    started = time.monotonic()
    for written in runner(TrivialJob(str(clip), Collected(), jitter_s=0.1), workers=2, queue_size=1).results():
        if written.frame.seq == 2:
            break
    assert time.monotonic() - started < 60
    assert not multiprocess.active_children()
    assert not [t for t in threading.enumerate() if t.name.startswith("vidparse-")]


def test_streams_share_one_pool(clip: Path) -> None:
    """Two streams from the start and a third added while the engine runs, on two workers: each stream gets every
    frame once, in order, with its own labels; the first two are served side by side."""
    frames = decoded(clip)
    collected = [Collected(), Collected(), Collected()]
    ended: list[int] = []
    written_order: list[int] = []
    engine = Engine(TrivialJob(str(clip), Collected()), PoolSettings(workers=2, threads=1))

    def add_third(written: Written, stats) -> None:
        if written.frame.seq == 3:  # the first stream is running: the third joins through the control pipe
            engine.add_source(TrivialJob(str(clip), collected[2]), StreamSettings(queue_size=2),
                       on_end=lambda s: ended.append(s.stream))

    engine.add_source(TrivialJob(str(clip), collected[0], jitter_s=0.3), StreamSettings(queue_size=2),
               [add_third, lambda written, stats: written_order.append(written.stream)],
               on_end=lambda s: ended.append(s.stream))
    engine.add_source(TrivialJob(str(clip), collected[1], jitter_s=0.3), StreamSettings(queue_size=2, group_size=3),
               [lambda written, stats: written_order.append(written.stream)], on_end=lambda s: ended.append(s.stream))
    engine.start()
    assert engine.join(120)
    assert sorted(ended) == [0, 1, 2]
    for stream in collected:
        assert stream.seqs == list(range(len(frames))) and stream.closed
        assert all(np.array_equal(image, frames[i]) for i, image in enumerate(stream.images))
        assert all(np.array_equal(labels, (image[:, :, 0] > 100).astype(np.uint8))
                   for labels, image in zip(stream.labels, stream.images))
    first_two = [stream for stream in written_order if stream < 2]
    assert first_two.index(1) < len(first_two) - 1 - first_two[::-1].index(0), "the first two streams interleave"
    assert not multiprocess.active_children()
    assert not [t for t in threading.enumerate() if t.name.startswith("vidparse-")]


class FakePool:
    """Takes up to ``room`` tasks; remembers them in order."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.taken: list[FrameKey] = []

    def has_capacity(self) -> bool:
        return len(self.taken) < self.room

    def dispatch(self, task) -> bool:
        if not self.has_capacity():
            return False
        self.taken.append(task.key)
        return True


class FakeSession:
    def __init__(self, stream: int, frames: int) -> None:
        self.stream = stream
        self.pending = deque(SimpleNamespace(key=FrameKey(stream, seq)) for seq in range(frames))
        self.dispatched_keys: list[FrameKey] = []

    def dispatched(self, task) -> None:
        self.dispatched_keys.append(task.key)


def test_streams_take_turns_for_free_workers() -> None:
    """Every stream has frames waiting: free workers go to the streams in turn, each stream's frames in order, and
    the stream offered the first worker rotates."""
    pool = FakePool(room=4)
    sessions = [FakeSession(0, 5), FakeSession(1, 5)]
    scheduler = Scheduler(pool)
    scheduler.dispatch(sessions)
    assert pool.taken == [FrameKey(0, 0), FrameKey(1, 0), FrameKey(0, 1), FrameKey(1, 1)]
    assert [len(s.pending) for s in sessions] == [3, 3]
    assert sessions[0].pending[0].key == FrameKey(0, 2), "frames that did not fit wait in order"
    pool.taken.clear()
    scheduler.dispatch(sessions)
    assert pool.taken[0] == FrameKey(1, 2), "the other stream is offered the first worker next time"
