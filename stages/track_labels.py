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


MIN_GRID_HEIGHT = 16
REGRID_GROWTH = 1.25


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


def nearest(offset: float, step: float, count: int, limit: int) -> tuple[slice, np.ndarray]:
    """Nearest-neighbour sampling along one axis: the ``count`` samples whose centres lie at ``offset + (i + 0.5) *
    step`` (in source pixels) take source pixel ``floor`` of that. Returns the samples that fall inside the source
    (``0 .. limit - 1``; a contiguous run, as the positions only grow) and their source indices."""
    source = np.floor(offset + (np.arange(count) + 0.5) * step).astype(np.intp)
    inside = np.flatnonzero((source >= 0) & (source < limit))
    if not inside.size:
        return slice(0, 0), source[:0]
    return slice(int(inside[0]), int(inside[-1]) + 1), source[inside[0]:inside[-1] + 1]


def resample(source: np.ndarray, area: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``source`` labels seen through an axis-aligned window: ``area`` (x1 y1 x2 y2, in ``source`` pixels) sampled
    onto ``shape`` (height, width) cells, nearest neighbour; outside ``source`` is 0.
    Plain indexing, not an OpenCV warp: these windows are small, and OpenCV's threads cost more than they save."""
    height, width = shape
    rows, row_index = nearest(area[1], (area[3] - area[1]) / height, height, source.shape[0])
    cols, col_index = nearest(area[0], (area[2] - area[0]) / width, width, source.shape[1])
    sampled = np.zeros(shape, source.dtype)
    sampled[rows, cols] = source.take(row_index, axis=0).take(col_index, axis=1)  # faster than one 2-D fancy index
    return sampled


class PersonLabels:
    """One track's labels on its grid (``shape``: height, width): a running share of each class per cell, decayed by
    ``smoothing``.

    A cell is a person where the parts together outweigh the background, and takes its strongest part; so front
    and back parts that take turns do not let the background win."""

    def __init__(self, classes: int, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.shares = np.zeros((*shape, classes), np.float32)
        self._classes = classes
        self._cells = np.arange(shape[0] * shape[1]) * classes  # each cell's first class in the flat shares
        self._total = 0.0  # every cell's shares add up to this: each observation adds to one class per cell
        # Each cell's strongest part, kept up to date as it is observed: the decay scales every share alike, so
        # only the part observed can overtake it (as argmax does, the lower class wins a tie).
        self._strongest = np.ones(shape[0] * shape[1], np.intp)

    @property
    def observed(self) -> bool:
        return self._total > 0

    def observe(self, labels: np.ndarray, area: np.ndarray, smoothing: float) -> None:
        seen = np.minimum(resample(labels, area, self.shape), self._classes - 1).ravel().astype(np.intp)
        if not self.observed:
            smoothing = 0.0
        flat = self.shares.reshape(-1)
        flat *= smoothing
        flat[self._cells + seen] += 1 - smoothing
        self._total = self._total * smoothing + 1 - smoothing
        seen_share, strongest_share = flat[self._cells + seen], flat[self._cells + self._strongest]
        overtaken = (seen > 0) & ((seen_share > strongest_share) | ((seen_share == strongest_share)
                                                                      & (seen < self._strongest)))
        self._strongest[overtaken] = seen[overtaken]

    def labels(self) -> np.ndarray:
        person = self.shares[..., 0] < self._total / 2  # the parts together outweigh the background
        return np.where(person, self._strongest.reshape(person.shape), 0).astype(np.uint8)

    def resized(self, shape: tuple[int, int]) -> PersonLabels:
        """The same shares on a grid of ``shape``, each cell taking the nearest old cell's."""
        other = PersonLabels(self._classes, shape)
        rows = nearest(0.0, self.shape[0] / shape[0], shape[0], self.shape[0])[1]
        cols = nearest(0.0, self.shape[1] / shape[1], shape[1], self.shape[1])[1]
        other.shares = self.shares.take(rows, axis=0).take(cols, axis=1)
        other._total = self._total
        other._strongest = other.shares[..., 1:].argmax(axis=2).ravel() + 1
        return other


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
        self.open()

    def open(self) -> None:
        self.tracker.open()
        self._persons: dict[int, PersonLabels] = {}
        self.shapes: dict[int, np.ndarray] = {}  # each track's labels on its grid, as drawn on the last frame
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._previous: tuple[np.ndarray, np.ndarray] | None = None  # gray image and instances written last

    def process(self, labels: np.ndarray, result: FrameResult, image: np.ndarray | None = None) -> TrackedFrame:
        """``image`` (BGR) lets each person's box move with the optical flow of its pixels (``flow_noise``)."""
        boxes = np.array([p.box for p in result.persons], np.float32).reshape(-1, 4)
        scores = np.array([p.score for p in result.persons], np.float32)
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image is not None and self.options.flow_noise else None
        tracked = self.tracker.update(boxes, scores, self._motion(gray))
        self._persons = {k: v for k, v in self._persons.items() if k in self.tracker.track_ids}
        self.shapes = {}
        for person in tracked:
            memory = self._persons.get(person.track_id)
            if not person.bridged:
                area = region(person.box, self.margin)
                memory = self._persons[person.track_id] = self._fitted(memory, area)
                memory.observe(labels, area, self.options.smoothing)
            if memory is not None and memory.observed:
                self.shapes[person.track_id] = memory.labels()
        output, instances = self.draw([(p.track_id, p.box, self.shapes[p.track_id]) for p in tracked
                                       if p.track_id in self.shapes], labels.shape)
        persons = self._stats(tracked, output, instances)
        self._previous = None if gray is None else (gray, instances)
        return TrackedFrame(output, instances, replace(result, persons=persons))

    def _fitted(self, memory: PersonLabels | None, area: np.ndarray) -> PersonLabels:
        """A person's labels on a grid no finer than its area's own pixels (at most ``crop_height`` cells tall, half
        as wide): a person who grew ``REGRID_GROWTH`` times taller than its grid gets a finer one."""
        height = int(np.clip(np.ceil(area[3] - area[1]), MIN_GRID_HEIGHT, self.options.crop_height))
        shape = (height, max(1, height // 2))
        if memory is None:
            return PersonLabels(len(self.label_set), shape)
        if height > memory.shape[0] * REGRID_GROWTH:
            return memory.resized(shape)
        return memory

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

    def draw(self, persons: list[tuple[int, np.ndarray, np.ndarray]], size: tuple[int, int],
             ) -> tuple[np.ndarray, np.ndarray]:
        """Labels and instances of a ``size`` frame with each person (track id, box, its labels on its grid) drawn
        at its box, far to near (by the bottom of the box)."""
        output = np.zeros(size, np.uint8)
        instances = np.zeros(size, np.uint16)
        for track_id, box, shape in sorted(persons, key=lambda person: person[1][3]):
            self._paste(output, instances, shape, box, track_id)
        return output, instances

    def _paste(self, output: np.ndarray, instances: np.ndarray, grid_labels: np.ndarray, box: np.ndarray,
               track_id: int) -> None:
        x1, y1, x2, y2 = expand_box(box, self.margin, output.shape)
        if x1 >= output.shape[1] or y1 >= output.shape[0] or x2 <= 0 or y2 <= 0:
            return  # predicted out of the frame
        area = region(box, self.margin)
        cells_y, cells_x = grid_labels.shape[0] / (area[3] - area[1]), grid_labels.shape[1] / (area[2] - area[0])
        window = np.array([(x1 - area[0]) * cells_x, (y1 - area[1]) * cells_y,  # the window in grid cells
                           (x2 - area[0]) * cells_x, (y2 - area[1]) * cells_y])
        pasted = resample(grid_labels, window, (y2 - y1, x2 - x1))
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
