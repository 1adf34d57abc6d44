"""Person tracking by detection, ByteTrack-style: Kalman-predicted boxes matched to detections by IoU, the
confident detections first, then the weaker ones to the tracks left over, bridged ones included. A track survives
``max_missed`` frames without a detection, at its predicted box (bridged)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from vidparse.stages.options import TrackingOptions

# Kalman noise, as a share of the box height (ByteTrack's values): position and velocity per frame.
POSITION_NOISE = 1 / 20
VELOCITY_NOISE = 1 / 160
LOW_SCORE_IOU = 0.5  # the second pass (weak detections) only takes clear overlaps with a track left over


def to_state(box: np.ndarray) -> np.ndarray:
    """(x1, y1, x2, y2) -> (cx, cy, w, h)."""
    x1, y1, x2, y2 = box
    return np.array([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], np.float64)


def to_box(state: np.ndarray) -> np.ndarray:
    cx, cy, w, h = state[:4]
    w, h = max(w, 1.0), max(h, 1.0)
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], np.float32)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N x 4) with every box in ``b`` (M x 4)."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)), np.float64)
    a, b = a[:, None, :].astype(np.float64), b[None, :, :].astype(np.float64)
    width = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    height = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = width * height
    return inter / (box_areas(a) + box_areas(b) - inter + 1e-9)


def box_areas(boxes: np.ndarray) -> np.ndarray:
    """The area of each box (x1, y1, x2, y2 on the last axis)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """Pairs (row, column) of the assignment with the most total IoU, keeping pairs with IoU >= threshold."""
    if not iou.size:
        return []
    # imported here: scipy.optimize takes half a second to import, which every worker and source process paid
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-iou)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


class KalmanBox:
    """Constant-velocity Kalman filter on (cx, cy, w, h), noise scaled by the box height. ``box_noise``: how far
    a detector box may be off the person, as a share of its height."""

    _motion = np.eye(8) + np.eye(8, k=4)
    _observe = np.eye(4, 8)

    def __init__(self, box: np.ndarray, box_noise: float) -> None:
        self.box_noise = box_noise
        height = float(box[3] - box[1])
        self.mean = np.concatenate([to_state(box), np.zeros(4)])
        # Uncertain from the start as a measurement (position) and about its pace: the first detections decide.
        self.covariance = np.diag(np.full(8, box_noise * height) ** 2)

    @property
    def box(self) -> np.ndarray:
        return to_box(self.mean)

    def predict(self, shift: np.ndarray | None = None, shift_noise: float = 0.0) -> None:
        """One frame on. ``shift``: how far the person's centre moved (dx, dy), measured (optical flow), with
        ``shift_noise`` (a share of the box height) as its uncertainty; without it, the velocity carries the box."""
        height = self.mean[3]
        noise = np.diag((np.array([POSITION_NOISE] * 4 + [VELOCITY_NOISE] * 4) * height) ** 2)
        self.mean = self._motion @ self.mean
        self.covariance = self._motion @ self.covariance @ self._motion.T + noise
        if shift is not None:
            # The centre moves by the measured shift instead of the velocity, which becomes that shift.
            self.mean[:2] += np.asarray(shift, np.float64) - self.mean[4:6]
            self.mean[4:6] = shift
            self.covariance[:, 4:6] = self.covariance[4:6, :] = 0.0
            self.covariance[4:6, 4:6] = np.eye(2) * (shift_noise * height) ** 2

    def update(self, box: np.ndarray) -> None:
        measured = to_state(box)
        noise = np.diag((np.full(4, self.box_noise) * measured[3]) ** 2)
        projected = self._observe @ self.covariance @ self._observe.T + noise
        gain = np.linalg.solve(projected, self._observe @ self.covariance).T
        self.mean = self.mean + gain @ (measured - self._observe @ self.mean)
        self.covariance = self.covariance - gain @ projected @ gain.T


@dataclass
class Track:
    track_id: int
    filter: KalmanBox
    score: float
    missed: int = 0  # frames since the last detection


@dataclass
class TrackedBox:
    """A person this frame: its track, its box (filtered, or predicted when bridged), and the detection it
    continues (an index into this frame's boxes), None when bridged."""

    track_id: int
    box: np.ndarray
    score: float
    detection: int | None

    @property
    def bridged(self) -> bool:
        return self.detection is None


class ByteTracker:
    """Stage object: ``update(boxes, scores)`` once per frame, in order, returns this frame's tracked persons.

    Every detection continues a track or starts one. A track with no detection this frame is bridged, at its
    predicted box, for up to ``max_missed`` frames; after that it ends and its id is never reused.
    """

    def __init__(self, options: TrackingOptions) -> None:
        self.options = options
        self.open()

    def open(self) -> None:
        self._tracks: list[Track] = []
        self._next_id = 1

    @property
    def track_ids(self) -> set[int]:
        """The tracks alive (seen within ``max_missed`` frames), bridged or not."""
        return {track.track_id for track in self._tracks}

    def update(self, boxes: np.ndarray, scores: np.ndarray,
               motion: dict[int, np.ndarray] | None = None) -> list[TrackedBox]:
        """``motion``: track id -> how far its person moved since the last frame (dx, dy), where known (flow)."""
        motion = motion or {}
        for track in self._tracks:
            track.filter.predict(motion.get(track.track_id), self.options.flow_noise)
        high = np.nonzero(scores >= self.options.high_score)[0]
        low = np.nonzero(scores < self.options.high_score)[0]
        matched: dict[int, int] = {}  # track index -> detection index
        free = list(range(len(self._tracks)))
        self._match(free, high, boxes, self.options.match_iou, matched)
        # Bridged tracks too (ByteTrack's second pass takes only tracks seen last frame, and drops the weak
        # detections it leaves; here those start tracks, so one on a bridged person would draw it twice).
        left = [t for t in free if t not in matched]
        self._match(left, low, boxes, max(LOW_SCORE_IOU, self.options.match_iou), matched)
        tracked: list[TrackedBox] = []
        for index, track in enumerate(self._tracks):
            if index in matched:
                detection = matched[index]
                track.filter.update(boxes[detection])
                track.missed, track.score = 0, float(scores[detection])
                tracked.append(TrackedBox(track.track_id, track.filter.box, track.score, detection))
            else:
                track.missed += 1
                if track.missed <= self.options.max_missed:
                    tracked.append(TrackedBox(track.track_id, track.filter.box, track.score, None))
        self._tracks = [t for t in self._tracks if t.missed <= self.options.max_missed]
        for detection in sorted(set(range(len(boxes))) - set(matched.values())):
            track = Track(self._next_id, KalmanBox(boxes[detection], self.options.box_noise), float(scores[detection]))
            self._next_id += 1
            self._tracks.append(track)
            tracked.append(TrackedBox(track.track_id, track.filter.box, track.score, detection))
        return tracked

    def _match(self, tracks: list[int], detections: np.ndarray, boxes: np.ndarray, threshold: float,
               matched: dict[int, int]) -> None:
        predicted = np.array([self._tracks[t].filter.box for t in tracks]).reshape(-1, 4)
        for row, col in match(iou_matrix(predicted, boxes[detections]), threshold):
            matched[tracks[row]] = int(detections[col])

    def cut(self) -> None:
        """A new shot: every track ends (their ids are never reused)."""
        self._tracks = []

    def close(self) -> None:
        self.cut()
