"""The runner with trivial stages: real processes, shared memory and queues, no models."""

from __future__ import annotations

import os
import random
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import multiprocess
import numpy as np
import pytest

from vidparse.errors import BadInputError, BadOutputError, ModelError
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.errors import PipelineError
from vidparse.pipeline.reorder import ReorderBuffer
from vidparse.pipeline.messages import FrameKey
from vidparse.pipeline.runner import Runner
from vidparse.pipeline.settings import PoolSettings, StreamSettings
from vidparse.pipeline.slots import SlotLayout
from vidparse.stages.output import Composed
from vidparse.stages.source import VideoSource
from vidparse.stages.types import Frame, FrameResult


class ThresholdStage:
    """Labels = 1 where the blue channel is bright; sleeps a random while so workers finish out of order.

    Faults on demand: fail to open, raise on a frame, SIGKILL itself or hang on a frame. ``kill_times`` limits
    how many processes a kill or hang takes down (counted in a file, since each replacement starts afresh).
    """

    def __init__(self, job: TrivialJob) -> None:
        self.job = job

    def open(self) -> None:
        if self.job.fail_open:
            raise ModelError("model broke on purpose", hint="test")

    def _fault_budget_left(self) -> bool:
        counter = Path(self.job.fault_counter)
        used = int(counter.read_text() or 0) if counter.exists() else 0
        if self.job.kill_times is not None and used >= self.job.kill_times:
            return False
        counter.write_text(str(used + 1))
        return True

    def process(self, image: np.ndarray, key: FrameKey, group: int | None) -> tuple[dict, FrameResult]:
        seq = key.seq
        if seq == self.job.raise_at:
            raise ValueError("this frame always fails")
        if seq == self.job.kill_at and self._fault_budget_left():
            os.kill(os.getpid(), signal.SIGKILL)
        if seq == self.job.hang_at and self._fault_budget_left():
            time.sleep(3600)
        time.sleep(random.random() * self.job.jitter_s)
        if self.job.trace:
            with open(self.job.trace, "a") as trace:
                trace.write(f"{os.getpid()} {seq} {os.nice(0)}\n")
        return {"labels": (image[:, :, 0] > 100).astype(np.uint8)}, FrameResult(seq=seq, timings={"parse": 0.001})

    def forget(self, stream: int) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class Collected:
    seqs: list[int] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    images: list[np.ndarray] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    closed: bool = False
    fail_in: tuple[str, int] | None = None  # ("compose" or "emit", seq): the output raises there
    close_s: float = 0.0  # closing takes this long (an encoder flushing, a file remuxed)
    fail_close: bool = False  # closing raises, after everything was written
    closing: tuple[float, float] | None = None  # when closing began and ended (time.monotonic)


class CollectingOutput:
    def __init__(self, sink: Collected) -> None:
        self.sink = sink

    def open(self) -> None:
        pass

    def stopped_early(self) -> None:
        pass

    def measure(self, frame: Frame, arrays: dict) -> int:
        return frame.seq

    def compose(self, frame: Frame, arrays: dict, result: FrameResult, measured: int) -> Composed:
        assert result.seq == frame.seq == measured
        if self.sink.fail_in == ("compose", frame.seq):
            raise BadOutputError("compose broke on purpose")
        return Composed(frame, arrays["labels"], frame.image, result)

    def emit(self, composed: Composed) -> None:
        if self.sink.fail_in == ("emit", composed.frame.seq):
            raise BadOutputError("emit broke on purpose")
        self.sink.seqs.append(composed.frame.seq)
        self.sink.statuses.append(composed.result.status)
        self.sink.labels.append(composed.labels.copy())
        self.sink.images.append(composed.frame.image.copy())

    def close(self) -> None:
        began = time.monotonic()
        time.sleep(self.sink.close_s)
        self.sink.closed = True
        self.sink.closing = (began, time.monotonic())
        if self.sink.fail_close:
            raise BadOutputError("close broke on purpose")


@dataclass
class TrivialJob:
    """Both specs at once: the parser (for the workers) and the stream (source, layout, output); it is its own
    source spec."""

    url: str
    collected: Collected
    fail_open: bool = False
    raise_at: int | None = None
    kill_at: int | None = None
    hang_at: int | None = None
    kill_times: int | None = None
    jitter_s: float = 0.02
    trace: str | None = None  # a file to append "pid seq" to for every frame parsed
    fault_counter: str = field(default_factory=lambda: tempfile.mktemp(prefix="vidparse-faults-"))

    def source_spec(self) -> TrivialJob:
        return self

    def make_source(self, stop, on_attempt=None, resume_at=0) -> VideoSource:
        return VideoSource(self.url, stop=stop, on_attempt=on_attempt, resume_at=resume_at)

    def make_parser(self, threads: int) -> ThresholdStage:
        return ThresholdStage(self)

    def slot_layout(self, info) -> SlotLayout:
        return SlotLayout((("image", info.frame_shape, "uint8"), ("labels", info.frame_shape[:2], "uint8")))

    def make_output(self, info) -> CollectingOutput:
        return CollectingOutput(self.collected)


