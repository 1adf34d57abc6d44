"""The engine's pieces with trivial stages: the writer thread's subscribers and two streams on one pool."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import multiprocess
import numpy as np

from test_pipeline import Collected, TrivialJob, runner
from vidparse.pipeline.engine import Engine
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


def test_two_streams_share_one_pool(clip: Path) -> None:
    """Two sessions on two workers: each stream gets every frame once, in order, with its own labels; a stream
    added while the engine runs is served too."""
    frames = decoded(clip)
    first, second = Collected(), Collected()
    ended: list[int] = []
    engine = Engine(TrivialJob(str(clip), Collected()), PoolSettings(workers=2, threads=1))

    def add_second(written: Written, stats) -> None:
        if written.frame.seq == 3:  # the first stream is running: the second joins through the control pipe
            engine.add(TrivialJob(str(clip), second, jitter_s=0.01), StreamSettings(queue_size=2, group_size=3),
                       on_end=lambda s: ended.append(s.stream))

    engine.add(TrivialJob(str(clip), first), StreamSettings(queue_size=2), [add_second],
               on_end=lambda s: ended.append(s.stream))
    engine.start()
    assert engine.join(120)
    assert sorted(ended) == [0, 1]
    for collected in (first, second):
        assert collected.seqs == list(range(len(frames))) and collected.closed
        assert all(np.array_equal(image, frames[i]) for i, image in enumerate(collected.images))
        assert all(np.array_equal(labels, (image[:, :, 0] > 100).astype(np.uint8))
                   for labels, image in zip(collected.labels, collected.images))
    assert not multiprocess.active_children()
    assert not [t for t in threading.enumerate() if t.name.startswith("vidparse-")]
