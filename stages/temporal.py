"""Temporal smoothing that moves with the people: the last few parses, carried onto the current frame by the
optical flow of the video, voted per pixel with the current parse."""

from __future__ import annotations

import functools
from collections.abc import Callable

import cv2
import numpy as np

from vidparse.stages.motion import Flow
from vidparse.stages.options import TemporalOptions


def still_mask(previous: np.ndarray, current: np.ndarray, threshold: int) -> np.ndarray:
    """Pixels whose BGR value barely changed between two frames (no channel by more than ``threshold``)."""
    return cv2.inRange(cv2.absdiff(previous, current), (0, 0, 0), (threshold,) * 3) != 0


TILE = 16  # the vote runs on the tiles of this size that hold labels or may have come to (not the whole frame)


def weighted_vote(current: np.ndarray, past: list[np.ndarray], person_weights: np.ndarray, part_weights: np.ndarray,
                  person_share: float, classes: int, held: np.ndarray | None = None, hold: float = 0.0) -> np.ndarray:
    """Per pixel, over the label maps ``current`` and ``past`` (newest first, each of ``current``'s shape),
    weighted by ``person_weights`` and ``part_weights`` (current first): a person where the maps calling it one
    weigh more than ``person_share`` of all (exactly that share: as the current map says), and then the part with
    the most weight among the parts (a tie: the current map's, else the lower id). ``held``: the parts chosen before
    (moved onto this frame); one stays while it weighs at least the best part's weight less ``hold`` of all the
    part weight, so parts that take turns do not flicker."""
    maps = np.stack([labels.ravel() for labels in (current, *past)])
    if len(person_weights) != len(maps):  # the compiled loop does not check its bounds
        raise ValueError(f"{len(person_weights)} person weights for {len(maps)} label maps")
    person_weights = np.asarray(person_weights, np.float64)
    part_weights = np.broadcast_to(np.asarray(part_weights, np.float64), (len(maps),))
    output = np.empty(current.size, current.dtype)
    bins = max(classes, int(maps.max()) + 1, 0 if held is None else int(held.max()) + 1)
    _compiled_vote()(maps, output if held is None else held.ravel(), held is not None,  # output: a stand-in, unread
                     person_weights, part_weights, person_share * person_weights.sum(), hold * part_weights.sum(),
                     bins, output)
    return output.reshape(current.shape)


@functools.cache
def _compiled_vote() -> Callable[..., None]:
    """`_vote_pixels` compiled by numba (once per machine, then read from its cache) and free of the GIL while it
    runs: in NumPy this vote was the largest part of compose's time (docs/benchmarks.md), and compose shares its
    process with the hub, the flow and the encoder. Imported here, not above: the parser workers import this module
    but never vote, and numba and LLVM cost a process 126 MB (pipeline.settings.COMPILED_VOTE_MB)."""
    import numba

    return numba.njit(cache=True, nogil=True)(_vote_pixels)


def _vote_pixels(maps: np.ndarray, held: np.ndarray, has_held: bool, person_weights: np.ndarray,
                 part_weights: np.ndarray, threshold: float, hold_margin: float, bins: int,
                 output: np.ndarray) -> None:
    count, size = maps.shape
    weight = np.empty(bins)
    for i in range(size):
        current = maps[0, i]
        settled = not has_held or held[i] == current
        for k in range(1, count):
            settled = settled and maps[k, i] == current
        if settled:
            output[i] = current
            continue
        person = 0.0
        for k in range(count):
            if maps[k, i] != 0:
                person += person_weights[k]
        if not (person > threshold + 1e-6 or (abs(person - threshold) <= 1e-6 and current != 0)):
            output[i] = 0
            continue
        weight[:] = 0.0
        for k in range(count):
            weight[maps[k, i]] += part_weights[k]
        weight[0] = -1.0  # background is no part
        weight[current] += 1e-3  # ties go to the current parse
        part = 0
        for label in range(1, bins):
            if weight[label] > weight[part]:
                part = label
        if has_held and held[i] != 0 and weight[held[i]] >= weight[part] - hold_margin:
            part = held[i]
        output[i] = part


REMAP_SIDE = 32767  # OpenCV's remap takes at most this many rows or columns