def runner(job: TrivialJob, workers: int, queue_size: int = 2, frame_timeout_s: float = 120.0,
           niceness: int = 0, **stream) -> Runner:
    return Runner(Engine(job, PoolSettings(workers=workers, threads=1, frame_timeout_s=frame_timeout_s,
                                           worker_niceness=niceness)), job, StreamSettings(queue_size=queue_size, **stream))


def run(job: TrivialJob, workers: int, queue_size: int = 2):
    return runner(job, workers, queue_size).run()


def test_every_frame_once_in_order_whatever_the_worker_count(clip: Path) -> None:
    one, three = Collected(), Collected()
    runner_one = runner(TrivialJob(str(clip), one), workers=1)
    stats = runner_one.run()
    run(TrivialJob(str(clip), three), workers=3)
    assert one.seqs == three.seqs == list(range(12))
    assert stats.frames == 12 and stats.stage_s["parse"] == pytest.approx(0.012) and stats.stage_s["decode"] > 0
    for a, b, image in zip(one.labels, three.labels, three.images):
        assert np.array_equal(a, b)
        assert np.array_equal(b, (image[:, :, 0] > 100).astype(np.uint8)), "labels belong to their own frame"
    assert one.closed and three.closed
    assert runner_one.slots_name and not (Path("/dev/shm") / runner_one.slots_name.lstrip("/")).exists(), \
        "shared memory is unlinked after the run"
    assert not multiprocess.active_children()


