"""The engine's pieces with trivial stages: the writer thread's subscribers and two streams on one pool."""

from __future__ import annotations

import threading
import time
from collections import deque
from pathlib import Path
from types import SimpleNamespace

import multiprocess
import numpy as np
import pytest

from test_pipeline import Collected, TrivialJob, runner
from vidparse.errors import BadInputError, ConfigError
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.messages import FrameKey
from vidparse.pipeline.scheduler import Scheduler
from vidparse.pipeline.memory import MB
from vidparse.pipeline.settings import MemoryBudget, PoolSettings, StreamSettings
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


def test_a_failing_stream_ends_alone_and_restarts_count_where_the_frame_was(clip: Path, tmp_path: Path) -> None:
    """Two good streams and a damaged one on two workers, one of which is killed on a frame: the damaged stream
    ends with its own error, the good ones write every frame once, and the worker restart counts only in the
    stream whose frame the killed worker held (one frame per worker, so it held one)."""
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("not a video")
    frames = len(decoded(clip))
    collected = [Collected(), Collected(), Collected()]
    sessions = {}
    engine = Engine(TrivialJob(str(clip), Collected(), kill_at=3, kill_times=1),
                    PoolSettings(workers=2, threads=1, prefetch=1))
    for url, sink in zip((str(clip), str(bogus), str(clip)), collected):
        engine.add_source(TrivialJob(url, sink, jitter_s=0.1), StreamSettings(queue_size=2),
                          on_end=lambda s: sessions.update({s.stream: s}))
    engine.start()
    assert engine.join(120), "the engine ends when its last stream does, without raising the stream's error"
    assert isinstance(sessions[1].error, BadInputError) and collected[1].seqs == []
    for good in (0, 2):
        assert sessions[good].error is None
        assert collected[good].seqs == list(range(frames)) and collected[good].closed
    assert sorted(sessions[s].stats.worker_restarts for s in (0, 2)) == [0, 1]
    assert not multiprocess.active_children()


def test_sources_are_added_and_removed_while_the_engine_runs(clip: Path) -> None:
    """A stream removed while it runs ends after the frames in flight (an in-order prefix, marked interrupted);
    the stream added meanwhile from another thread is served to its end."""
    frames = len(decoded(clip))
    first, second = Collected(), Collected()
    sessions = {}
    engine = Engine(TrivialJob(str(clip), Collected()), PoolSettings(workers=2, threads=1))

    def swap(written: Written, stats) -> None:  # runs in the first stream's writer thread
        if written.frame.seq == 1:
            engine.add_source(TrivialJob(str(clip), second, jitter_s=0.05), StreamSettings(queue_size=2),
                              on_end=lambda s: sessions.update({s.stream: s}))
            engine.remove_source(written.stream)

    engine.add_source(TrivialJob(str(clip), first, jitter_s=0.3), StreamSettings(queue_size=2), [swap],
                      on_end=lambda s: sessions.update({s.stream: s}))
    engine.start()
    assert engine.join(120)
    assert 2 <= len(first.seqs) < frames and first.seqs == list(range(len(first.seqs))) and first.closed
    assert sessions[0].stats.interrupted and sessions[0].error is None
    assert second.seqs == list(range(frames)) and not sessions[1].stats.interrupted
    assert not multiprocess.active_children()


def test_the_memory_budget_is_shared_by_the_streams() -> None:
    """The main process and two workers come first (3 x 120 MB); each stream then reserves its source process,
    30 frame copies and its slots from what the others left, and gives them back when it ends."""
    budget = MemoryBudget(total_mb=1400, workers=2)
    slot = 10 * MB
    assert budget.slot_count(0, queue_size=8, slot_bytes=slot) == 12, "all it wants: 8 + 2 x 2 slots"
    # 1400 - 4 x 120 - 30 x 10 - (120 + 42 x 10 held by stream 0) = 80 MB: 8 slots
    assert budget.slot_count(1, queue_size=8, slot_bytes=slot) == 8
    with pytest.raises(ConfigError, match="held by 2 other streams"):
        budget.slot_count(2, queue_size=8, slot_bytes=slot)
    budget.release(0)
    assert budget.slot_count(2, queue_size=8, slot_bytes=slot) == 12
    assert MemoryBudget(total_mb=0, workers=2).slot_count(0, queue_size=8, slot_bytes=slot) == 12, "no budget"
