"""Quality runs: parse a labelled image folder or a video through the same stage as `vidparse run`, and report."""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidparse.config import Config
from vidparse.errors import BadOutputError
from vidparse.evaluation.datasets import Sample, read_sample
from vidparse.evaluation.metrics import FlickerCount, FlickerMeter, coarse_lut, confusion, iou_per_class, pixel_accuracy, producible
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import COARSE_CLASSES, load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.source import VideoSource
from vidparse.stages.temporal import TemporalVote
from vidparse.stages.types import LabelSet

MODEL_CANNOT = "n/a: the model cannot produce it"
TRUTH_LACKS = "n/a: the ground truth has no such class"
ABSENT = "n/a: on neither side in these images"


@dataclass
class ClassScore:
    name: str
    iou: float | None  # None when not scored; ``note`` says why
    truth_pixels: int  # before leaving anything out
    predicted_pixels: int
    note: str = ""


@dataclass
class ImageReport:
    model: str
    truth: str
    images: int
    settings: dict[str, Any]
    classes: list[ClassScore]
    miou: float | None  # mean IoU over the classes scored
    pixel_accuracy: float | None  # over the pixels scored
    scored_share: float  # share of all pixels scored (the rest: ignored or n/a classes on either side)


@dataclass
class FlickerRow:
    mode: str
    considered: int
    flipped: int
    rate: float | None


@dataclass
class VideoReport:
    model: str
    video: str
    frames: int
    settings: dict[str, Any]
    still_threshold: int
    rows: list[FlickerRow]


def quality_settings(config: Config) -> dict[str, Any]:
    """The configuration keys that change parsing quality, as reported with every result."""
    return {"model": config.model, "roi": dataclasses.asdict(config.roi),
            "detector": {"score_threshold": config.detector.score_threshold},
            "temporal": dataclasses.asdict(config.temporal)}


def evaluate_images(config: Config, models: ResolvedModels, truth: LabelSet, samples: Sequence[Sample],
                    threads: int | None = None, on_sample: Callable[[Sample], None] | None = None) -> ImageReport:
    """Parse every sample image as a video frame is parsed and score it against its label map, on coarse classes."""
    predicted_set = load_label_set(LABEL_SETS[config.model])
    scored = producible(predicted_set) & producible(truth)
    luts = coarse_lut(truth, scored), coarse_lut(predicted_set, scored)
    every = set(COARSE_CLASSES)
    full_luts = coarse_lut(truth, every), coarse_lut(predicted_set, every)
    matrix = np.zeros((len(COARSE_CLASSES),) * 2, np.int64)
    counts = np.zeros((2, len(COARSE_CLASSES)), np.int64)
    total = 0
    parser = build_person_parser(config, models, threads)
    parser.open()
    try:
        for sample in samples:
            image, truth_labels = read_sample(sample, truth)
            predicted, _ = parser.process(image)
            matrix += confusion(luts[0][truth_labels], luts[1][predicted])
            for side, labels in enumerate((truth_labels, predicted)):
                counts[side] += np.bincount(full_luts[side][labels].ravel(), minlength=256)[:len(COARSE_CLASSES)]
            total += truth_labels.size
            if on_sample:
                on_sample(sample)
    finally:
        parser.close()
    return _image_report(config, truth, len(samples), matrix, counts, total, producible(truth), producible(predicted_set))


def _image_report(config: Config, truth: LabelSet, images: int, matrix: np.ndarray, counts: np.ndarray, total: int,
                  truth_classes: set[str], predicted_classes: set[str]) -> ImageReport:
    ious = iou_per_class(matrix)
    classes = []
    for index, name in enumerate(COARSE_CLASSES):
        note = (TRUTH_LACKS if name not in truth_classes else MODEL_CANNOT if name not in predicted_classes
                else ABSENT if math.isnan(ious[index]) else "")
        classes.append(ClassScore(name, None if note else float(ious[index]), int(counts[0, index]),
                                  int(counts[1, index]), note))
    scored = [c.iou for c in classes if c.iou is not None]
    accuracy = pixel_accuracy(matrix)
    return ImageReport(model=config.model, truth=truth.name, images=images, settings=quality_settings(config),
                       classes=classes, miou=float(np.mean(scored)) if scored else None,
                       pixel_accuracy=None if math.isnan(accuracy) else accuracy,
                       scored_share=float(matrix.sum() / total) if total else 0.0)


def evaluate_video(config: Config, models: ResolvedModels, url: str, max_frames: int | None = None,
                   threads: int | None = None, on_frame: Callable[[int], None] | None = None) -> VideoReport:
    """Label flicker of per-frame parsing on a clip, and of the configured temporal vote when it is on."""
    still = config.temporal.still_threshold
    meters = {"per-frame": FlickerMeter(still)}
    vote = TemporalVote(config.temporal) if config.temporal.window > 1 else None
    if vote:
        meters[f"per-frame + vote over {config.temporal.window} frames"] = FlickerMeter(still)
    source = VideoSource(url, max_frames=max_frames)
    parser = build_person_parser(config, models, threads)
    frames = 0
    source.open()
    parser.open()
    try:
        for frame in source.frames():
            labels, _ = parser.process(frame.image, frame.seq)
            outputs = [labels, vote.process(labels, frame.image)] if vote else [labels]
            for meter, output in zip(meters.values(), outputs):
                meter.update(frame.image, output)
            frames += 1
            if on_frame:
                on_frame(frame.seq)
    finally:
        parser.close()
        source.close()
    rows = [_flicker_row(mode, meter.count) for mode, meter in meters.items()]
    return VideoReport(config.model, url, frames, quality_settings(config), still, rows)


def _flicker_row(mode: str, count: FlickerCount) -> FlickerRow:
    return FlickerRow(mode, count.considered, count.flipped, None if math.isnan(count.rate) else count.rate)


def write_json(report: ImageReport | VideoReport, path: Path) -> None:
    try:
        path.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    except OSError as exc:
        raise BadOutputError(f"cannot write {path}: {exc.strerror or exc}", hint="check the folder exists and is writable") from exc
