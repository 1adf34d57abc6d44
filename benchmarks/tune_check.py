"""Does `vidparse tune` pick well? Its short trials against long runs of every layout of the same grid.

Runs tune's trials (warm-up, then --seconds of measuring) for every (workers, threads) layout, then each layout
again over --frames frames (the `vidparse bench` measurement: steady fps after the first frame), and prints both
with the pick's long-run fps as a share of the best long-run fps. docs/tuning.md holds a run.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/tune_check.py ../shared/data/video/vtest.avi --frames 300
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vidparse import bench
from vidparse.config import load_config
from vidparse.pipeline.cpus import usable_cpus
from vidparse.tune import best, layouts, run_trial


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("video")
    parser.add_argument("--seconds", type=float, default=10, help="tune's measuring time per trial")
    parser.add_argument("--frames", type=int, default=300, help="frames per long run")
    parser.add_argument("--config", type=Path, help="vidparse config file or preset name")
    parser.add_argument("--max-workers", type=int)
    args = parser.parse_args(argv)
    config = load_config(args.config, {})
    cpus = usable_cpus()
    grid = layouts(cpus, args.max_workers)
    trials = [run_trial(config, args.video, layout, args.seconds, cpus) for layout in grid]
    pick = best(trials)
    long_fps = {layout: bench.run_trial(config, args.video, args.frames, layout.workers, layout.threads)
                .stats.steady_fps for layout in grid}
    best_long = max(long_fps.values())
    print(f"machine: {bench.machine_description()}\n")
    print(f"`{Path(args.video).name}`, config `{args.config or 'defaults'}`; tune: {args.seconds:g} s a trial after "
          f"warm-up; long run: first {args.frames} frames\n")
    print("| workers | threads | tune fps | tune p95 frame ms | tune peak MB | tune CPU busy | long-run fps | pick |\n"
          "|---:|---:|---:|---:|---:|---:|---:|---|")
    for trial in trials:
        layout = trial.layout
        print(f"| {layout.workers} | {layout.threads} | {trial.fps:.2f} | {trial.p95_frame_ms:.0f} | "
              f"{trial.peak_mb:.0f} | {trial.cpu_share:.0%} | {long_fps[layout]:.2f} | "
              f"{'**picked**' if trial is pick else ''} |")
    share = long_fps[pick.layout] / best_long
    print(f"\nThe pick ({pick.layout}) runs at {share:.1%} of the best long-run fps of the grid.")
    return 0 if share >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
