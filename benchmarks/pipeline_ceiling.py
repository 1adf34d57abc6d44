"""The pipeline's own ceiling: a video through the real engine (source process, hub, workers, compose, emit, the
default output) with a parser that costs nothing: each frame's parse was recorded once (`evaluation/replay.py`)
and the workers replay it. What is left is the pipeline's cost per frame, and the busy time of each thread every
frame passes one at a time (hub, compose, emit) says which one caps it.

The parses are recorded on the first run (``--recording``, about a minute for 300 vtest frames) and reused.
``--config`` takes a YAML file or preset, as `vidparse run` does. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/pipeline_ceiling.py ../shared/data/video/vtest.avi \\
        --frames 300 --workers 1,2 [--rounds 2] [--config C]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from vidparse.config import load_config
from vidparse.evaluation.replay import ReplaySpec, recorded
from vidparse.jobs import StreamSpec, build_engine, stream_settings
from vidparse.pipeline.runner import Runner
from vidparse.pipeline.stats import SERIAL_THREADS, RunStats


def run_once(config, video: str, frames: int, recording: Path) -> RunStats:
    with tempfile.TemporaryDirectory(prefix="vidparse-ceiling-") as scratch:
        spec = StreamSpec(config, video, Path(scratch) / "out.mp4", max_frames=frames)
        engine = build_engine(config, [spec], parser=ReplaySpec(recording))
        return Runner(engine, spec, stream_settings(config, video)).run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--config", default=None)
    parser.add_argument("--recording", type=Path, default=None,
                        help="the recorded parses (default: in the temp folder, by video, model and frames)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # says when the parses are being recorded
    config = load_config(Path(args.config) if args.config else None)
    recording = recorded(config, args.video, args.frames, args.recording)
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    for workers in (int(w) for w in args.workers.split(",")):
        trials = [run_once(replace(config, workers=workers), args.video, args.frames, recording)
                  for _ in range(args.rounds)]
        rows.append((workers, trials))
    print(f"load average after: {os.getloadavg()}")
    print(f"\n{config.model} parses replayed, {args.frames} frames of {Path(args.video).name}, default output "
          f"(x264 {config.output.preset}), temporal window {config.temporal.window}, tracking "
          f"{'on' if config.tracking.enabled else 'off'}\n")
    print("| workers | fps (steady, median) | runs | " + " | ".join(f"{t} busy ms/frame" for t in SERIAL_THREADS)
          + " | serial ceiling fps | compose stage ms | encode ms |")
    print("|---:|---:|---|" + "---:|" * (len(SERIAL_THREADS) + 3))
    for workers, trials in rows:
        best = max(trials, key=lambda s: s.steady_fps)
        serial = best.serial_ms()
        stage = {name: seconds / max(1, best.frames) * 1000 for name, seconds in best.stage_s.items()}
        print(f"| {workers} | {statistics.median(s.steady_fps for s in trials):.1f} | "
              f"{', '.join(f'{s.steady_fps:.1f}' for s in trials)} | "
              + " | ".join(f"{serial.get(t, 0.0):.1f}" for t in SERIAL_THREADS)
              + f" | {best.serial_ceiling_fps or 0:.0f} | {stage.get('compose', 0):.1f} | {stage.get('encode', 0):.1f} |")


if __name__ == "__main__":
    main()
