"""Keyframe mode: parse every K-th frame, carry its labels to the frames between by dense optical flow.

Flow is OpenCV's DIS, computed backwards (from each frame to the one before it), so every pixel of the new frame
looks up where it came from and takes that pixel's label: no holes, no splats. Person boxes move with the median
flow over their person pixels, so statistics stay per person. Frames are carried along a chain (each from the one
before), which keeps every flow step small.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np

from vidparse.stages.motion import FLOW_PRESETS, backward_maps, contradicts, dense_flow, moved_labels
from vidparse.stages.options import KeyframeOptions
from vidparse.stages.person_parser import PersonParser, box_region, person_stats
from vidparse.stages.types import Detections, FrameResult

# Across dropped frames (live), a frame is carried from one at most this many frames earlier; further back, the
# motion is too large for the flow to follow and the frame is parsed. (About half a second at 25 fps.)
MAX_CARRY_GAP = 12


@dataclass
class _Carried:
    """What the next frame of the group is carried from."""

    seq: int
    group: int | None
    keyframe: int
    carried: int  # frames carried since the keyframe
    gray: np.ndarray
    labels: np.ndarray
    detections: Detections


def track_boxes(boxes: np.ndarray, backward_flow: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each box moved by its person's motion: minus the median backward flow over its labelled pixels (over the
    whole box when it has none), clipped to the frame."""
    height, width = labels.shape
    moved = boxes.copy()
    for box in moved:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1, x2, y2 = max(0, x1), max(0, y1), min(width, x2), min(height, y2)
        if x2 <= x1 or y2 <= y1:
            continue
        flow = backward_flow[y1:y2, x1:x2]
        person = labels[y1:y2, x1:x2] != 0
        vectors = flow[person] if person.any() else flow.reshape(-1, 2)
        dx, dy = np.median(vectors, axis=0)
        box -= (dx, dy, dx, dy)
    np.clip(moved[:, 0::2], 0, width, out=moved[:, 0::2])
    np.clip(moved[:, 1::2], 0, height, out=moved[:, 1::2])
    return moved


class KeyframeParser:
    """Stage object like PersonParser, for frames of several streams: what is carried is kept per stream.

    With fixed groups (``group``, files), frames of one group must come in order to get carried labels; a frame
    with no earlier frame of its group here (a keyframe, or the first this process saw after a restart) is parsed
    directly, so results never depend on which process got which frame. Without (``group`` None: live inputs,
    where frames are dropped while a worker parses): one frame in ``parse_every`` of those this process sees of
    the stream is parsed, and the others are carried from the frame before them here, up to MAX_CARRY_GAP back.

    A frame whose image contradicts more than ``cut_share`` of the person pixels carried onto it is parsed (a cut;
    the motion stage's own sign of one, `temporal.cut_share`: one threshold, so the two cannot disagree).
    """

    def __init__(self, parser: PersonParser, options: KeyframeOptions, cut_share: float) -> None:
        self.parser = parser
        self.options = options
        self.cut_share = cut_share
        self._flow: cv2.DISOpticalFlow | None = None
        self._carried: dict[int, _Carried] = {}  # stream -> what its next frame is carried from

    @property
    def label_set(self):
        return self.parser.label_set

    def open(self) -> None:
        self.parser.open()
        self._flow = cv2.DISOpticalFlow.create(FLOW_PRESETS[self.options.flow_preset])
        self._carried = {}

    def _carries_to(self, carried: _Carried, seq: int, group: int | None, gray: np.ndarray) -> bool:
        every = self.options.parse_every
        if carried.seq >= seq or carried.gray.shape != gray.shape:
            return False
        if group is None:
            return carried.carried < every - 1 and seq - carried.seq <= MAX_CARRY_GAP
        return carried.group == group

    def process(self, image: np.ndarray, seq: int = 0, stream: int = 0,
                group: int | None = None) -> tuple[np.ndarray, FrameResult]:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        carried = self._carried.get(stream)
        if carried is None or not self._carries_to(carried, seq, group, gray):
            labels, result, detections = self.parser.process_with_detections(image, seq)
            self._carried[stream] = _Carried(seq, group, seq, 0, gray, labels, detections)
            return labels, result
        assert self._flow is not None, "open() first"
        start = time.perf_counter()
        flow = dense_flow(self._flow, gray, carried.gray)
        maps = backward_maps(flow, gray.shape)
        labels = moved_labels(carried.labels, maps)
        if contradicts(carried.gray, gray, maps, labels, self.cut_share):
            labels, result, detections = self.parser.process_with_detections(image, seq)
            self._carried[stream] = _Carried(seq, group, seq, 0, gray, labels, detections)
            return labels, result
        boxes = track_boxes(carried.detections.boxes, flow, labels)
        detections = Detections(boxes, carried.detections.scores)
        persons = [person_stats(self.label_set, box, score, box_region(labels, box))
                   for box, score in zip(detections.boxes, detections.scores)]
        self._carried[stream] = _Carried(seq, group, carried.keyframe, carried.carried + 1, gray, labels, detections)
        result = FrameResult(seq=seq, persons=persons, timings={"propagate": time.perf_counter() - start},
                             carried_from=carried.keyframe)
        return labels, result

    def forget(self, stream: int) -> None:
        """The stream ended: drop what its frames would be carried from."""
        self._carried.pop(stream, None)

    def close(self) -> None:
        self._carried = {}
        self._flow = None
        self.parser.close()
