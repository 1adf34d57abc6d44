"""Labels per tracked person: each track keeps its labels on a grid in its own box coordinates, smoothed over its
frames, and pastes them back at its box, also on frames where its detection was missed (bridged)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from vidparse.stages.person_parser import counted_person
from vidparse.stages.roi import expand_box
from vidparse.stages.temporal import TemporalOptions, TemporalVote
from vidparse.stages.tracker import ByteTracker, TrackedBox, TrackingOptions
from vidparse.stages.types import FrameResult, LabelSet, PersonStats

NEAREST = cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP


@dataclass
class TrackedFrame:
    labels: np.ndarray  # frame-sized class ids
    instances: np.ndarray | None  # frame-sized uint16 track ids, 0 = no person; None without tracking
    result: FrameResult  # persons replaced by the tracked ones, each with its track id


def region(box: np.ndarray, margin: float) -> np.ndarray:
    """A box grown by ``margin`` of its width and height on every side (the area its labels may cover)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    return np.array([x1 - dx, y1 - dy, x2 + dx, y2 + dy])


def grid_to_frame(area: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Affine map from grid cell centres (u, v) to frame pixel coordinates for ``area`` (x1 y1 x2 y2)."""
    width, height = grid
    sx, sy = (area[2] - area[0]) / width, (area[3] - area[1]) / height
    return np.array([[sx, 0, area[0] + 0.5 * sx - 0.5], [0, sy, area[1] + 0.5 * sy - 0.5]], np.float64)


class PersonLabels:
    """One track's labels on its grid: a running share of each class per cell, decayed by ``smoothing``.

    A cell is a person where the parts together outweigh the background, and takes its strongest part; so front
    and back parts that take turns do not let the background win."""

    def __init__(self, classes: int, grid: tuple[int, int]) -> None:
        self.grid = grid
        self.shares: np.ndarray | None = None  # height x width x classes (classes last: argmax over them is fast)
        self._classes = classes
        self._cells = np.arange(grid[0] * grid[1]) * classes  # each cell's first class in the flat shares
        self._total = 0.0  # every cell's shares add up to this: each observation adds to one class per cell

    def observe(self, labels: np.ndarray, area: np.ndarray, smoothing: float) -> None:
        seen = cv2.warpAffine(labels, grid_to_frame(area, self.grid), self.grid, flags=NEAREST,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        if self.shares is None:
            self.shares = np.zeros((*seen.shape, self._classes), np.float32)
            smoothing = 0.0
        self.shares *= smoothing
        self.shares.reshape(-1)[self._cells + np.minimum(seen, self._classes - 1).ravel()] += 1 - smoothing
        self._total = self._total * smoothing + 1 - smoothing

    def labels(self) -> np.ndarray:
        person = self.shares[..., 0] < self._total / 2  # the parts together outweigh the background
        return np.where(person, self.shares[..., 1:].argmax(axis=2) + 1, 0).astype(np.uint8)


class TrackLabels:
    """Stage object: ``process(labels, result)`` with frames in order returns the tracked frame.

    The written labels are the tracked persons' smoothed labels, pasted back far to near (by the bottom of their
    box) so a nearer person covers a farther one: every labelled pixel belongs to one track (``instances``).
    Statistics are counted on what is written.
    """

    def __init__(self, options: TrackingOptions, label_set: LabelSet, margin: float) -> None:
        self.options = options
        self.label_set = label_set
        self.margin = margin
        self.tracker = ByteTracker(options)
        height = options.crop_height
        self.grid = (max(1, height // 2), height)
        self.open()

    def open(self) -> None:
        self.tracker.open()
        self._persons: dict[int, PersonLabels] = {}
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # gray image and instances written last

    def process(self, labels: np.ndarray, result: FrameResult, image: np.ndarray | None = None) -> TrackedFrame:
        """``image`` (BGR) lets each person's box move with the optical flow of its pixels (``flow_noise``)."""
        boxes = np.array([p.box for p in result.persons], np.float32).reshape(-1, 4)
        scores = np.array([p.score for p in result.persons], np.float32)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image is not None and self.options.flow_noise else None
        tracked = self.tracker.update(boxes, scores, self._motion(gray))
        self._persons = {k: v for k, v in self._persons.items() if k in self.tracker.track_ids}
        output = np.zeros_like(labels)
        instances = np.zeros(labels.shape, np.uint16)
        for person in sorted(tracked, key=lambda t: t.box[3]):
            memory = self._persons.setdefault(person.track_id, PersonLabels(len(self.label_set), self.grid))
            if not person.bridged:
                memory.observe(labels, region(person.box, self.margin), self.options.smoothing)
            if memory.shares is not None:
                self._paste(output, instances, memory.labels(), person.box, person.track_id)
        persons = self._stats(tracked, output, instances)
        self._previous = None if gray is None else (gray, instances)
        return TrackedFrame(output, instances, replace(result, persons=persons))

    def _motion(self, gray: np.ndarray | None) -> dict[int, np.ndarray]:
        """Track id -> median optical flow (dx, dy) from the previous frame, over the pixels it was drawn on there."""
        if gray is None or self._previous is None or self._previous[0].shape != gray.shape:
            return {}
        before, drawn = self._previous
        if not drawn.any():
            return {}
        flow = self._flow.calc(before, gray, None)
        where = drawn > 0
        ids, vectors = drawn[where], flow[where]
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        return {int(ids[start]): np.median(group, axis=0)
                for start, group in zip(starts, np.split(vectors, starts[1:]))}

    def _paste(self, output: np.ndarray, instances: np.ndarray, grid_labels: np.ndarray, box: np.ndarray,
               track_id: int) -> None:
        x1, y1, x2, y2 = expand_box(box, self.margin, output.shape)
        if x1 >= output.shape[1] or y1 >= output.shape[0] or x2 <= 0 or y2 <= 0:
            return  # predicted out of the frame
        to_grid = cv2.invertAffineTransform(grid_to_frame(region(box, self.margin), self.grid))
        to_grid[:, 2] += to_grid[:, :2] @ np.array([x1, y1], np.float64)  # window pixel -> grid cell
        pasted = cv2.warpAffine(grid_labels, to_grid, (x2 - x1, y2 - y1), flags=NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        mine = pasted != 0
        output[y1:y2, x1:x2][mine] = pasted[mine]
        instances[y1:y2, x1:x2][mine] = track_id

    def _stats(self, tracked: list[TrackedBox], output: np.ndarray, instances: np.ndarray) -> list[PersonStats]:
        """Each person's part counts on what is written (one count of (track, class) pairs for all of them)."""
        classes = len(self.label_set)
        rows = max((person.track_id for person in tracked), default=0) + 1
        drawn = instances > 0
        pairs = instances[drawn].astype(np.int64) * classes + output[drawn]
        counts = np.bincount(pairs, minlength=rows * classes).reshape(-1, classes)
        return [replace(counted_person(self.label_set, person.box, person.score, counts[person.track_id]),
                        track_id=person.track_id, bridged=person.bridged) for person in tracked]

    def close(self) -> None:
        self.tracker.close()
        self._persons = {}


def draw_track_ids(image: np.ndarray, persons: list[PersonStats]) -> None:
    """Each tracked person's id above its box (in grey while bridged)."""
    for person in persons:
        if person.track_id is None:
            continue
        x, y = int(person.box[0]), max(12, int(person.box[1]) - 3)
        color = (160, 160, 160) if person.bridged else (255, 255, 255)
        cv2.putText(image, str(person.track_id), (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(image, str(person.track_id), (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, color, 1, cv2.LINE_AA)


class OrderedLabels:
    """The label stages that need a stream's frames in order: tracking (optional), then the pixel vote.
    ``process(labels, image, result)`` returns the tracked frame; ``instances`` is None without tracking."""

    def __init__(self, label_set: LabelSet, temporal: TemporalOptions | None, tracking: TrackingOptions | None,
                 margin: float) -> None:
        self.tracks = TrackLabels(tracking, label_set, margin) if tracking and tracking.enabled else None
        self.vote = TemporalVote(temporal) if temporal and temporal.window > 1 else None

    def open(self) -> None:
        for stage in (self.tracks, self.vote):
            if stage:
                stage.open()

    def process(self, labels: np.ndarray, image: np.ndarray, result: FrameResult) -> TrackedFrame:
        tracked = self.tracks.process(labels, result, image) if self.tracks else TrackedFrame(labels, None, result)
        if self.vote:
            tracked.labels = self.vote.process(tracked.labels, image)
        return tracked

    def close(self) -> None:
        for stage in (self.tracks, self.vote):
            if stage:
                stage.close()
