"""Quality runs: parse a labelled image folder or a video through the same stage as `vidparse run`, and report."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vidparse.config import Config
from vidparse.errors import BadInputError, BadOutputError, StreamLostError
from vidparse.evaluation.datasets import Sample, read_sample
from vidparse.evaluation.metrics import (OTHER, STILL_THRESHOLD, FlickerMeter, coarse_lut, confusion, iou_per_class,
                                         pixel_accuracy, producible)
from vidparse.evaluation.tracking import AgreementMeter, IdSwitchMeter, InputFlow, PresenceMeter, WarpedAgreementMeter
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.minimums import EVAL_VIDEO_MIN_FRAMES
from vidparse.stages.labels import SCHEMES, load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.source import VideoSource, without_credentials
from vidparse.stages.temporal import TemporalOptions
from vidparse.stages.track_labels import OrderedLabels
from vidparse.stages.types import FrameResult, LabelSet

MODEL_CANNOT = "n/a: the model cannot produce it"
TRUTH_LACKS = "n/a: the ground truth has no such class"
ABSENT = "n/a: on neither side in these images"

log = logging.getLogger(__name__)


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
    scheme: str  # the classes scored: "coarse" (body regions) or "garments" (stages/labels.py)
    classes: list[ClassScore]
    miou: float | None  # mean IoU over the classes scored
    pixel_accuracy: float | None  # over the pixels scored
    scored_share: float  # share of all pixels scored (the rest: ignored or n/a classes on either side)


@dataclass
class FlickerRow:
    mode: str
    frames: int
    considered: int  # pixels that stood still between two frames and that either frame labels as a person
    flipped: int  # of those, the pixels whose label changed
    coarse_flipped: int  # ... whose coarse class changed (BodyPix flips front and back parts a lot)
    rate: float | None  # flipped / considered
    coarse_rate: float | None
    person_frames: int  # persons written, summed over frames (bridged ones included)
    presence_flickers: int  # persons present, then missing for 1 to 3 frames, then present again
    part_agreement: float | None  # part mIoU of each label map against the one before it
    person_agreement: float | None  # person IoU of each label map against the one before it
    id_switches: int | None  # against the ground truth (--truth), tracked modes only
    warped_part: float | None = None  # part mIoU of each label map moved by the input's flow against the next
    warped_person: float | None = None  # ... person IoU (where the flow is reliable)
    parse_part: float | None = None  # part mIoU of the labels written against the frame's own parse
    parse_person: float | None = None  # ... person IoU


@dataclass
class VideoMode:
    vote: TemporalOptions
    tracked: bool

    @property
    def name(self) -> str:
        if self.vote.window == 1:
            return "tracked" if self.tracked else "per-frame"
        name = f"vote over {self.vote.window} parses moved by flow"
        return name + " + tracked" if self.tracked else name


class _ModeRun:
    """One way of writing the parsed frames (with or without tracking and the vote), and its meters."""

    def __init__(self, mode: VideoMode, label_set: LabelSet, config: Config,
                 truth: dict[int, list[tuple[int, np.ndarray]]] | None) -> None:
        self.mode = mode
        self.stages = OrderedLabels(label_set, mode.vote, config.tracking if mode.tracked else None, config.roi.margin)
        self.flicker = FlickerMeter(label_set)
        self.presence = PresenceMeter()
        self.agreement = AgreementMeter(len(label_set))
        self.warped = WarpedAgreementMeter(len(label_set))
        self.parse = AgreementMeter(len(label_set))
        self.ids = IdSwitchMeter(truth) if truth is not None and self.stages.tracks else None

    def update(self, image: np.ndarray, labels: np.ndarray, result: FrameResult, flow: InputFlow) -> None:
        tracked = self.stages.process(labels, image, result, self.stages.measure(image, labels, result.seq))
        persons = tracked.result.persons
        self.flicker.update(image, tracked.labels)
        self.presence.update(np.array([p.box for p in persons], np.float32).reshape(-1, 4))
        self.agreement.update(tracked.labels)
        self.warped.update_warped(tracked.labels, flow)
        self.parse.add(labels, tracked.labels)
        if self.ids:  # the tracker gives every person an id
            self.ids.update(result.seq, [(p.track_id, np.array(p.box)) for p in persons if p.track_id is not None])

    def row(self) -> FlickerRow:
        count = self.flicker.count

        def share(part: int) -> float | None:
            return part / count.considered if count.considered else None

        return FlickerRow(self.mode.name, count.frames, count.considered, count.flipped, count.coarse_flipped,
                          share(count.flipped), share(count.coarse_flipped), self.presence.person_frames,
                          self.presence.flickers, self.agreement.part_miou, self.agreement.person_iou,
                          self.ids.switches if self.ids and self.ids.truth_boxes else None,
                          self.warped.part_miou, self.warped.person_iou,
                          self.parse.part_miou, self.parse.person_iou)


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
    return {"model": config.model, "model_path": config.model_path, "roi": dataclasses.asdict(config.roi),
            "detector": {"score_threshold": config.detector.score_threshold, "tiles": config.detector.tiles},
            "temporal": dataclasses.asdict(config.temporal), "tracking": dataclasses.asdict(config.tracking)}


class Tally:
    """What scoring images adds up: a confusion matrix over a scheme's classes and per-class pixel counts on both
    sides."""

    def __init__(self, truth: LabelSet, predicted: LabelSet, scheme: str) -> None:
        self.scheme = scheme
        self.truth_classes, self.predicted_classes = producible(truth, scheme), producible(predicted, scheme)
        scored = self.truth_classes & self.predicted_classes
        self.luts = coarse_lut(truth, scored, scheme=scheme), coarse_lut(predicted, scored, rest=OTHER, scheme=scheme)
        every = set(SCHEMES[scheme])
        self.full_luts = coarse_lut(truth, every, scheme=scheme), coarse_lut(predicted, every, scheme=scheme)
        self.matrix = np.zeros((OTHER + 1,) * 2, np.int64)
        self.counts = np.zeros((2, len(SCHEMES[scheme])), np.int64)
        self.pixels = self.images = 0

    def add(self, truth: np.ndarray, predicted: np.ndarray) -> None:
        self.matrix += confusion(self.luts[0][truth], self.luts[1][predicted])
        classes = len(SCHEMES[self.scheme])
        for side, labels in enumerate((truth, predicted)):
            self.counts[side] += np.bincount(self.full_luts[side][labels].ravel(), minlength=256)[:classes]
        self.pixels += truth.size
        self.images += 1


def evaluate_images(config: Config, models: ResolvedModels, truth: LabelSet, samples: Sequence[Sample],
                    threads: int | None = None, on_sample: Callable[[Sample], None] | None = None,
                    scheme: str = "coarse") -> ImageReport:
    """Parse every sample image as a video frame is parsed and score it against its label map, on the classes of
    ``scheme``."""
    tally = Tally(truth, load_label_set(LABEL_SETS[config.model]), scheme)
    parser = build_person_parser(config, models, threads)
    parser.open()
    try:
        for sample in samples:
            image, truth_labels = read_sample(sample, truth)
            tally.add(truth_labels, parser.process(image)[0])
            if on_sample:
                on_sample(sample)
    finally:
        parser.close()
    return image_report(truth, tally, config.model, quality_settings(config))


def image_report(truth: LabelSet, tally: Tally, model: str, settings: dict[str, Any]) -> ImageReport:
    ious = iou_per_class(tally.matrix)
    classes = []
    for index, name in enumerate(SCHEMES[tally.scheme]):
        note = (TRUTH_LACKS if name not in tally.truth_classes else MODEL_CANNOT if name not in tally.predicted_classes
                else ABSENT if math.isnan(ious[index]) else "")
        classes.append(ClassScore(name, None if note else float(ious[index]), int(tally.counts[0, index]),
                                  int(tally.counts[1, index]), note))
    scored = [c.iou for c in classes if c.iou is not None]
    accuracy = pixel_accuracy(tally.matrix)
    return ImageReport(model=model, truth=truth.name, images=tally.images, settings=settings,
                       scheme=tally.scheme, classes=classes, miou=float(np.mean(scored)) if scored else None,
                       pixel_accuracy=None if math.isnan(accuracy) else accuracy,
                       scored_share=float(tally.matrix.sum() / tally.pixels) if tally.pixels else 0.0)


def parsed_frames(config: Config, models: ResolvedModels, url: str, max_frames: int | None = None,
                  threads: int | None = None, on_frame: Callable[[], None] | None = None
                  ) -> Iterator[tuple[np.ndarray, np.ndarray, FrameResult]]:
    """(image, labels, result) of each frame of a video, parsed as `vidparse run` parses it, in order."""
    source = VideoSource(url, max_frames=max_frames, live=config.live)
    parser = build_person_parser(config, models, threads)
    source.open()
    seen = 0
    try:
        parser.open()
        for frame in source.frames():
            yield frame.image, *parser.process(frame.image, frame.seq)
            seen += 1
            if on_frame:
                on_frame()
    except StreamLostError as exc:  # a live stream that ended: its frames are measured
        if not seen:
            raise
        log.warning("%s: measuring the %d frames received", exc.message, seen)
    finally:
        parser.close()
        source.close()


def video_modes(config: Config) -> list[VideoMode]:
    """Per-frame parsing (the reference), and as `vidparse run` writes it (the configured vote and tracking) when
    either is on."""
    modes = [VideoMode(TemporalOptions(window=1), False)]
    if config.temporal.window > 1 or config.tracking.enabled:
        modes.append(VideoMode(config.temporal, config.tracking.enabled))
    return modes


def video_rows(frames: Iterable[tuple[np.ndarray, np.ndarray, FrameResult]], label_set: LabelSet, config: Config,
               modes: Sequence[VideoMode], truth: dict[int, list[tuple[int, np.ndarray]]] | None = None
               ) -> list[FlickerRow]:
    """Pixel flicker, presence flicker, consecutive-frame agreement with and without the motion (and ID switches
    against ``truth``) of the parsed frames written each way, and their agreement with the frame's own parse."""
    runs = [_ModeRun(mode, label_set, config, truth) for mode in modes]
    for run in runs:
        run.stages.open()
    flow = InputFlow()
    for image, labels, result in frames:
        flow.update(image)
        for run in runs:
            run.update(image, labels, result, flow)
    return [run.row() for run in runs]


