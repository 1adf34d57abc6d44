"""Temporal smoothing that moves with the people: the last few parses, carried onto the current frame by the
optical flow of the video, voted per pixel with the current parse."""

from __future__ import annotations

import cv2
import numpy as np

from vidparse.stages.motion import backward_maps
from vidparse.stages.options import TemporalOptions


def still_mask(previous: np.ndarray, current: np.ndarray, threshold: int) -> np.ndarray:
    """Pixels whose BGR value barely changed between two frames (no channel by more than ``threshold``)."""
    return cv2.inRange(cv2.absdiff(previous, current), (0, 0, 0), (threshold,) * 3).view(bool)


def weighted_vote(votes: list[np.ndarray], person_weights: np.ndarray, part_weights: np.ndarray,
                  person_share: float, classes: int, held: np.ndarray | None = None, hold: float = 0.0) -> np.ndarray:
    """Per pixel, over label maps ``votes`` (the current one first): a person where the maps calling it one weigh
    (``person_weights``) more than ``person_share`` of all (exactly that share: as the current map says), and then
    the part with the most weight (``part_weights``) among the parts (a tie: the current map's, else the lower id).
    ``held``: the parts chosen before (moved onto this frame); one stays while it weighs at least the best part's
    weight less ``hold`` of all the part weight, so parts that take turns do not flicker."""
    current = votes[0]
    unsettled = np.zeros(current.shape, bool)
    for other in votes[1:] if held is None else (*votes[1:], held):
        unsettled |= other != current
    output = current.copy()
    where = np.flatnonzero(unsettled)
    if not where.size:
        return output
    stack = np.stack([labels.ravel()[where] for labels in votes]).astype(np.intp)  # K x N
    person = ((stack != 0) * person_weights[:, None]).sum(axis=0)
    threshold = person_share * person_weights.sum()
    is_person = (person > threshold + 1e-6) | ((np.abs(person - threshold) <= 1e-6) & (stack[0] != 0))
    cells = np.arange(where.size) * classes
    weight = np.bincount((cells[None, :] + stack).ravel(), np.broadcast_to(part_weights[:, None], stack.shape).ravel(),
                         where.size * classes)
    weight[cells] = -1.0  # background is no part
    weight[cells + stack[0]] += 1e-3  # ties go to the current parse
    weight = weight.reshape(where.size, classes)
    part = weight.argmax(axis=1)
    if held is not None:
        before = held.ravel()[where].astype(np.intp)
        kept = (before != 0) & (weight[np.arange(where.size), before] >= weight.max(axis=1) - hold * part_weights.sum())
        part = np.where(kept, before, part)
    output.ravel()[where] = np.where(is_person, part, 0)
    return output


class MotionVote:
    """Stage object: ``process(labels, flow)``, frames in order, returns ``labels`` voted with the previous parses,
    each moved onto this frame by the backward optical flow of every frame since it was made (``flow``: this
    frame's, at any scale; None: no motion known, the past is forgotten). Whether a pixel is a person is voted over
    ``window`` parses, a parse ``k`` frames old weighing ``decay ** k``; which part, over ``part_window`` parses
    weighing ``part_decay ** k``; a part chosen before is held while it is nearly as strong as the best
    (``part_hold``). Whether a pixel is a person is voted on raw parses alone, never on earlier outputs, so the
    person masks cannot drift away from the parser's; and as the parses move with the image, labels follow moving
    people instead of staying where they were."""

    def __init__(self, options: TemporalOptions, classes: int) -> None:
        self.options = options
        self.classes = classes
        self.depth = max(options.window, options.part_window)
        ages = np.arange(self.depth, dtype=np.float64)
        self.person_weights = np.where(ages < options.window, options.decay ** ages, 0.0)
        self.part_weights = np.where(ages < options.part_window, options.part_decay ** ages, 0.0)
        self.open()

    def open(self) -> None:
        self._carried: list[np.ndarray] = []  # the recent parses, newest first, moved onto the previous frame
        self._output = np.zeros(0, np.uint8)  # the parts chosen last (only their parts are held, never person-ness)

    def process(self, labels: np.ndarray, flow: np.ndarray | None) -> np.ndarray:
        if self.depth == 1:
            return labels
        held = None
        if flow is None or (self._carried and self._carried[0].shape != labels.shape):
            self._carried = []
        elif self._carried:
            maps = cv2.convertMaps(backward_maps(flow, labels.shape), None, cv2.CV_16SC2)
            self._carried = [cv2.remap(past, *maps, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
                             for past in self._carried]
            if self.options.part_hold:
                held = cv2.remap(self._output, *maps, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        votes = [labels, *self._carried]
        output = weighted_vote(votes, self.person_weights[:len(votes)], self.part_weights[:len(votes)],
                               self.options.person_share, self.classes, held, self.options.part_hold)
        self._carried = [labels.copy(), *self._carried][:self.depth - 1]  # callers may reuse ``labels``
        self._output = output
        return output

    def close(self) -> None:
        self._carried = []
