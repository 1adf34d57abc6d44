"""`vidparse tune`: short trials of (workers, threads per worker) layouts that fit the usable CPUs, each measured
after a warm-up; the fastest is written as a config file for `vidparse run --config`."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import yaml

from vidparse.bench import scratch_runner
from vidparse.config import Config
from vidparse.errors import BadInputError
from vidparse.names import plural
from vidparse.pipeline.memory import PeakMemory
from vidparse.pipeline.proctree import tree_cpu_seconds
from vidparse.pipeline.stats import RunStats, percentile, serial_ceiling
from vidparse.pipeline.writer import Written
from vidparse.signals import stop_on_signals
from vidparse.stages.source import without_credentials

WORKER_STAGES = ("detect", "parse", "propagate")  # what a worker spends on one frame
MIN_WINDOW_FRAMES = 2  # frames written in the window, the fewest that give a rate


@dataclass(frozen=True)
class Layout:
    workers: int
    threads: int

    def __str__(self) -> str:
        return f"{plural(self.workers, 'worker')} x {plural(self.threads, 'thread')}"


@dataclass
class TrialResult:
    layout: Layout
    frames: int  # frames written in the measuring window
    seconds: float  # length of the measuring window
    p95_frame_ms: float  # a worker's time on one frame (detect, parse, propagate), 95th percentile
    peak_mb: float  # peak PSS of the whole process tree over the trial, start-up included
    cpu_share: float  # CPU time of the process tree over the window / (window x usable CPUs)
    startup_s: float
    serial_ceiling_fps: float | None = None  # 1 / the busiest serial thread's time per frame, in the window

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def layouts(cpus: int, max_workers: int | None = None) -> list[Layout]:
    """Worker and thread counts from powers of two, the CPU count and the counts that fill the CPUs with them;
    every layout uses at most ``cpus`` threads in all."""
    counts = {1 << i for i in range(cpus.bit_length())} | {cpus}
    counts |= {cpus // count for count in counts}
    return [Layout(workers, threads) for workers in sorted(counts) for threads in sorted(counts)
            if workers * threads <= cpus and (max_workers is None or workers <= max_workers)]


@dataclass
class _Window:
    """Watches frames as they are written: the window opens after ``warmup_frames`` and closes ``seconds`` later,
    when the runner is asked to stop."""

    warmup_frames: int
    seconds: float
    stop: Callable[[], None]
    opened_at: float | None = None
    closed_at: float | None = None
    last_at: float | None = None
    frames_at_open: int = 0
    frames: int = 0
    cpu_at_open: float = 0.0
    cpu_s: float = 0.0
    frame_ms: list[float] = field(default_factory=list)
    serial_at_open: dict[str, float] = field(default_factory=dict)
    serial_s: dict[str, float] = field(default_factory=dict)  # each serial thread's busy time in the window

    def on_frame(self, written: Written, stats: RunStats) -> None:
        if self.closed_at is not None:
            return  # frames finished after the stop request: outside the window
        if self.opened_at is None:
            if stats.frames >= self.warmup_frames:
                self.opened_at, self.frames_at_open = time.perf_counter(), stats.frames
                self.cpu_at_open = tree_cpu_seconds(os.getpid())
                self.serial_at_open = dict(stats.serial_s)
            return
        now = time.perf_counter()
        self.frame_ms.append(sum(written.result.timings.get(stage, 0.0) for stage in WORKER_STAGES) * 1000)
        self.frames = stats.frames - self.frames_at_open
        self.cpu_s = tree_cpu_seconds(os.getpid()) - self.cpu_at_open
        self.serial_s = {name: busy - self.serial_at_open.get(name, 0.0) for name, busy in stats.serial_s.items()}
        self.last_at = now
        if now - self.opened_at >= self.seconds and self.frames >= MIN_WINDOW_FRAMES:  # slow frames: wait for a rate
            self.closed_at = now
            self.stop()

    @property
    def serial_ceiling_fps(self) -> float | None:
        """As `RunStats.serial_ceiling_fps`, over the window only: start-up (the encoder opening, the first frames)
        would put the ceiling under the fps measured."""
        return serial_ceiling(self.frames, self.serial_s)

    @property
    def elapsed_s(self) -> float:
        """The window's length; a window the input's end closed early ends at its last frame."""
        if self.opened_at is None or self.last_at is None:
            return 0.0
        return self.last_at - self.opened_at


def warmup_frames(layout: Layout) -> int:
    """Frames written before a trial's window opens: the workers' start-up is not measured."""
    return max(3, 2 * layout.workers)


def check_long_enough(input_url: str, frames: int, grid: list[Layout]) -> None:
    """A `BadInputError` where an input of ``frames`` (its header's count) cannot fill every layout's warm-up and
    window: said before any trial rather than after the first ones."""
    layout = max(grid, key=warmup_frames)
    if frames < warmup_frames(layout) + MIN_WINDOW_FRAMES:
        raise too_short(input_url, layout, frames)


def too_short(input_url: str, layout: Layout, frames: int) -> BadInputError:
    return BadInputError(f"{without_credentials(input_url)} is too short to measure {layout}: {frames} frames, where "
                         f"the warm-up takes {warmup_frames(layout)} and the measure {MIN_WINDOW_FRAMES} more",
                         hint="tune on a longer video")


def run_trial(config: Config, input_url: str, layout: Layout, seconds: float, cpus: int) -> TrialResult:
    """One layout on the real pipeline: warm up, measure ``seconds`` (or until the input ends), stop."""
    warmup = warmup_frames(layout)
    with scratch_runner(config, input_url, layout.workers, layout.threads) as runner:
        window = _Window(warmup, seconds, runner.stop)
        runner.subscribers.append(window.on_frame)
        with PeakMemory(os.getpid()) as memory, stop_on_signals(runner.stop) as signals:
            stats = runner.run()
    if signals.received:
        raise KeyboardInterrupt
    if window.frames < MIN_WINDOW_FRAMES:
        raise too_short(input_url, layout, stats.frames)
    elapsed = window.elapsed_s
    frame_p95 = percentile(window.frame_ms, 95)
    assert frame_p95 is not None, "two frames or more were measured"
    # capped: each process's CPU time is counted in 10 ms clock ticks, so full CPUs over a short window read 101%
    cpu_share = min(1.0, window.cpu_s / (elapsed * cpus)) if elapsed > 0 else 0.0
    return TrialResult(layout, window.frames, elapsed, frame_p95, memory.peak_mb, cpu_share, stats.startup_s,
                       window.serial_ceiling_fps)


SAME_FPS = 0.97  # layouts this close to the fastest run as fast within a trial's noise


def fastest(results: list[TrialResult]) -> TrialResult:
    return max(results, key=lambda result: result.fps)


def best(results: list[TrialResult]) -> TrialResult:
    """The fastest layout; among those within ``SAME_FPS`` of it (a camera's own rate caps every layout), the one that
    keeps the CPUs least busy."""
    top = fastest(results).fps
    return min((result for result in results if result.fps >= SAME_FPS * top), key=lambda r: r.cpu_share)


def why_picked(pick: TrialResult, results: list[TrialResult]) -> str:
    """Why `best` chose ``pick``, in words: the fastest, or the least busy of those about as fast as the fastest."""
    top = fastest(results)
    if pick.fps >= top.fps:
        return "the fastest of these trials"
    return (f"within {1 - SAME_FPS:.0%} of the fastest ({top.layout}, {top.fps:.2f} fps) and the least busy of "
            "those")


def tuned_config_text(settings: dict[str, Any], pick: TrialResult, results: list[TrialResult], command: str,
                      machine: str, without_small_people: TrialResult | None = None) -> str:
    """The user's settings with the picked layout, as YAML for `vidparse run --config`, the trials as comments (and
    the pick's layout measured without the detector's pass for small people, when it ran); ``command``: the tune
    command as typed."""
    lines = [f"# Written by `{command}` on {date.today().isoformat()} ({machine}).",
             f"# Picked {pick.layout}: {pick.fps:.2f} fps, {why_picked(pick, results)}:",
             "#   workers  threads      fps  p95 frame ms  peak MB  CPU busy"]
    lines += [f"#   {r.layout.workers:7d}  {r.layout.threads:7d}  {r.fps:7.2f}  {r.p95_frame_ms:12.0f}  "
              f"{r.peak_mb:7.0f}  {r.cpu_share:7.0%}" for r in results]
    if without_small_people:
        lines.append(f"# The pass for small people (detector tiles, zoomed looks, the scan where set, finer segmenter "
                     f"cells; docs/crowds.md) ran on this input: {without_small_people.fps:.2f} fps without it (detector.tiles: "
                     "0, detector.zoom_below: 0, detector.scan_below: 0, parsers.cihp-net.wide_frame_width: 0).")
    lines.append("# Use: vidparse run INPUT -o OUTPUT.mp4 --config THIS_FILE")
    body = {**settings, "workers": pick.layout.workers, "threads": pick.layout.threads}
    return "\n".join(lines) + "\n" + yaml.safe_dump(body, sort_keys=False)