def as_image(tiles: np.ndarray) -> np.ndarray:
    """N x TILE x TILE (x C) tiles laid out as one image for OpenCV: one column of tiles (a view) while it fits,
    else as few columns as fit (the last row padded)."""
    columns = -(-len(tiles) * TILE // REMAP_SIDE)
    if columns == 1:
        return tiles.reshape(len(tiles) * TILE, TILE, *tiles.shape[3:])
    rows = -(-len(tiles) // columns)
    padded = np.zeros((rows * columns, *tiles.shape[1:]), tiles.dtype)
    padded[:len(tiles)] = tiles
    grid = padded.reshape(rows, columns, TILE, TILE, *tiles.shape[3:]).swapaxes(1, 2)
    return grid.reshape(rows * TILE, columns * TILE, *tiles.shape[3:])


def from_image(image: np.ndarray, count: int) -> np.ndarray:
    """The first ``count`` tiles of an image `as_image` laid out."""
    rows, columns = image.shape[0] // TILE, image.shape[1] // TILE
    grid = image.reshape(rows, TILE, columns, TILE, *image.shape[2:]).swapaxes(1, 2)
    return grid.reshape(rows * columns, TILE, TILE, *image.shape[2:])[:count]


class Tiles:
    """The TILE x TILE tiles of a frame padded to whole tiles: ``gather`` the chosen ones of a map into an N x TILE
    x TILE array (N x TILE x TILE x C for C channels), ``scatter`` them back into a map of zeros."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self.grid = (-(-shape[0] // TILE), -(-shape[1] // TILE))  # tiles down, across
        self.padded = (self.grid[0] * TILE, self.grid[1] * TILE)

    def occupied(self, labels: np.ndarray) -> np.ndarray:
        """Tiles (rows x columns, bool) holding a label."""
        # 255 where labelled: one pixel of a tile still counts (OpenCV's stubs lack compare's scalar operand)
        mask = cv2.compare(self.pad(labels), 0, cv2.CMP_GT)  # type: ignore[call-overload]
        return cv2.resize(mask, self.grid[::-1], interpolation=cv2.INTER_AREA) > 0

    def pad(self, array: np.ndarray) -> np.ndarray:
        if array.shape[:2] == self.padded:
            return array
        padded = np.zeros((*self.padded, *array.shape[2:]), array.dtype)
        padded[:array.shape[0], :array.shape[1]] = array
        return padded

    def _view(self, padded: np.ndarray) -> np.ndarray:
        rows, columns = self.grid
        return padded.reshape(rows, TILE, columns, TILE, *padded.shape[2:]).swapaxes(1, 2)

    def gather(self, padded: np.ndarray, chosen: tuple[np.ndarray, ...]) -> np.ndarray:
        return self._view(padded)[chosen]

    def maps(self, backward_flow: np.ndarray, chosen: tuple[np.ndarray, ...]) -> np.ndarray:
        """`cv2.remap` tables of the chosen tiles (N x TILE x TILE x 2) from the frame's backward flow (measured at
        the frame's size, or smaller: then sampled bilinearly at the tiles' pixels and scaled)."""
        offsets = np.arange(TILE, dtype=np.float32)
        x = np.broadcast_to(chosen[1][:, None, None] * TILE + offsets[None, None, :], (len(chosen[0]), TILE, TILE))
        y = np.broadcast_to(chosen[0][:, None, None] * TILE + offsets[None, :, None], (len(chosen[0]), TILE, TILE))
        x, y = x.astype(np.float32), y.astype(np.float32)
        if backward_flow.shape[:2] == self.shape:
            maps = self.gather(self.pad(backward_flow), chosen)
        else:
            scale_x, scale_y = backward_flow.shape[1] / self.shape[1], backward_flow.shape[0] / self.shape[0]
            where = as_image(np.stack([(x + 0.5) * scale_x - 0.5, (y + 0.5) * scale_y - 0.5], axis=3))
            sampled = cv2.remap(np.asarray(backward_flow, np.float32), where, None, cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REPLICATE)
            maps = from_image(sampled, len(x)) / np.array((scale_x, scale_y), np.float32)
        maps[..., 0] += x
        maps[..., 1] += y
        return maps

    def scatter(self, tiles: np.ndarray, chosen: tuple[np.ndarray, ...]) -> np.ndarray:
        padded = np.zeros(self.padded, tiles.dtype)
        self._view(padded)[chosen] = tiles
        return padded


class MotionVote:
    """Stage object: ``process(labels, flow)``, frames in order, returns ``labels`` voted with the previous parses,
    each moved onto this frame by the backward optical flow of every frame since it was made (``flow``: this
    frame's, at any scale; None or a cut: no motion known, the past is forgotten). Whether a pixel is a person is voted over
    ``window`` parses, a parse ``k`` frames old weighing ``decay ** k``; which part, over ``part_window`` parses
    weighing ``part_decay ** k``; a part chosen before is held while it is nearly as strong as the best
    (``part_hold``). Whether a pixel is a person is voted on raw parses alone, never on earlier outputs, so the
    person masks cannot drift away from the parser's; and as the parses move with the image, labels follow moving
    people instead of staying where they were.

    Only the tiles that hold labels now, or lie within the flow's reach of a tile that held any the frame before,
    are voted on: people are a small share of most frames."""

    def __init__(self, options: TemporalOptions, classes: int) -> None:
        self.options = options
        self.classes = classes
        self.depth = max(options.window, options.part_window)
        ages = np.arange(self.depth, dtype=np.float64)
        self.person_weights = np.where(ages < options.window, options.decay ** ages, 0.0)
        self.part_weights = np.where(ages < options.part_window, options.part_decay ** ages, 0.0)
        if self.depth > 1:  # compiled (or read from numba's cache) here, not inside the first frame's compose time
            pixel = np.zeros((1, 1), np.uint8)
            weighted_vote(pixel, [pixel], self.person_weights[:2], self.part_weights[:2], options.person_share,
                          classes, pixel, options.part_hold)
        self.open()

    def open(self) -> None:
        self._tiles: Tiles | None = None
        self._carried: list[np.ndarray] = []  # the recent parses, newest first, on the previous frame (padded)
        self._output: np.ndarray | None = None  # the previous output (padded)
        self._labelled = np.zeros((0, 0), bool)  # the tiles where the carried parses or the output have labels

    def process(self, labels: np.ndarray, flow: Flow | None) -> np.ndarray:
        if self.depth == 1:
            return labels
        if self._tiles is None or self._tiles.shape != labels.shape or flow is None or flow.cut:
            self.open()
            self._tiles = Tiles(labels.shape)
        tiles = self._tiles
        current = tiles.pad(labels)
        occupied = tiles.occupied(current)
        active = occupied.copy()
        if self._carried:  # where the past labels are now: as far from where they were as the flow reaches
            assert flow is not None
            reach = 1 + 2 * int(np.ceil(flow.reach * labels.shape[0] / flow.backward.shape[0] / TILE))
            active |= cv2.dilate(self._labelled.astype(np.uint8), np.ones((reach, reach), np.uint8)).astype(bool)
        chosen = np.nonzero(active)
        if not chosen[0].size:  # no labels now or before
            self._carried, self._output, self._labelled = [current.copy()], current.copy(), active
            return labels.copy()
        current_tiles = tiles.gather(current, chosen)
        past, held = [], None
        if self._carried:
            assert flow is not None and self._output is not None
            maps = as_image(tiles.maps(flow.backward, chosen))
            # OpenCV's stubs lack convertMaps's optional second map (None: maps holds both coordinates)
            fixed = cv2.convertMaps(maps, None, cv2.CV_16SC2, nninterpolation=True)[0]  # type: ignore[call-overload]

            def moved(source: np.ndarray) -> np.ndarray:
                image = cv2.remap(source, fixed, None, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                                  borderValue=0)
                return from_image(image, len(current_tiles))

            past = [moved(source) for source in self._carried]
            held = moved(self._output) if self.options.part_hold else None
        count = len(past) + 1
        voted = weighted_vote(current_tiles, past, self.person_weights[:count], self.part_weights[:count],
                              self.options.person_share, self.classes, held, self.options.part_hold)
        kept = past[:self.depth - 2]
        self._output = tiles.scatter(voted, chosen)
        self._carried = [current.copy(), *(tiles.scatter(p, chosen) for p in kept)]
        self._labelled = occupied
        self._labelled[chosen] |= np.any([t.reshape(len(voted), -1).any(axis=1) for t in (voted, *kept)], axis=0)
        return self._output[:labels.shape[0], :labels.shape[1]]

    def close(self) -> None:
        self.open()
