"""Dense optical flow between consecutive frames (OpenCV DIS), and label maps moved with it.

Flow is computed backwards (from each frame to the one before it), so every pixel of the new frame looks up where
it came from and takes that pixel's label: no holes, no splats.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from vidparse.stages.options import FLOW_PRESET_NAMES

MAX_FLOW_WIDTH = 1280  # wider frames have their flow measured at this width (DIS's time and memory grow with it)
MIN_FLOW_SIDE = 16  # DIS needs a few patches across
# Measured around the recent labels, so that past labels moving this far still get flow: a share of the frame's
# width, at least MIN_FLOW_MARGIN pixels.
FLOW_MARGIN, MIN_FLOW_MARGIN = 1 / 16, 48
FLOW_GRID = 32  # the measured region's sides snap outward to this grid, so DIS rarely sees a new size
# A person pixel moved by the flow that the image contradicts: its grey level, moved along, is this far from the
# new frame's.
CONTRADICTED = 30
# Fewer moved person pixels than this say nothing of a cut.
MIN_CUT_PIXELS = 200
# A cut in the video (`FrameMotion`): the parse and the one before it, moved onto it, agree this little (person
# IoU); in vtest's frames 0-299 they agree at 0.52 or more, across a cut at 0.08 (docs/temporal.md).
MAX_CUT_AGREEMENT = 0.25
CUT_STEP = 4  # the cut check reads every 4th pixel of every 4th row: a sixteenth of the work, thousands of pixels
FLOW_PRESETS = dict(zip(FLOW_PRESET_NAMES, (cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST, cv2.DISOPTICAL_FLOW_PRESET_FAST,
                                            cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)))


def flow_shape(frame_shape: tuple[int, ...], scale: float) -> tuple[int, int, int]:
    """The shape of a flow measured at ``scale`` of a frame of ``frame_shape`` (height, width, ...)."""
    return max(1, round(frame_shape[0] * scale)), max(1, round(frame_shape[1] * scale)), 2


def dense_flow(dis: cv2.DISOpticalFlow, now: np.ndarray, before: np.ndarray) -> np.ndarray:
    """DIS's flow from the grey frame ``now`` to the grey frame ``before`` (H x W x 2 float32): where each pixel
    of ``now`` was in ``before``."""
    # OpenCV's stubs make calc's flow argument required; None (no initial flow) is what makes it a new array
    return dis.calc(now, before, None)  # type: ignore[call-overload]


def backward_maps(backward_flow: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The `cv2.remap` table (H x W x 2 float32) for a frame of ``shape`` (height, width, ...) from its backward
    flow, which may have been measured at a smaller size (it is resized, and its vectors scaled, to the frame's)."""
    height, width = shape[:2]
    flow: np.ndarray = np.asarray(backward_flow, np.float32)
    scale = 1.0
    if flow.shape[:2] != (height, width):
        scale = (width / flow.shape[1] + height / flow.shape[0]) / 2
        flow = cv2.resize(flow, (width, height), interpolation=cv2.INTER_LINEAR)
    return cv2.scaleAdd(flow, scale, _pixel_grid(height, width))


@functools.lru_cache(maxsize=4)
def _pixel_grid(height: int, width: int) -> np.ndarray:
    """Each pixel's own (x, y), H x W x 2 float32 (read only: shared by every caller)."""
    grid = np.stack(np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32)), axis=2)
    grid.flags.writeable = False
    return grid


def warp_labels(labels: np.ndarray, backward_flow: np.ndarray) -> np.ndarray:
    """Labels of the previous frame moved onto the current one; ``backward_flow[y, x]`` points from the current
    frame's pixel to where it was in the previous frame (at any scale of the frame). Pixels that came from outside
    the frame get background."""
    return moved_labels(labels, backward_maps(backward_flow, labels.shape))


