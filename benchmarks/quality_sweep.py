"""Parsing-quality sweep: coarse-class mIoU on CIHP and CCP for whole-frame versus ROI parsing and each ROI knob
(one at a time, around configs/default.yaml), then label flicker and flow-warped agreement on vtest for several
temporal votes.

Prints Markdown tables; docs/quality.md holds a run. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/quality_sweep.py --shared ../shared --frames 100
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

from vidparse.config import load_config
from vidparse.evaluation.datasets import find_samples
from vidparse.evaluation.runs import ImageReport, VideoMode, evaluate_images, parsed_frames, video_rows
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.roi import crop_person
from vidparse.stages.source import VideoSource
from vidparse.stages.temporal import TemporalOptions

DATASETS = ("cihp", "ccp")
VTEST = Path("data/video/vtest.avi")
PERSON_HEIGHTS = (192, 256, 384, 512, 640)
SCORE_THRESHOLDS = (0.4, 0.5, 0.6)
SWEEP: list[tuple[str, dict[str, Any]]] = [
    ("defaults", {}),
    ("whole frame", {"roi.mode": "whole"}),
    *((f"margin {v}", {"roi.margin": v}) for v in (0.05, 0.15, 0.3)),
    *((f"person height {v}", {"roi.person_height": v}) for v in PERSON_HEIGHTS),
    *((f"score threshold {v}", {"detector.score_threshold": v}) for v in SCORE_THRESHOLDS),
]
VOTES = [VideoMode(TemporalOptions(window=1), tracked=False)] + [
    VideoMode(TemporalOptions(window=w, part_window=w + 2, part_hold=hold), tracked=False)
    for w in (3, 5, 7) for hold in (0.0, 0.3)]


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def image_sweep(shared: Path, threads: int) -> None:
    print("| setting | " + " | ".join(f"{d.upper()} mIoU | {d.upper()} pixel acc." for d in DATASETS)
          + " | mean mIoU |\n|---|" + "---:|" * (2 * len(DATASETS) + 1))
    seen: dict[str, list[ImageReport]] = {}
    for name, overrides in SWEEP:
        config = load_config(overrides=overrides)
        key = repr(config.to_dict())
        if key not in seen:  # a sweep value equal to the default is the defaults row again
            models = ResolvedModels.for_config(config)
            seen[key] = [evaluate_images(config, models, load_label_set(d),
                                         find_samples(shared / "data" / d / "images", shared / "data" / d / "labels"),
                                         threads) for d in DATASETS]
        reports = seen[key]
        mean = sum(r.miou or 0.0 for r in reports) / len(reports)
        print(f"| {name} | " + " | ".join(f"{percent(r.miou)} | {percent(r.pixel_accuracy)}" for r in reports)
              + f" | {percent(mean)} |", flush=True)


def vtest_frames(shared: Path, frames: int) -> list[np.ndarray]:
    source = VideoSource(str(shared / VTEST), max_frames=frames)
    source.open()
    try:
        return [frame.image for frame in source.frames()]
    finally:
        source.close()


def detections(shared: Path, frames: int, threads: int) -> None:
    """People found per vtest frame for each score threshold: the photos have one or two large people, vtest
    has about eight small ones, scored 0.5 to 0.9."""
    images = vtest_frames(shared, frames)
    print(f"\n| score threshold | persons per vtest frame (frames 0-{len(images) - 1}) |\n|---|---:|")
    for threshold in SCORE_THRESHOLDS:
        config = load_config(overrides={"detector.score_threshold": threshold})
        detector = build_person_parser(config, ResolvedModels.for_config(config), threads).detector
        detector.open()
        print(f"| {threshold} | {sum(len(detector.process(image)) for image in images) / len(images):.1f} |", flush=True)
        detector.close()


def parser_input(shared: Path, frames: int, threads: int) -> None:
    """Pixels the parser is given per vtest frame (people ~100 px tall) for each person height. Parser time grows
    with them, and unlike a timing they do not depend on what else runs on the machine."""
    images = vtest_frames(shared, frames)
    config = load_config()
    detector = build_person_parser(config, ResolvedModels.for_config(config), threads).detector
    detector.open()
    boxes = [detector.process(image).boxes for image in images]
    detector.close()
    print(f"\n| person height | parser input, kilopixels per vtest frame (frames 0-{len(images) - 1}) |\n|---|---:|")
    for height in PERSON_HEIGHTS:
        pixels = sum(crop_person(image, box, config.roi.margin, height).image.shape[1] * height
                     for image, frame_boxes in zip(images, boxes) for box in frame_boxes)
        print(f"| {height} | {pixels / len(images) / 1000:.0f} |")


def flicker_sweep(shared: Path, frames: int, threads: int) -> None:
    config = load_config()
    parsed = list(parsed_frames(config, ResolvedModels.for_config(config), str(shared / VTEST), frames, threads))
    print(f"\nvtest.avi frames 0-{len(parsed) - 1}, {config.model}, roi {config.roi.mode}\n")
    print("| labels | flicker % | coarse flicker % | moved by flow: part mIoU % | person IoU % | vs parse: person IoU % "
          "|\n|---|---:|---:|---:|---:|---:|")
    for vote, row in zip(VOTES, video_rows(parsed, load_label_set(LABEL_SETS[config.model]), config, VOTES)):
        print(f"| {row.mode}, parts over {vote.vote.part_window} held {vote.vote.part_hold} | {percent(row.rate)} | "
              f"{percent(row.coarse_rate)} | {percent(row.warped_part)} | {percent(row.warped_person)} | "
              f"{percent(row.parse_person)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared"), help="folder holding data/ (see README)")
    parser.add_argument("--frames", type=int, default=100, help="vtest frames for the flicker sweep; 0 skips it")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads")
    args = parser.parse_args()
    image_sweep(args.shared, args.threads)
    if args.frames:
        detections(args.shared, args.frames, args.threads)
        parser_input(args.shared, args.frames, args.threads)
        flicker_sweep(args.shared, args.frames, args.threads)


if __name__ == "__main__":
    main()
