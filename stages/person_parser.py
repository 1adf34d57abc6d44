"""The per-frame parsing stage a worker runs: detect persons, crop ROIs, parse them, paste labels back."""

from __future__ import annotations

import time

import numpy as np

from vidparse.stages.detect import PersonDetector
from vidparse.stages.parsers.base import Parser
from vidparse.stages.roi import crop_person, paste_labels, unpaste_labels
from vidparse.stages.tracker import box_areas
from vidparse.stages.types import Detections, FrameResult, LabelSet, PersonStats
from vidparse.stages.options import RoiOptions


def box_region(labels: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The part of a frame-sized label map inside a box (frame pixels, x1 y1 x2 y2)."""
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    return labels[max(0, y1):max(0, y2), max(0, x1):max(0, x2)]


def person_stats(label_set: LabelSet, box: np.ndarray, score: float, person_labels: np.ndarray) -> PersonStats:
    """A person's box, score and pixel count per body part (``person_labels``: the labels that are this person's)."""
    return counted_person(label_set, box, score, np.bincount(person_labels.ravel(), minlength=len(label_set)))


def counted_person(label_set: LabelSet, box: np.ndarray, score: float, counts: np.ndarray) -> PersonStats:
    """A person's box, score and pixel count per body part (``counts``: pixels per class id)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    return PersonStats(
        box=(x1, y1, x2, y2),
        score=float(score),
        part_pixels={label_set.names[c]: int(counts[c]) for c in np.nonzero(counts)[0] if c != 0},
    )


class PersonParser:
    """Stage object: ``process(image)`` returns a frame-sized label map and the frame's statistics."""

    def __init__(self, detector: PersonDetector, parser: Parser, options: RoiOptions) -> None:
        self.detector = detector
        self.parser = parser
        self.options = options

    @property
    def label_set(self):
        return self.parser.label_set

    def open(self) -> None:
        self.detector.open()
        self.parser.open()

    def process(self, image: np.ndarray, seq: int = 0) -> tuple[np.ndarray, FrameResult]:
        labels, result, _ = self.process_with_detections(image, seq)
        return labels, result

    def process_with_detections(self, image: np.ndarray, seq: int = 0) -> tuple[np.ndarray, FrameResult, Detections]:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        detections = self.detector.process(image)
        timings["detect"] = time.perf_counter() - start
        labels = np.zeros(image.shape[:2], np.uint8)
        persons: list[PersonStats] = []
        if len(detections):
            start = time.perf_counter()
            if self.options.mode == "whole":
                labels = self.parser.parse([image])[0]
                persons = self._whole_frame_stats(labels, detections)
            else:
                persons, detections = self._parse_crops(image, detections, labels)
            timings["parse"] = time.perf_counter() - start
        return labels, FrameResult(seq=seq, persons=persons, timings=timings), detections

    def _parse_crops(self, image: np.ndarray, detections: Detections, labels: np.ndarray
                     ) -> tuple[list[PersonStats], Detections]:
        """Parse each detection's crop into ``labels``, smallest box first, so each person is painted by the tightest
        box around them. Dropped from the persons and the detections returned: a detection whose crop the parser
        labels no person in (a cone, a bin), and one that finds less than ``min_new_share`` of the person pixels it
        labels still unpainted (a box around people that smaller boxes have already found)."""
        boxes = detections.boxes
        order = np.argsort(box_areas(boxes), kind="stable")
        options = self.options
        crops = [crop_person(image, boxes[i], options.margin, options.person_height, options.max_upscale)
                 for i in order]
        parsed = self.parser.parse_crops(crops, frame_width=image.shape[1])
        persons: dict[int, PersonStats] = {}
        for i, crop, crop_labels in zip(order, crops, parsed):
            if not crop_labels.any():
                continue
            written = paste_labels(labels, crop, crop_labels)
            # shares of the crop's region: painted by this box, labelled by its parse
            painted, labelled = np.count_nonzero(written) / written.size, np.count_nonzero(crop_labels) / crop_labels.size
            if painted >= options.min_new_share * labelled:
                persons[int(i)] = person_stats(self.label_set, boxes[i], detections.scores[i], written)
            else:
                unpaste_labels(labels, crop, written)
        kept = sorted(persons)  # the detector's order: most confident first
        return [persons[i] for i in kept], Detections(boxes=boxes[kept], scores=detections.scores[kept])

    def _whole_frame_stats(self, labels: np.ndarray, detections: Detections) -> list[PersonStats]:
        return [person_stats(self.label_set, detections.boxes[i], detections.scores[i],
                             box_region(labels, detections.boxes[i]))
                for i in np.argsort(-detections.scores, kind="stable")]

    def close(self) -> None:
        self.parser.close()
        self.detector.close()
