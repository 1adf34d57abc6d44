"""The runner with trivial stages: real processes, shared memory and queues, no models."""

from __future__ import annotations

import os
import random
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import multiprocess
import numpy as np
import pytest

from vidparse.errors import BadInputError, ModelError
from vidparse.pipeline.reorder import ReorderBuffer
from vidparse.pipeline.runner import PipelineError, Runner, RunSettings
from vidparse.pipeline.slots import SlotLayout
from vidparse.stages.source import VideoSource
from vidparse.stages.types import Frame, FrameResult


class ThresholdStage:
    """Labels = 1 where the blue channel is bright; sleeps a random while so workers finish out of order."""

    def __init__(self, fail_at: int | None, kill_at: int | None, jitter_s: float) -> None:
        self.fail_at, self.kill_at, self.jitter_s = fail_at, kill_at, jitter_s

    def open(self) -> None:
        pass

    def process(self, image: np.ndarray, seq: int) -> tuple[np.ndarray, FrameResult]:
        if seq == self.fail_at:
            raise ModelError("stage broke on purpose", hint="test")
        if seq == self.kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(random.random() * self.jitter_s)
        return (image[:, :, 0] > 100).astype(np.uint8), FrameResult(seq=seq, timings={"parse": 0.001})

    def close(self) -> None:
        pass


@dataclass
class Collected:
    seqs: list[int] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    closed: bool = False


class CollectingOutput:
    def __init__(self, sink: Collected) -> None:
        self.sink = sink

    def open(self) -> None:
        pass

    def write(self, frame: Frame, labels: np.ndarray, result: FrameResult) -> None:
        assert result.seq == frame.seq
        self.sink.seqs.append(frame.seq)
        self.sink.labels.append(labels.copy())
        self.sink.images.append(frame.image.copy())

    def close(self) -> None:
        self.sink.closed = True


@dataclass
class TrivialJob:
    url: str
    collected: Collected
    fail_at: int | None = None
    kill_at: int | None = None
    jitter_s: float = 0.02

    def make_source(self) -> VideoSource:
        return VideoSource(self.url)

    def make_parser(self, threads: int) -> ThresholdStage:
        return ThresholdStage(self.fail_at, self.kill_at, self.jitter_s)

    def slot_layout(self, info) -> SlotLayout:
        return SlotLayout((("image", info.frame_shape, "uint8"), ("labels", info.frame_shape[:2], "uint8")))

    def make_output(self, info) -> CollectingOutput:
        return CollectingOutput(self.collected)


def run(job: TrivialJob, workers: int, queue_size: int = 2):
    return Runner(job, RunSettings(workers=workers, threads=1, queue_size=queue_size)).run()


def shm_blocks() -> set[str]:
    return {p.name for p in Path("/dev/shm").iterdir()} if Path("/dev/shm").exists() else set()


def test_every_frame_once_in_order_whatever_the_worker_count(clip: Path) -> None:
    before = shm_blocks()
    one, three = Collected(), Collected()
    stats = run(TrivialJob(str(clip), one), workers=1)
    run(TrivialJob(str(clip), three), workers=3)
    assert one.seqs == three.seqs == list(range(12))
    assert stats.frames == 12 and stats.stage_s["parse"] == pytest.approx(0.012) and stats.stage_s["decode"] > 0
    for a, b, image in zip(one.labels, three.labels, three.images):
        assert np.array_equal(a, b)
        assert np.array_equal(b, (image[:, :, 0] > 100).astype(np.uint8)), "labels belong to their own frame"
    assert one.closed and three.closed
    assert shm_blocks() <= before, "shared memory is unlinked after the run"
    assert not multiprocess.active_children()


def test_a_stage_error_reaches_the_caller_and_children_stop(clip: Path) -> None:
    collected = Collected()
    with pytest.raises(ModelError, match="broke on purpose"):
        run(TrivialJob(str(clip), collected, fail_at=5), workers=2)
    assert collected.closed, "the output is finalized even on failure"
    assert not multiprocess.active_children()


def test_a_killed_worker_is_detected(clip: Path) -> None:
    collected = Collected()
    with pytest.raises(PipelineError, match="died"):
        run(TrivialJob(str(clip), collected, kill_at=3), workers=2)
    assert collected.closed
    assert not multiprocess.active_children()


def test_a_bad_input_is_reported_from_the_source_process(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.mp4"
    bogus.write_text("not a video")
    with pytest.raises(BadInputError, match="not a readable video"):
        run(TrivialJob(str(bogus), Collected()), workers=1)
    assert not multiprocess.active_children()


def test_reorder_buffer_releases_in_sequence() -> None:
    buffer: ReorderBuffer[str] = ReorderBuffer()
    assert list(buffer.push(2, "c")) == []
    assert list(buffer.push(1, "b")) == []
    assert list(buffer.push(0, "a")) == ["a", "b", "c"]
    assert len(buffer) == 0 and buffer.next_seq == 3
    with pytest.raises(ValueError):
        list(buffer.push(1, "again"))
