"""The engine's pieces with trivial stages: the writer thread's subscribers and two streams on one pool."""

from __future__ import annotations

import threading
import time
from collections import deque
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import multiprocess
import numpy as np
import pytest

from test_pipeline import Collected, TrivialJob, runner
from conftest import VTEST
from vidparse.api_words import reworded
from vidparse.config import Config
from vidparse.errors import BadInputError, ConfigError, ModelError
from vidparse.jobs import StreamSpec
from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.errors import EngineEndedError
from vidparse.pipeline.messages import FrameKey
from vidparse.pipeline.scheduler import Scheduler
from vidparse.pipeline.memory import MB
from vidparse.pipeline.settings import MemoryBudget, PoolSettings, StreamSettings
from vidparse.pipeline.writer import Written
from vidparse.stages.images import ImageSet
from vidparse.stages.source import StreamInfo, VideoSource


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
    frame once, in order, with its own labels; the first two are served side by side (the pool's parser, which all
    streams share, is slow enough that the first cannot end before the second's source process has started, even on a
    slow machine)."""
    frames = decoded(clip)
    collected = [Collected(), Collected(), Collected()]
    ended: list[int] = []
    written_order: list[int] = []
    engine = Engine(TrivialJob(str(clip), Collected(), jitter_s=0.6), PoolSettings(workers=2, threads=1))

    def add_third(written: Written, stats) -> None:
        if written.frame.seq == 3:  # the first stream is running: the third joins through the control pipe
            engine.add_source(TrivialJob(str(clip), collected[2]), StreamSettings(queue_size=2),
                       on_end=lambda s: ended.append(s.stream))

    engine.add_source(TrivialJob(str(clip), collected[0]), StreamSettings(queue_size=2),
               [add_third, lambda written, stats: written_order.append(written.stream)],
               on_end=lambda s: ended.append(s.stream))
    engine.add_source(TrivialJob(str(clip), collected[1]), StreamSettings(queue_size=2, group_size=3),
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
    engine = Engine(TrivialJob(str(clip), Collected(), kill_at=3, kill_times=1, jitter_s=0.1),
                    PoolSettings(workers=2, threads=1, prefetch=1))
    for url, sink in zip((str(clip), str(bogus), str(clip)), collected):
        engine.add_source(TrivialJob(url, sink), StreamSettings(queue_size=2),
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
    engine = Engine(TrivialJob(str(clip), Collected(), jitter_s=0.3), PoolSettings(workers=2, threads=1))

    def swap(written: Written, stats) -> None:  # runs in the first stream's writer thread
        if written.frame.seq == 1:
            engine.add_source(TrivialJob(str(clip), second), StreamSettings(queue_size=2),
                              on_end=lambda s: sessions.update({s.stream: s}))
            engine.remove_source(written.stream)

    engine.add_source(TrivialJob(str(clip), first), StreamSettings(queue_size=2), [swap],
                      on_end=lambda s: sessions.update({s.stream: s}))
    engine.start()
    assert engine.join(120)
    assert 2 <= len(first.seqs) < frames and first.seqs == list(range(len(first.seqs))) and first.closed
    assert sessions[0].stats.interrupted and sessions[0].error is None
    assert second.seqs == list(range(frames)) and not sessions[1].stats.interrupted
    assert not multiprocess.active_children()


def test_the_memory_budget_is_shared_by_the_streams() -> None:
    """The main process and two workers come first (3 x 120 MB, and 130 MB for the compiled vote); each stream
    then reserves its source process, 30 frame copies and its slots from what the others left, and gives them back
    when it ends."""
    budget = MemoryBudget(total_mb=1530, workers=2)
    slot = 10 * MB
    assert budget.slot_count(0, queue_size=8, slot_bytes=slot) == 12, "all it wants: 8 + 2 x 2 slots"
    # 1530 - 4 x 120 - 130 - 30 x 10 - (120 + 42 x 10 held by stream 0) = 80 MB: 8 slots
    assert budget.slot_count(1, queue_size=8, slot_bytes=slot) == 8
    with pytest.raises(ConfigError, match="held by 2 other streams"):
        budget.slot_count(2, queue_size=8, slot_bytes=slot)
    budget.release(0)
    assert budget.slot_count(2, queue_size=8, slot_bytes=slot) == 12
    assert MemoryBudget(total_mb=0, workers=2).slot_count(0, queue_size=8, slot_bytes=slot) == 12, "no budget"
    assert MemoryBudget(total_mb=0, workers=2).slot_count(0, queue_size=8, slot_bytes=slot, frames=1) == 1, \
        "a single photo needs one slot"


def test_photos_written_alone_reserve_their_few_copies_not_a_videos() -> None:
    """A 6000x4000 photo's slot (image and labels) is 91.5 MB. Counted as a video's frames (30 copies outside the
    slots: decoder, vote, compose, x264 lookahead) it needed 3329 MB; photos written as photos peak at about 4
    copies outside their slots (docs/faults.md), and reserve 6: 490 + 6 x 91.5 MB, and a slot each."""
    slot = 6000 * 4000 * 4
    with pytest.raises(ConfigError, match="about 3329 MB is needed"):
        MemoryBudget(total_mb=1500, workers=1).slot_count(0, queue_size=8, slot_bytes=slot, frames=1)
    assert MemoryBudget(total_mb=1500, workers=1).slot_count(0, queue_size=8, slot_bytes=slot, frames=1,
                                                             photos=True) == 1
    assert MemoryBudget(total_mb=1500, workers=1).slot_count(0, queue_size=8, slot_bytes=slot, frames=10,
                                                             photos=True) == 5, "(1500 - 490 - 549) // 91.5"
    with pytest.raises(ConfigError, match="about 1131 MB is needed"):
        MemoryBudget(total_mb=1000, workers=1).slot_count(0, queue_size=8, slot_bytes=slot, frames=1, photos=True)


def test_only_photos_written_as_photos_are_budgeted_as_photos() -> None:
    """Photos made into a video go through x264's lookahead; a pattern's frames written as images are voted on and
    tracked: both keep a video's copies outside the slots."""
    info = StreamInfo(6000, 4000, Fraction(1, 25), Fraction(25), 1, None, "mjpeg", False)
    photo = ImageSet("big.jpg", (Path("big.jpg"),), ((6000, 4000),))
    sequence = ImageSet("f%03d.png", (Path("f001.png"),), ((6000, 4000),))

    def photos(images: ImageSet, output: str) -> bool:
        return StreamSpec(Config(), images.spec, Path(output), images=images).slot_layout(info).photos

    assert photos(photo, "out.jpg") and photos(photo, "out/")
    assert not photos(photo, "out.mp4") and not photos(sequence, "out/")


