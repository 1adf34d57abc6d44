"""Parsers side by side: steady fps of the real pipeline (`vidparse bench`'s trial) for each model on the same frames,
in one run, alternating the models so that a change in the machine's load hits all of them alike.

Prints the load average before and after (a ratio is only worth keeping when both stay under 2) and a Markdown
table. Usage, from the repository root, on a quiet machine:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/model_speed.py ../shared/data/video/vtest.avi \\
        --models cihp-lite,cihp-net --frames 200 --workers 2 --rounds 2
"""

from __future__ import annotations

import argparse
import os
import statistics

from vidparse.bench import machine_description, run_trial
from vidparse.config import load_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input")
    parser.add_argument("--models", default="cihp-lite,cihp-net")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2, help="Trials per model, alternating.")
    args = parser.parse_args()
    models = args.models.split(",")
    print(f"load average before: {os.getloadavg()}", flush=True)
    fps: dict[str, list[float]] = {model: [] for model in models}
    for round_index in range(args.rounds):
        for model in models:
            trial = run_trial(load_config(overrides={"model": model}), args.input, args.frames, args.workers, 0)
            fps[model].append(trial.stats.steady_fps)
            print(f"round {round_index + 1} {model}: {trial.stats.steady_fps:.2f} fps", flush=True)
    print(f"load average after: {os.getloadavg()}")
    print(f"\nmachine: {machine_description()}; {args.frames} frames of {os.path.basename(args.input)}, "
          f"{args.workers} workers, {args.rounds} alternating trials per model\n")
    base = statistics.median(fps[models[0]])
    print(f"| model | fps (median) | trials | vs {models[0]} |\n|---|---:|---|---:|")
    for model in models:
        median = statistics.median(fps[model])
        print(f"| {model} | {median:.2f} | {', '.join(f'{v:.2f}' for v in fps[model])} | {median / base:.2f}x |")


if __name__ == "__main__":
    main()
