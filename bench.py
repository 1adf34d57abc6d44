"""`vidparse bench`: the real pipeline on the first frames of a video for several worker counts."""

from __future__ import annotations

import platform
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from vidparse.config import Config
from vidparse.errors import BadInputError
from vidparse.jobs import StreamSpec, build_engine, stream_settings
from vidparse.minimums import BENCH_MIN_FRAMES
from vidparse.names import plural
from vidparse.pipeline.cpus import usable_cpus
from vidparse.pipeline.runner import Runner
from vidparse.pipeline.stats import SERIAL_THREADS, RunStats
from vidparse.progress import STAGE_ORDER as STAGES
from vidparse.signals import stop_on_signals
from vidparse.stages.options import CihpNetOptions
from vidparse.stages.parsers.cihp_net import segmenter_detail
from vidparse.stages.source import without_credentials
from vidparse.stages.tiles import small_people_pass, without_small_people


@dataclass
class Trial:
    workers: int
    threads: int
    stats: RunStats
    small_people: str = ""  # whether the pass for small people ran (`small_people_settings`)

    def stage_ms(self, stage: str) -> float:
        return self.stats.stage_s.get(stage, 0.0) / max(1, self.stats.frames) * 1000


def scaling(trials: list[Trial]) -> list[tuple[float, float]]:
    """(speed-up, efficiency) of each trial against the one with the fewest workers and the same small-people
    setting: efficiency 1.0 is fps growing in proportion to the worker count."""
    result = []
    for t in trials:
        base = min((b for b in trials if b.small_people == t.small_people), key=lambda b: b.workers)
        base_fps = base.stats.steady_fps or float("nan")
        result.append((t.stats.steady_fps / base_fps, t.stats.steady_fps / base_fps / (t.workers / base.workers)))
    return result


def finer_segmenter(width: int, config: Config) -> bool:
    """Whether cihp-net's segmenter sees the crops of frames this wide in finer cells (its wide-frame detail)."""
    options = config.parser_options
    return isinstance(options, CihpNetOptions) and segmenter_detail(options, width) > options.segmenter_detail


def without_small_people_config(config: Config) -> Config:
    parsers = {name: replace(options, wide_frame_width=0) if isinstance(options, CihpNetOptions) else options
               for name, options in config.parsers.items()}
    return replace(config, detector=without_small_people(config.detector), parsers=parsers)


def small_people_settings(config: Config, width: int) -> list[tuple[str, Config]]:
    """What to measure on an input this wide, each with its label: the config as given and, when it runs the pass
    for small people on such frames (the detector's tiles, zoomed looks and scan, cihp-net's finer segmenter cells), the
    config without it, to show its cost."""
    if small_people_pass(width, config.detector) or finer_segmenter(width, config):
        return [("on", config), ("off", without_small_people_config(config))]
    configured = small_people_pass(config.detector.tile_min_width, config.detector)
    return [(f"off (under {config.detector.tile_min_width} px wide)" if configured else "off", config)]


@contextmanager
def scratch_runner(config: Config, input_url: str, workers: int, threads: int, **stream_options: Any
                   ) -> Iterator[Runner]:
    """A runner for `vidparse run`'s specs and settings on this input with ``workers`` x ``threads`` (0: an equal
    share of the CPUs), writing its video into a folder that is deleted afterwards."""
    config = replace(config, workers=workers, threads=threads)
    with tempfile.TemporaryDirectory(prefix="vidparse-scratch-") as scratch:
        stream = StreamSpec(config, input_url, Path(scratch) / "out.mp4", **stream_options)
        yield Runner(build_engine(config, [stream]), stream, stream_settings(config, input_url))


def run_trial(config: Config, input_url: str, frames: int, workers: int, threads: int, small_people: str = ""
              ) -> Trial:
    with scratch_runner(config, input_url, workers, threads, max_frames=frames) as runner, \
            stop_on_signals(runner.stop) as signals:
        stats = runner.run()
    if signals.received:
        raise KeyboardInterrupt
    return Trial(workers, runner.engine.settings.threads, stats, small_people)


def frames_measured(trials: list[Trial], asked: int, input_url: str) -> int:
    """The frames each trial ran (fewer than ``asked`` on a short input); an input too short for a steady rate
    (BENCH_MIN_FRAMES) is a user error."""
    frames = min(t.stats.frames for t in trials)
    check_long_enough(input_url, frames)
    return min(frames, asked)


def check_long_enough(input_url: str, frames: int) -> None:
    """A `BadInputError` for an input of fewer than BENCH_MIN_FRAMES ``frames``: too short for a steady rate."""
    if frames < BENCH_MIN_FRAMES:
        raise BadInputError(f"{without_credentials(input_url)} is too short to benchmark: {frames} frames, the steady fps needs "
                            f"{BENCH_MIN_FRAMES}", hint="bench on a longer video")


def machine_description() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{cpu}, {plural(usable_cpus(), 'usable CPU')}, Python {platform.python_version()}, {platform.system()}"


COLUMNS = ("workers", "threads", "small people", "fps", "speed-up", "efficiency", "serial ceiling fps", "start-up s",
           *(f"{s} ms" for s in STAGES), *(f"{s} thread ms" for s in SERIAL_THREADS))


def trial_rows(trials: list[Trial]) -> list[list[str]]:
    """Each trial's cells under `COLUMNS`."""
    rows = []
    for t, (speedup, efficiency) in zip(trials, scaling(trials)):
        serial, ceiling = t.stats.serial_ms(), t.stats.serial_ceiling_fps
        rows.append([str(t.workers), str(t.threads), t.small_people, f"{t.stats.steady_fps:.2f}", f"{speedup:.2f}x",
                     f"{efficiency:.0%}", "n/a" if ceiling is None else f"{ceiling:.0f}", f"{t.stats.startup_s:.1f}",
                     *(f"{t.stage_ms(s):.1f}" for s in STAGES), *(f"{serial.get(s, 0.0):.1f}" for s in SERIAL_THREADS)])
    return rows


def markdown_table(trials: list[Trial], model: str, input_name: str, frames: int) -> str:
    lines = [f"model `{model}`, input `{input_name}`, first {frames} frames. fps is the steady rate after the first "
             "frame; speed-up and efficiency are against the fewest workers; start-up is process start, model loading "
             "and the first frame. Stage times are busy time per frame, summed over workers (parallel stages can add "
             "up to more than the wall time). hub, motion, compose and emit are the threads every frame passes one at a "
             "time (their busy time per frame); "
             "the serial ceiling is 1 / the busiest one's time per frame: more workers cannot go faster. small people: "
             "the pass for small people (the detector's tiles and zoomed looks at small boxes, cihp-net's finer "
             "segmenter cells; docs/crowds.md) on inputs at least detector.tile_min_width or "
             "parsers.cihp-net.wide_frame_width wide (1280 by default), where each worker count also runs without "
             "it, to show its cost.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in trial_rows(trials)]
    return "\n".join(lines) + "\n"