def test_a_budget_too_small_names_the_flag_on_the_command_line_and_the_key_in_the_api() -> None:
    """The message named the config key (max_memory_mb) where its hint named the flag the user typed."""
    with pytest.raises(ConfigError) as raised:
        MemoryBudget(total_mb=300, workers=2).slot_count(0, queue_size=8, slot_bytes=10 * MB)
    assert raised.value.message.startswith("--max-memory 300 is too small"), raised.value.message
    assert reworded(raised.value.message).startswith("max_memory_mb=300 is too small")


def test_one_stream_closing_does_not_stall_another(shared: Path, clip: Path) -> None:
    """Stream A's output takes 1.5 s to close (an x264 flush, a fast-start remux): it closes off the hub thread, so
    stream B's frames keep coming meanwhile, never more than 200 ms apart."""
    slow_close, steady = Collected(close_s=1.5), Collected()
    written_at: list[float] = []
    engine = Engine(TrivialJob(str(clip), Collected()), PoolSettings(workers=2, threads=1))

    def pace(written: Written, stats) -> None:
        written_at.append(time.monotonic())
        if slow_close.closing is not None:  # A has closed: enough seen
            engine.remove_source(written.stream)

    engine.add_source(TrivialJob(str(clip), slow_close), StreamSettings(queue_size=2))
    engine.add_source(TrivialJob(str(VTEST), steady), StreamSettings(queue_size=2), [pace])
    engine.start()
    assert engine.join(120)
    began, ended = slow_close.closing
    during = [t for t in written_at if began <= t <= ended]
    assert len(during) >= 5, f"B wrote {len(during)} frames while A closed"
    gaps = [b - a for a, b in zip([began, *during], [*during, ended])]
    assert max(gaps) < 0.2, f"B's longest gap while A closed: {max(gaps):.3f} s"


def test_every_stream_gets_its_end_and_an_ended_engine_refuses_streams(clip: Path) -> None:
    """A stream ends ok; one queued behind an abort ends interrupted without starting; once the engine has ended,
    adding raises (and its callback is not kept waiting for an end that cannot come)."""
    ends: dict[int, StreamEnd] = {}
    engine = Engine(TrivialJob(str(clip), Collected()), PoolSettings(workers=1, threads=1))
    engine.add_source(TrivialJob(str(clip), Collected()), StreamSettings(queue_size=2),
                      on_end=lambda end: ends.update({end.stream: end}))
    engine.run()
    assert ends[0].state == "ok" and ends[0].stats.frames == 12
    with pytest.raises(EngineEndedError, match="its last stream ended"):
        engine.add_source(TrivialJob(str(clip), Collected()), StreamSettings(queue_size=2))

    aborted = Engine(TrivialJob(str(clip), Collected()), PoolSettings(workers=1, threads=1))
    aborted.abort()
    aborted.add_source(TrivialJob(str(clip), Collected()), StreamSettings(queue_size=2),
                       on_end=lambda end: ends.update({10 + end.stream: end}))
    aborted.start()
    assert aborted.join(30)
    assert ends[10].state == "interrupted" and ends[10].error is None
    with pytest.raises(EngineEndedError, match="aborted"):
        aborted.add_source(TrivialJob(str(clip), Collected()), StreamSettings(queue_size=2))
    assert not multiprocess.active_children()


def test_streams_end_failed_with_the_engine_error_and_an_output_failing_at_close_fails(clip: Path) -> None:
    """Workers that cannot load their models end the engine: every stream added (one while the first opens) ends
    failed with that error. An output that fails at close, after every frame was written, is failed too."""
    ends: dict[int, StreamEnd] = {}
    broken = Engine(TrivialJob(str(clip), Collected(), fail_open=True), PoolSettings(workers=1, threads=1))

    def add_another(info) -> None:
        broken.add_source(TrivialJob(str(clip), Collected()), StreamSettings(queue_size=2),
                          on_end=lambda end: ends.update({end.stream: end}))

    broken.add_source(TrivialJob(str(clip), Collected()), StreamSettings(queue_size=2), on_open=add_another,
                      on_end=lambda end: ends.update({end.stream: end}))
    with pytest.raises(ModelError):
        broken.run()
    assert sorted(ends) == [0, 1]
    assert all(end.state == "failed" and isinstance(end.error, ModelError) for end in ends.values())

    failing = Collected(fail_close=True)
    engine = Engine(TrivialJob(str(clip), Collected()), PoolSettings(workers=1, threads=1))
    engine.add_source(TrivialJob(str(clip), failing), StreamSettings(queue_size=2),
                      on_end=lambda end: ends.update({20: end}))
    engine.run()
    assert failing.seqs == list(range(12)) and failing.closed
    assert ends[20].state == "failed" and ends[20].message == "close broke on purpose"
    assert not multiprocess.active_children()