def moved_labels(labels: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """`warp_labels` with the remap table (`backward_maps`) already made."""
    return cv2.remap(labels, maps, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def contradicted_share(before: np.ndarray, now: np.ndarray, maps: np.ndarray, moved: np.ndarray,
                       min_pixels: int = MIN_CUT_PIXELS) -> float | None:
    """The share of the person pixels ``moved`` onto the grey frame ``now`` (by the remap table ``maps``, from the
    grey frame ``before``) whose image the new frame contradicts; None under ``min_pixels`` of them. The flow follows
    the people who move and misses some limbs: a cut, where the moved people are not there, contradicts far more."""
    person = moved != 0
    count = int(np.count_nonzero(person))
    if count < min_pixels:
        return None
    moved_image = cv2.remap(before, maps, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return np.count_nonzero((cv2.absdiff(moved_image, now) > CONTRADICTED) & person) / count


def contradicts(before: np.ndarray, now: np.ndarray, maps: np.ndarray, moved: np.ndarray, cut_share: float,
                min_pixels: int = MIN_CUT_PIXELS) -> bool:
    """The image's sign of a cut, for keyframe mode and the motion stage alike: it contradicts more than
    ``cut_share`` of the person pixels moved onto it (`contradicted_share`); never with ``cut_share`` 1."""
    if cut_share >= 1:
        return False
    share = contradicted_share(before, now, maps, moved, min_pixels)
    return share is not None and share > cut_share


@dataclass
class Flow:
    """A frame's backward flow (H x W x 2 float32, at the scale it was measured at) and its largest component in
    absolute value (``reach``, in the flow's pixels): how far any label can have moved. ``cut``: the frame starts
    a new shot (the flow is zero): nothing before it moved here."""

    backward: np.ndarray
    reach: float
    cut: bool = False


class LabelledRegion:
    """Where the last ``depth`` label maps had labels, as one box (x1, y1, x2, y2) grown by FLOW_MARGIN of the
    width and snapped to FLOW_GRID; empty while none had any. The vote and the tracker read the flow only there."""

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.open()

    def open(self) -> None:
        self._boxes: list[tuple[int, int, int, int] | None] = []

    def next(self, labels: np.ndarray) -> tuple[int, int, int, int]:
        x, y, width, height = cv2.boundingRect(labels)
        self._boxes = [(x, y, x + width, y + height) if width else None, *self._boxes][:self.depth]
        boxes = np.array([box for box in self._boxes if box]).reshape(-1, 4)
        if not len(boxes):
            return 0, 0, 0, 0
        margin = max(MIN_FLOW_MARGIN, round(labels.shape[1] * FLOW_MARGIN))
        x1, y1 = np.maximum((boxes[:, :2].min(axis=0) - margin) // FLOW_GRID * FLOW_GRID, 0)
        x2, y2 = np.minimum(-(-(boxes[:, 2:].max(axis=0) + margin) // FLOW_GRID) * FLOW_GRID, labels.shape[1::-1])
        return int(x1), int(y1), int(x2), int(y2)


class FrameMotion:
    """``next(image, region, parse)`` with frames in order: the backward flow of each frame, measured at ``scale``
    of its size (at most MAX_FLOW_WIDTH wide) with DIS's ``preset``; None for the first frame and after a change of
    size. With ``region`` (x1, y1, x2, y2 in frame pixels) DIS measures only there and the flow is zero elsewhere
    (people are a small share of most frames).

    With each frame's ``parse`` (its label map), its ``seq`` and ``cut_share`` under 1, a frame that follows the
    one before it directly (frames a live input dropped are not: the people move further than the thresholds
    allow for) is a cut (``Flow.cut``) where
    the parse before it, moved onto it, is contradicted by its image on more than ``cut_share`` of the moved person
    pixels and agrees with its own parse on under MAX_CUT_AGREEMENT of them (person IoU): both, so that neither a
    detector's missed person (the image agrees) nor a fast limb (the parses agree) is taken for one. A frame whose
    parse finds nobody agrees with none of them: the image alone tells a cut to an empty view from a detector that
    missed everyone (the people are still where the flow takes them)."""

    def __init__(self, preset: str, scale: float, cut_share: float = 1.0) -> None:
        self.preset = preset
        self.scale = scale
        self.cut_share = cut_share
        self.open()

    def open(self) -> None:
        self._flow = cv2.DISOpticalFlow.create(FLOW_PRESETS[self.preset])
        self._gray: np.ndarray | None = None
        self._parse: np.ndarray | None = None  # the previous frame's, at the flow's scale
        self._seq: int | None = None  # the previous frame's

    def next(self, image: np.ndarray, region: tuple[int, int, int, int] | None = None,
             parse: np.ndarray | None = None, seq: int | None = None) -> Flow | None:
        scale = min(self.scale, MAX_FLOW_WIDTH / image.shape[1])
        small = image if scale == 1 else cv2.resize(image, flow_shape(image.shape, scale)[1::-1],
                                                    interpolation=cv2.INTER_AREA)
        gray = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY) if small.ndim == 3 else small
        if parse is not None and self.cut_share < 1:
            parse = parse.copy() if scale == 1 else cv2.resize(parse, gray.shape[::-1], interpolation=cv2.INTER_NEAREST)
        else:
            parse = None
        previous, self._gray = self._gray, gray
        previous_parse, self._parse = self._parse, parse
        follows, self._seq = seq is not None and self._seq is not None and seq == self._seq + 1, seq
        if previous is None or previous.shape != gray.shape:
            return None
        x1, y1, x2, y2 = (0, 0, gray.shape[1], gray.shape[0]) if region is None else \
            (round(v * scale) for v in region)
        flow = Flow(np.zeros((*gray.shape, 2), np.float32), 0.0)
        if x2 - x1 >= MIN_FLOW_SIDE and y2 - y1 >= MIN_FLOW_SIDE:
            box = slice(y1, y2), slice(x1, x2)
            measured = dense_flow(self._flow, np.ascontiguousarray(gray[box]), np.ascontiguousarray(previous[box]))
            if parse is not None and previous_parse is not None and follows and \
                    self._is_cut(previous[box], gray[box], measured, previous_parse[box], parse[box]):
                return Flow(flow.backward, 0.0, cut=True)
            # the reach from the measured box alone, while it is in cache: the vote reading the zeros around it
            # took 6% of the compose thread's time (docs/benchmarks.md)
            flow.backward[box], flow.reach = measured, cv2.norm(measured, cv2.NORM_INF)
        return flow

    def _is_cut(self, before: np.ndarray, now: np.ndarray, backward: np.ndarray, parse_before: np.ndarray,
                parse: np.ndarray) -> bool:
        step, min_pixels = CUT_STEP, MIN_CUT_PIXELS // CUT_STEP ** 2
        rows, columns = now.shape[0] // step, now.shape[1] // step
        person = parse[:rows * step:step, :columns * step:step] != 0
        # every step-th flow vector: OpenCV's nearest-neighbour resize by a whole factor picks them, and faster
        sampled = cv2.resize(backward[:rows * step, :columns * step], (columns, rows), interpolation=cv2.INTER_NEAREST)
        maps = cv2.scaleAdd(_pixel_grid(rows, columns), step, sampled)  # where each sampled pixel came from
        moved = moved_labels(parse_before, maps)
        moved_person = moved != 0
        if np.count_nonzero(moved_person & person) >= MAX_CUT_AGREEMENT * np.count_nonzero(moved_person | person):
            return False  # most frames: the image is not looked at
        return contradicts(before, np.ascontiguousarray(now[:rows * step:step, :columns * step:step]), maps, moved,
                           self.cut_share, min_pixels)

    def close(self) -> None:
        self._gray = self._parse = None
        self._seq = None
