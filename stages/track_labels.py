"""Persons as tracks: stable ids for the persons of each frame, bridged over missed detections, and each labelled
pixel assigned to one of them (instances)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import cv2
import numpy as np

from vidparse.stages.motion import Flow, FrameMotion, LabelledRegion
from vidparse.stages.person_parser import box_region, counted_person, person_stats
from vidparse.stages.roi import expand_box
from vidparse.stages.temporal import MotionVote, TemporalOptions
from vidparse.stages.tracker import ByteTracker, TrackedBox, TrackingOptions
from vidparse.stages.types import FrameResult, LabelSet, PersonStats


@dataclass
class TrackedFrame:
    labels: np.ndarray  # frame-sized class ids
    instances: np.ndarray | None  # frame-sized uint16 track ids, 0 = no person; None without tracking
    result: FrameResult  # persons replaced by the tracked ones, each with its track id


class TrackLabels:
    """Stage object: ``process(labels, result, flow)`` with frames in order returns the tracked frame.

    The tracker gives each detected person a track, and keeps a track whose detection was missed for up to
    ``max_missed`` frames at its predicted box (bridged; the temporal vote carries its labels over short misses).
    Each labelled pixel inside a person's area (its detection, or its predicted box, with the crop margin) takes
    its track id, far to near (by the bottom of the box) so that the nearer person takes a pixel two areas share;
    the labels are written as they come, but for those outside every area, which nobody owns. So every labelled
    pixel belongs to one track. Statistics are counted on what is written, per track.
    """

    def __init__(self, options: TrackingOptions, label_set: LabelSet, margin: float) -> None:
        self.options = options
        self.label_set = label_set
        self.margin = margin
        self.tracker = ByteTracker(options)
        self.open()

    def open(self) -> None:
        self.tracker.open()
        self._drawn: np.ndarray | None = None  # the instances written last

    def process(self, labels: np.ndarray, result: FrameResult, flow: np.ndarray | None = None) -> TrackedFrame:
        """``flow`` (this frame's backward optical flow, at any scale) moves each person's box with its pixels
        when ``flow_noise`` is set."""
        boxes = np.array([p.box for p in result.persons], np.float32).reshape(-1, 4)
        scores = np.array([p.score for p in result.persons], np.float32)
        tracked = self.tracker.update(boxes, scores, self._motion(flow) if self.options.flow_noise else None)
        areas = [(p.track_id, p.box if p.bridged else boxes[p.detection]) for p in tracked]
        instances, window = self.assign(labels, areas)
        owned = np.zeros_like(labels)  # a label no person's area holds has nobody to belong to: dropped
        owned[window] = np.where(instances[window] != 0, labels[window], 0)
        self._drawn = instances
        persons = self._stats(tracked, owned[window], instances[window])
        return TrackedFrame(owned, instances, replace(result, persons=persons))

    def _motion(self, flow: np.ndarray | None) -> dict[int, np.ndarray]:
        """Track id -> how far its person moved since the previous frame (dx, dy): minus the median backward flow
        over the pixels it was drawn on there."""
        if flow is None or self._drawn is None or not self._drawn.any():
            return {}
        drawn = cv2.resize(self._drawn, flow.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        scale = np.array([self._drawn.shape[1] / flow.shape[1], self._drawn.shape[0] / flow.shape[0]])
        where = drawn > 0
        ids, vectors = drawn[where], -flow[where] * scale
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
        return {int(ids[start]): np.median(group, axis=0)
                for start, group in zip(starts, np.split(vectors, starts[1:]))}

    def assign(self, labels: np.ndarray, areas: list[tuple[int, np.ndarray]]
               ) -> tuple[np.ndarray, tuple[slice, slice]]:
        """Instances of a labelled frame: each labelled pixel inside a person's area (track id, box; with the
        margin) gets its track id, far to near (by the bottom of the box) so the nearer person wins. Also the
        window (rows, columns) holding every area."""
        instances = np.zeros(labels.shape, np.uint16)
        top, left, bottom, right = labels.shape[0], labels.shape[1], 0, 0
        for track_id, box in sorted(areas, key=lambda area: area[1][3]):
            x1, y1, x2, y2 = expand_box(box, self.margin, labels.shape)
            if x1 < x2 and y1 < y2:
                instances[y1:y2, x1:x2][labels[y1:y2, x1:x2] != 0] = track_id
                top, left, bottom, right = min(top, y1), min(left, x1), max(bottom, y2), max(right, x2)
        return instances, (slice(top, max(top, bottom)), slice(left, max(left, right)))

    def _stats(self, tracked: list[TrackedBox], output: np.ndarray, instances: np.ndarray) -> list[PersonStats]:
        """Each person's part counts on what is written (one count of (person, class) pairs for all of them)."""
        classes = len(self.label_set)
        row = np.zeros(int(instances.max(initial=0)) + 1, np.int64)  # track id -> its row in the counts (0: none)
        for index, person in enumerate(tracked, 1):
            if person.track_id < len(row):
                row[person.track_id] = index
        labelled = np.flatnonzero(output)  # background is not counted: most of a frame
        counts = np.bincount(row[instances.ravel()[labelled]] * classes + output.ravel()[labelled],
                             minlength=(len(tracked) + 1) * classes)
        counts = counts.reshape(-1, classes)
        return [replace(counted_person(self.label_set, person.box, person.score, counts[index]),
                        track_id=person.track_id, bridged=person.bridged) for index, person in enumerate(tracked, 1)]

    def cut(self) -> None:
        """A new shot: every track ends."""
        self.tracker.cut()
        self._drawn = None

    def close(self) -> None:
        self.tracker.close()


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
    """The label stages that need a stream's frames in order: the vote with the recent parses moved by optical
    flow (measured as ``temporal`` says), then tracking (each optional). ``measure(image)`` gives a frame's flow,
    what ``process(labels, image, result, flow)`` needs besides the parse; it returns the tracked frame
    (``instances`` is None without tracking). Both take the frames in order; the measure may run ahead."""

    def __init__(self, label_set: LabelSet, temporal: TemporalOptions | None, tracking: TrackingOptions | None,
                 margin: float) -> None:
        self.label_set = label_set
        self.tracks = TrackLabels(tracking, label_set, margin) if tracking and tracking.enabled else None
        self.vote = MotionVote(temporal, len(label_set)) if temporal and temporal.window > 1 else None
        flow_options = temporal or TemporalOptions()
        # tracking alone needs the flow too, to find the cuts where its tracks end
        tracks_need_flow = self.tracks and (flow_options.cut_share < 1 or self.tracks.options.flow_noise)
        self.motion = FrameMotion(flow_options.flow_preset, flow_options.flow_scale, flow_options.cut_share) \
            if self.vote or tracks_need_flow else None
        self.region = LabelledRegion(self.vote.depth if self.vote else 2)

    def open(self) -> None:
        for stage in (self.tracks, self.vote, self.motion, self.region):
            if stage:
                stage.open()

    def measure(self, image: np.ndarray, labels: np.ndarray, seq: int) -> Flow | None:
        """The frame's flow where its parse and the recent parses have labels (``labels``: its parse), or a cut."""
        return None if self.motion is None else self.motion.next(image, self.region.next(labels), labels, seq)

    def process(self, labels: np.ndarray, image: np.ndarray, result: FrameResult,
                flow: Flow | None) -> TrackedFrame:
        if self.vote:
            labels = self.vote.process(labels, flow)
        if flow is not None and flow.cut:
            if self.tracks:
                self.tracks.cut()
            result, flow = replace(result, cut=True), None
        if not self.tracks:
            if self.vote:  # each person's parts counted on what is written, the voted labels in its box
                result = replace(result, persons=[person_stats(self.label_set, np.array(p.box), p.score,
                                                               box_region(labels, np.array(p.box)))
                                                  for p in result.persons])
            return TrackedFrame(labels, None, result)
        return self.tracks.process(labels, result, None if flow is None else flow.backward)

    def close(self) -> None:
        for stage in (self.tracks, self.vote, self.motion):
            if stage:
                stage.close()
