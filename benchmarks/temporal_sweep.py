"""Temporal smoothing settings side by side on one clip: each frame parsed once (recorded, `evaluation/replay.py`),
then written with per-frame parsing and with each ``--variant`` of the `temporal:` keys (tracking as configured), and
measured as `vidparse eval-video` measures: agreement of consecutive label maps with the motion taken out (each
moved by the input's optical flow, where that flow is reliable), agreement with the frame's own parse, pixel flicker.

A variant is ``key=value`` pairs of `temporal:` separated by commas (``window=3,part_hold=0``); an empty one is
the configured defaults. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/temporal_sweep.py ../shared/data/video/vtest.avi \\
        --frames 300 --variant "" --variant "flow_scale=0.5" --variant "part_hold=0" [--config C --recording R]
"""

from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

import yaml

from vidparse.config import build, load_config
from vidparse.evaluation.replay import load_recording, recorded
from vidparse.evaluation.runs import VideoMode, video_rows
from vidparse.stages.labels import load_label_set
from vidparse.stages.options import TemporalOptions
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.source import VideoSource


def variant(base: TemporalOptions, text: str) -> TemporalOptions:
    """``base`` with the ``key=value`` pairs of ``text`` (values read as YAML), checked as the config is."""
    changes = {key.strip(): yaml.safe_load(value) for key, value in
               (pair.split("=", 1) for pair in text.split(",") if pair.strip())}
    return build(TemporalOptions, {**base.__dict__, **changes}, "temporal.")


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--variant", action="append", default=[], help="temporal keys, e.g. window=3,decay=0.9")
    parser.add_argument("--recording", type=Path, default=None, help="recorded parses (default: in the temp folder)")
    parser.add_argument("--config", default=None, help="a YAML file or preset, as `vidparse run --config` takes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")  # says when the parses are being recorded
    config = load_config(Path(args.config) if args.config else None)
    recording = load_recording(recorded(config, args.video, args.frames, args.recording))
    variants = [variant(config.temporal, text) for text in args.variant or [""]]
    modes = [VideoMode(replace(config.temporal, window=1, part_window=1), False)]
    modes += [VideoMode(options, config.tracking.enabled) for options in variants]
    source = VideoSource(args.video, max_frames=len(recording))
    source.open()
    try:
        frames = ((frame.image, recording.labels[frame.seq], recording.results[frame.seq])
                  for frame in source.frames())
        rows = video_rows(frames, load_label_set(LABEL_SETS[config.model]), config, modes)
    finally:
        source.close()
    print(f"\n{config.model}, {len(recording)} frames of {Path(args.video).name}, tracking "
          f"{'on' if config.tracking.enabled else 'off'}; load average after: {os.getloadavg()}\n")
    print("| temporal | moved by flow: person IoU % | part mIoU % | vs parse: person IoU % | part mIoU % "
          "| pixel flicker % |\n|---|---:|---:|---:|---:|---:|")
    for mode, row in zip(modes, rows):
        options = "per-frame parse" if mode.vote.window == 1 and mode.vote.part_window == 1 else ", ".join(
            f"{k}={v}" for k, v in mode.vote.__dict__.items())
        print(f"| {options} | {percent(row.warped_person)} | {percent(row.warped_part)} | "
              f"{percent(row.parse_person)} | {percent(row.parse_part)} | {percent(row.rate)} |")


if __name__ == "__main__":
    main()