def check_long_enough(url: str, frames: int) -> None:
    """A `BadInputError` for a video of fewer than EVAL_VIDEO_MIN_FRAMES ``frames`` (0: not known, not refused)."""
    if 0 < frames < EVAL_VIDEO_MIN_FRAMES:
        raise BadInputError(f"{without_credentials(url)} is too short to measure: {frames} frame"
                            f"{'' if frames == 1 else 's'}, where flicker and agreement compare each frame with the one "
                            f"before ({EVAL_VIDEO_MIN_FRAMES} frames at least)", hint="measure on a longer video")


def evaluate_video(config: Config, models: ResolvedModels, url: str, max_frames: int | None = None,
                   threads: int | None = None, on_frame: Callable[[], None] | None = None,
                   truth: dict[int, list[tuple[int, np.ndarray]]] | None = None) -> VideoReport:
    """Flicker and agreement of per-frame parsing on a clip, and with the configured vote and tracking; a
    `BadInputError` for a clip too short to measure (`check_long_enough`)."""
    frames = parsed_frames(config, models, url, max_frames, threads, on_frame)
    rows = video_rows(frames, load_label_set(LABEL_SETS[config.model]), config, video_modes(config), truth)
    check_long_enough(url, rows[0].frames)
    return VideoReport(config.model, without_credentials(url), rows[0].frames, quality_settings(config),
                       STILL_THRESHOLD, rows)


def write_json(report: ImageReport | VideoReport, path: Path) -> None:
    try:
        path.write_text(json.dumps(dataclasses.asdict(report), indent=2) + "\n")
    except OSError as exc:
        raise BadOutputError(f"cannot write {path}: {exc.strerror or exc}", hint="check the folder exists and is writable") from exc