def test_frames_of_a_group_go_to_one_worker_in_order(clip: Path, tmp_path: Path) -> None:
    collected, trace = Collected(), tmp_path / "trace"
    runner(TrivialJob(str(clip), collected, trace=str(trace)), workers=2, queue_size=4, group_size=3).run()
    assert collected.seqs == list(range(12))
    seqs_by_pid: dict[int, list[int]] = {}
    for line in trace.read_text().split("\n")[:-1]:
        pid, seq, _ = map(int, line.split())
        seqs_by_pid.setdefault(pid, []).append(seq)
    assert len(seqs_by_pid) == 2, "both workers got groups"
    for seqs in seqs_by_pid.values():
        assert seqs == sorted(seqs)
    owners = {seq // 3: pid for pid, seqs in seqs_by_pid.items() for seq in seqs}
    for pid, seqs in seqs_by_pid.items():
        assert all(owners[seq // 3] == pid for seq in seqs), "a group was split between workers"


def test_workers_run_nicer_than_the_main_process(clip: Path, tmp_path: Path) -> None:
    collected, trace = Collected(), tmp_path / "trace"
    runner(TrivialJob(str(clip), collected, trace=str(trace)), workers=2, niceness=7).run()
    nice = {int(line.split()[2]) for line in trace.read_text().splitlines()}
    assert nice == {min(19, os.nice(0) + 7)}, "every worker, for every frame; the main process keeps its own"


def test_a_model_that_will_not_load_stops_the_run(clip: Path) -> None:
    collected = Collected()
    with pytest.raises(ModelError, match="broke on purpose"):
        run(TrivialJob(str(clip), collected, fail_open=True), workers=2)
    assert collected.closed, "the output is finalized even on failure"
    assert not multiprocess.active_children()


@pytest.mark.parametrize("step", ["compose", "emit"])
def test_an_output_error_stops_the_run_after_the_frames_before_it(clip: Path, step: str) -> None:
    collected = Collected(fail_in=(step, 5))
    job_runner = runner(TrivialJob(str(clip), collected), workers=2)
    with pytest.raises(BadOutputError, match=f"{step} broke on purpose"):
        job_runner.run()
    assert collected.seqs == [0, 1, 2, 3, 4]  # in order, and nothing after the error
    assert collected.closed, "the output is finalized even on failure"
    assert not (Path("/dev/shm") / job_runner.slots_name.lstrip("/")).exists()
    assert not multiprocess.active_children()


def test_a_killed_worker_is_replaced_and_its_frame_parsed_again(clip: Path) -> None:
    collected = Collected()
    stats = run(TrivialJob(str(clip), collected, kill_at=3, kill_times=1), workers=2)
    assert collected.seqs == list(range(12)), "every frame once, in order"
    assert stats.worker_restarts == 1 and stats.retried_frames == 1 and stats.unparsed_frames == []
    assert np.array_equal(collected.labels[3], (collected.images[3][:, :, 0] > 100).astype(np.uint8))
    assert stats.degraded
    assert not multiprocess.active_children()


def test_a_frame_that_kills_every_worker_is_written_unparsed(clip: Path) -> None:
    collected = Collected()
    stats = run(TrivialJob(str(clip), collected, kill_at=3), workers=2)
    assert collected.seqs == list(range(12))
    assert stats.unparsed_frames == [3] and stats.worker_restarts == 2
    assert collected.statuses[3] == "unparsed" and collected.labels[3].max() == 0
    assert set(collected.statuses[:3] + collected.statuses[4:]) == {"ok"}


def test_a_hung_worker_is_killed_after_the_frame_timeout(clip: Path) -> None:
    collected = Collected()
    started = time.monotonic()
    stats = runner(TrivialJob(str(clip), collected, hang_at=2, kill_times=1), workers=1, frame_timeout_s=2.0).run()
    assert collected.seqs == list(range(12))
    assert stats.worker_restarts == 1 and stats.unparsed_frames == []
    assert time.monotonic() - started < 30


def test_a_frame_error_is_retried_then_given_up(clip: Path) -> None:
    collected = Collected()
    stats = run(TrivialJob(str(clip), collected, raise_at=4), workers=2)
    assert collected.seqs == list(range(12))
    assert stats.unparsed_frames == [4] and stats.worker_restarts == 0 and stats.retried_frames == 1


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


class StallingSource(VideoSource):
    """A source whose first incarnation (every one, with ``always``) goes silent after five frames; the next one
    keeps going. Each incarnation appends the first frame it decoded to ``marker``."""

    def __init__(self, url: str, stop, marker: str, resume_at: int, always: bool) -> None:
        super().__init__(url, stop=stop, resume_at=resume_at)
        self.marker = Path(marker)
        self.always = always

    def frames(self):
        first_life = self.always or not self.marker.exists()
        for frame in super().frames():
            if frame.seq == self.resume_at:
                with self.marker.open("a") as marker:
                    marker.write(f"{frame.seq}\n")
            if first_life and frame.seq == 5:
                time.sleep(3600)
            yield frame


@dataclass
class StallingJob(TrivialJob):
    marker: str = field(default_factory=lambda: tempfile.mktemp(prefix="vidparse-stall-"))
    always: bool = False

    def make_source(self, stop, on_attempt=None, resume_at=0) -> VideoSource:
        return StallingSource(self.url, stop, self.marker, resume_at, self.always)


def test_the_watchdog_restarts_a_silent_source_and_the_output_carries_on(clip: Path) -> None:
    collected = Collected()
    job = StallingJob(str(clip), collected, jitter_s=0.0)
    stats = runner(job, workers=1, source_timeout_s=2.0).run()
    assert stats.source_restarts == 1
    assert collected.seqs == list(range(12)), "a file resumes where it stopped: every frame once"
    assert Path(job.marker).read_text().split() == ["0", "5"], "the replacement's first frame is the one after"
    reference = Collected()
    run(TrivialJob(str(clip), reference, jitter_s=0.0), workers=1)
    assert all(np.array_equal(a, b) for a, b in zip(collected.images, reference.images))
    assert not multiprocess.active_children()


def test_drop_policy_keeps_only_the_newest_waiting_frame(clip: Path) -> None:
    collected = Collected()
    stats = runner(TrivialJob(str(clip), collected, jitter_s=0.3), workers=1, queue_size=4, drop_oldest=True).run()
    assert stats.dropped_frames > 0 and len(collected.seqs) + stats.dropped_frames == 12
    assert collected.seqs == sorted(collected.seqs) and collected.seqs[-1] == 11, "the newest frame wins"


def test_stop_finishes_the_frames_in_flight_and_ends_the_run(clip: Path) -> None:
    collected = Collected()
    stopping = runner(TrivialJob(str(clip), collected, jitter_s=0.1), workers=2)
    stopping.subscribers.append(lambda written, stats: stopping.stop() if stats.frames == 3 else None)
    stats = stopping.run()
    assert 3 <= stats.frames < 12 and collected.seqs == list(range(stats.frames))
    assert collected.closed and not multiprocess.active_children()


def test_the_watchdog_gives_up_on_a_source_that_keeps_stalling(clip: Path) -> None:
    job = StallingJob(str(clip), Collected(), jitter_s=0.0, always=True)
    with pytest.raises(PipelineError, match="stalled 3 times"):
        runner(job, workers=1, source_timeout_s=1.0, max_source_restarts=2).run()
    assert not multiprocess.active_children()
