"""Metrics of persons over time: presence flicker, consecutive-frame agreement, and ID switches against MOT
ground truth."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidparse.errors import BadInputError
from vidparse.evaluation.metrics import iou_per_class
from vidparse.stages.motion import FLOW_PRESETS, backward_maps, dense_flow
from vidparse.stages.tracker import iou_matrix, match

FLICKER_GAP = 3  # a person missing for at most this many frames, then back, is a presence flicker
LINK_IOU = 0.3  # the presence meter links a box to a person last seen at a box overlapping it this much
TRUTH_IOU = 0.5  # a ground-truth box and a tracked box this much overlapping are the same person (CLEAR-MOT)


@dataclass
class _Seen:
    box: np.ndarray
    frame: int


class PresenceMeter:
    """Counts persons that vanish and come back: present, missing for 1 to FLICKER_GAP frames, present again.

    It links boxes from frame to frame on its own (IoU with where each person was last seen, within the gap), so
    parsing without tracking and with it are measured alike, whatever ids the boxes carry."""

    def __init__(self) -> None:
        self.flickers = 0
        self.person_frames = 0
        self._seen: list[_Seen] = []
        self._frame = 0

    def update(self, boxes: np.ndarray) -> None:
        recent = [s for s in self._seen if self._frame - s.frame <= FLICKER_GAP + 1]
        last = np.array([s.box for s in recent], np.float32).reshape(-1, 4)
        linked = dict(match(iou_matrix(boxes, last), LINK_IOU))
        for index, box in enumerate(boxes):
            if index in linked:
                seen = recent[linked[index]]
                self.flickers += self._frame - seen.frame > 1
                seen.box, seen.frame = box, self._frame
            else:
                recent.append(_Seen(box, self._frame))
        self._seen = recent
        self.person_frames += len(boxes)
        self._frame += 1


class AgreementMeter:
    """How well each label map agrees with the one before it: one confusion matrix over all consecutive pairs."""

    def __init__(self, classes: int) -> None:
        self.classes = classes
        self.matrix = np.zeros((classes, classes), np.int64)
        self._previous: np.ndarray | None = None

    def update(self, labels: np.ndarray) -> None:
        if self._previous is not None:
            self.add(self._previous, labels)
        self._previous = labels.copy()

    def add(self, before: np.ndarray, after: np.ndarray) -> None:
        """One pair of label maps."""
        pairs = before.astype(np.int64).ravel() * self.classes + after.ravel()
        self.matrix += np.bincount(pairs, minlength=self.classes ** 2).reshape(self.classes, self.classes)

    @property
    def part_miou(self) -> float | None:
        """Mean IoU over the parts present in either frame of some pair (background left out)."""
        ious = iou_per_class(self.matrix)[1:]
        return None if np.isnan(ious).all() else float(np.nanmean(ious))

    @property
    def person_iou(self) -> float | None:
        """Person (any part) against background."""
        union = self.matrix.sum() - self.matrix[0, 0]
        return float(self.matrix[1:, 1:].sum() / union) if union else None


class InputFlow:
    """Dense optical flow between consecutive input frames (OpenCV DIS, medium preset, both ways) for moving a
    label map onto the next frame: ``warp(labels)`` gives the previous frame's labels where each pixel of the
    current frame came from, and ``reliable`` the pixels where the two flows agree (forward-backward check, as in
    Sundaram et al. 2010; occlusions and flow errors fail it)."""

    def __init__(self) -> None:
        self._flow = cv2.DISOpticalFlow.create(FLOW_PRESETS["medium"])
        self._gray: np.ndarray | None = None
        self.reliable: np.ndarray | None = None  # None before the second frame
        self._maps: np.ndarray | None = None  # `backward_maps` of this frame's flow

    def update(self, image: np.ndarray) -> None:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        previous, self._gray = self._gray, gray
        if previous is None or previous.shape != gray.shape:
            self.reliable = self._maps = None
            return
        backward = dense_flow(self._flow, gray, previous)  # where each pixel of this frame was in the previous one
        forward = dense_flow(self._flow, previous, gray)
        self._maps = backward_maps(backward, gray.shape)
        returned = cv2.remap(forward, self._maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=(np.nan, np.nan))
        error = ((returned + backward) ** 2).sum(axis=2)
        scale = (returned ** 2).sum(axis=2) + (backward ** 2).sum(axis=2)
        self.reliable = error <= 0.01 * scale + 0.5  # NaN (from outside the previous frame) compares False

    def warp(self, labels: np.ndarray) -> np.ndarray:
        assert self._maps is not None, "two frames first"
        return cv2.remap(labels, self._maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


class WarpedAgreementMeter(AgreementMeter):
    """Temporal consistency with the motion taken out (Liu et al., ECCV 2020): each label map moved onto the next
    frame by the input's optical flow, compared with that frame's labels where the flow is reliable. Labels that
    move with the people score high; labels held still while the people move score low."""

    def update_warped(self, labels: np.ndarray, flow: InputFlow) -> None:
        if self._previous is not None and flow.reliable is not None:
            reliable = flow.reliable
            self.add(flow.warp(self._previous)[reliable], labels[reliable])
        self._previous = labels.copy()


def read_mot(path: Path) -> dict[int, list[tuple[int, np.ndarray]]]:
    """MOT Challenge ground truth (``frame,id,x,y,w,h[,conf,...]``, frames from 1) -> frame seq (from 0) -> (id,
    box x1 y1 x2 y2). Rows with a confidence of 0 are ignored, as MOT does."""
    truth: dict[int, list[tuple[int, np.ndarray]]] = {}
    try:
        with path.open(newline="", encoding="utf-8-sig") as file:  # as Excel and Notepad save CSV: a BOM first
            for number, row in enumerate(csv.reader(file), 1):
                if not row or not "".join(row).strip():
                    continue
                try:
                    frame, track, x, y, w, h = (float(v) for v in row[:6])
                    confidence = float(row[6]) if len(row) > 6 else 1.0
                    if not (frame.is_integer() and frame >= 1 and track.is_integer() and w > 0 and h > 0
                            and math.isfinite(x + y + w + h)):
                        raise ValueError("a frame and id are whole numbers from 1, a box has a size")
                except ValueError:
                    raise BadInputError(f"{path} line {number} is not a MOT row: {','.join(row)[:60]}",
                                        hint="expected frame,id,x,y,width,height[,conf,...]: whole frame numbers "
                                             "from 1, a width and height above 0") from None
                if confidence == 0:
                    continue
                people = truth.setdefault(int(frame) - 1, [])
                if any(person == int(track) for person, _ in people):
                    raise BadInputError(f"{path} line {number}: person {int(track)} is in frame {int(frame)} twice",
                                        hint="one row per person and frame")
                people.append((int(track), np.array([x, y, x + w, y + h])))
    except UnicodeDecodeError as exc:
        raise BadInputError(f"ground truth {path} is not text", hint="give a MOT gt.txt file") from exc
    except OSError as exc:
        raise BadInputError(f"cannot read ground truth {path}: {exc.strerror or exc}",
                            hint="give a MOT gt.txt file") from exc
    return truth


class IdSwitchMeter:
    """CLEAR-MOT ID switches: a ground-truth person matched to a different track id than the last time it was
    matched. Also counts matches and ground-truth boxes, for context."""

    def __init__(self, truth: dict[int, list[tuple[int, np.ndarray]]]) -> None:
        self.truth = truth
        self.switches = self.matched = self.truth_boxes = 0
        self._last: dict[int, int] = {}  # ground-truth id -> track id it was last matched to

    def update(self, seq: int, tracked: list[tuple[int, np.ndarray]]) -> None:
        people = self.truth.get(seq, [])
        self.truth_boxes += len(people)
        truth_boxes = np.array([box for _, box in people], np.float32).reshape(-1, 4)
        boxes = np.array([box for _, box in tracked], np.float32).reshape(-1, 4)
        for row, col in match(iou_matrix(truth_boxes, boxes), TRUTH_IOU):
            person, track = people[row][0], tracked[col][0]
            self.switches += self._last.get(person, track) != track
            self._last[person] = track
            self.matched += 1
