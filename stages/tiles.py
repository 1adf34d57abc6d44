"""Person boxes from several looks at a frame: non-maximum suppression, the tiles of a finer pass, the windows of a
zoomed look at small boxes and of the scan (where the boxes' heights say small people stand), all as regions of the
frame, and one box per person from the boxes found in the whole frame and in the tiles (a person cut by a tile's side
is found in pieces)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from vidparse.stages.options import DetectorOptions
from vidparse.stages.tracker import box_areas

Tile = tuple[int, int, int, int]  # x1, y1, x2, y2 in frame pixels

CUT_PX = 1.0  # a box this close to a tile side that is not the frame's border was cut there
ALONG_SHARE = 0.5  # pieces of one person overlap by at least this share of the narrower one along the cut
MIN_WINDOW_PX = 64  # a zoomed look's window is at least this wide (a 16-pixel box seen 4 times its height)
# a box taller than this share of a window is not seen closer in it (the window is about the person's own size, so
# the detector would see them cut or filling its input): it gets a window of its own
SEEN_CLOSER_SHARE = 0.5
# two boxes, one with at least NESTED_SHARE of its area inside the other and overlapping it by an IoU of at least
# NESTED_MIN_IOU, are one person seen twice (a piece of them, or a loose box around them and more) when one scores
# NESTED_SCORE_GAP less: it is dropped. A smaller IoU is a farther person behind a nearer one; closer scores leave
# no telling which box is the loose one (docs/crowds.md)
NESTED_SHARE = 0.75
NESTED_MIN_IOU = 0.2
NESTED_SCORE_GAP = 0.1
FIT_MIN_BOXES = 4  # boxes it takes to say how tall people are at each row of the frame (the scan)


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float,
                        first: np.ndarray | None = None) -> np.ndarray:
    """Indices of the boxes kept, most confident first; boxes flagged ``first`` go before every other box."""
    order = np.argsort(-scores, kind="stable")
    if first is not None:
        order = order[np.argsort(~first[order], kind="stable")]
    areas = box_areas(boxes)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        inter = _intersections(boxes, best, rest)
        iou = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def drop_nested(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Indices of the boxes kept, most confident first: a box nested in or around a box that scores
    NESTED_SCORE_GAP more (see NESTED_SHARE) is dropped."""
    order = np.argsort(-scores, kind="stable")
    areas = box_areas(boxes)
    keep: list[int] = []
    for index in order:
        if keep:
            kept = np.array(keep)
            inter = _intersections(boxes, index, kept)
            nested = inter >= NESTED_SHARE * np.minimum(areas[index], areas[kept])
            overlapping = inter >= NESTED_MIN_IOU * (areas[index] + areas[kept] - inter)
            surer = scores[kept] - scores[index] >= NESTED_SCORE_GAP - 1e-6
            if (nested & overlapping & surer).any():
                continue
        keep.append(int(index))
    return np.array(keep, dtype=np.int64)


def _intersections(boxes: np.ndarray, one: int, others: np.ndarray) -> np.ndarray:
    """The area box ``one`` shares with each of the boxes ``others`` (indices into ``boxes``)."""
    x1 = np.maximum(boxes[one, 0], boxes[others, 0])
    y1 = np.maximum(boxes[one, 1], boxes[others, 1])
    x2 = np.minimum(boxes[one, 2], boxes[others, 2])
    y2 = np.minimum(boxes[one, 3], boxes[others, 3])
    return np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)


def finer_pass(width: int, options: DetectorOptions) -> bool:
    """Whether a frame this wide gets the finer pass (tiles, zoomed looks, the scan)."""
    return width >= options.tile_min_width


def small_people_pass(width: int, options: DetectorOptions) -> bool:
    """Whether frames this wide get a finer pass for small people (tiles, zoomed looks or the scan) with these
    options."""
    return finer_pass(width, options) and (options.tiles >= 2 or options.zoom_below > 0 or options.scan_below > 0)


def without_small_people(options: DetectorOptions) -> DetectorOptions:
    return replace(options, tiles=0, zoom_below=0, scan_below=0)


def tile_grid(width: int, height: int, options: DetectorOptions) -> list[Tile]:
    """``options.tiles`` columns of tiles over the frame and as many rows as keep them about square, each grown by
    ``tile_overlap`` of its size (half on each side, clipped at the frame); only the top ``tile_rows`` rows (0: all).
    None for frames narrower than ``tile_min_width``."""
    count = options.tiles
    if count < 2 or not finer_pass(width, options):
        return []
    grid_rows = max(1, round(count * height / width))
    rows = min(options.tile_rows or grid_rows, grid_rows)
    pad_x, pad_y = width / count * options.tile_overlap / 2, height / grid_rows * options.tile_overlap / 2
    tiles = []
    for row in range(rows):
        for col in range(count):
            x1, x2 = width * col / count - pad_x, width * (col + 1) / count + pad_x
            y1, y2 = height * row / grid_rows - pad_y, height * (row + 1) / grid_rows + pad_y
            tiles.append((max(0, int(x1)), max(0, int(y1)), min(width, int(np.ceil(x2))), min(height, int(np.ceil(y2)))))
    return tiles


def seen_closer(boxes: np.ndarray, windows: list[Tile]) -> np.ndarray:
    """Which boxes one of the windows shows closer: wholly inside it and at most SEEN_CLOSER_SHARE of its height."""
    if not windows:
        return np.zeros(len(boxes), bool)
    frames = np.array(windows, np.float32)
    within = ((boxes[:, None, :2] >= frames[None, :, :2]) & (boxes[:, None, 2:] <= frames[None, :, 2:])).all(2)
    small_enough = boxes[:, None, 3] - boxes[:, None, 1] <= SEEN_CLOSER_SHARE * (frames[None, :, 3] - frames[None, :, 1])
    return (within & small_enough).any(1)


def zoom_windows(boxes: np.ndarray, frame_wh: tuple[int, int], options: DetectorOptions) -> list[Tile]:
    """Square windows for a zoomed look at ``boxes`` (in the order given): ``zoom_window`` times a box's height
    (at least MIN_WINDOW_PX, at most the frame), centred on it and moved inside the frame; a box an earlier window
    shows closer (``seen_closer``) gets none of its own; at most ``zoom_max_windows``."""
    width, height = frame_wh
    windows: list[Tile] = []
    for box in boxes:
        if len(windows) == options.zoom_max_windows:
            break
        if seen_closer(box[None], windows)[0]:
            continue
        x1, y1, x2, y2 = box.tolist()
        side = int(min(max(options.zoom_window * (y2 - y1), MIN_WINDOW_PX), width, height))
        left = int(min(max(0.0, (x1 + x2 - side) / 2), width - side))
        top = int(min(max(0.0, (y1 + y2 - side) / 2), height - side))
        windows.append((left, top, left + side, top + side))
    return windows


def height_fit(boxes: np.ndarray) -> tuple[float, float] | None:
    """Person height against the row of their feet (``height = slope * row + intercept``), fitted to ``boxes`` so
    that a few wrong ones (up to about a quarter) barely move it (Theil-Sen); None unless there are FIT_MIN_BOXES
    and the farther up a box stands, the smaller it is (a camera looking down on people)."""
    if len(boxes) < FIT_MIN_BOXES or np.ptp(boxes[:, 3]) < 1:
        return None
    rows, heights = boxes[:, 3].astype(np.float64), (boxes[:, 3] - boxes[:, 1]).astype(np.float64)
    first, second = np.triu_indices(len(boxes), k=1)
    apart = rows[first] != rows[second]
    slope = float(np.median((heights[second] - heights[first])[apart] / (rows[second] - rows[first])[apart]))
    # the median of the boxes' own intercepts: the median height less slope times the median row would let boxes
    # all on one side (a street's small boxes) pull the line
    return (slope, float(np.median(heights - slope * rows))) if slope > 0 else None


def scan_windows(fit: tuple[float, float], frame_wh: tuple[int, int], options: DetectorOptions) -> list[Tile]:
    """Square windows over the rows where ``fit`` expects people from ``scan_above`` to ``scan_below`` pixels tall,
    each ``scan_window`` times the height expected at its row (at least MIN_WINDOW_PX), farthest row first, at most
    ``scan_max_windows``. Rows and columns overlap so that every person of the expected height is whole in one."""
    slope, intercept = fit
    width, height = frame_wh
    feet = max(0.0, (options.scan_above - intercept) / slope)
    windows: list[Tile] = []
    while feet <= height:
        expected = slope * feet + intercept
        side = int(min(max(options.scan_window * expected, MIN_WINDOW_PX), width, height))
        # the row's window holds people whose feet are up to a quarter of its side above ``feet``
        if slope * max(0.0, feet - side / 4) + intercept >= options.scan_below:
            break
        top = int(min(max(0.0, feet - expected / 2 - side / 2), height - side))
        columns = 1 + int(np.ceil((width - side) / (0.75 * side)))
        for left in np.linspace(0, width - side, columns).astype(int):
            if len(windows) == options.scan_max_windows:
                return windows
            windows.append((int(left), top, int(left) + side, top + side))
        if top + side >= height or feet >= height:  # a window narrower than the row wants may stop short of it
            break
        feet = min(feet + side / 2, height)  # the last row is flush with the frame's bottom
    return windows


def cut_sides(boxes: np.ndarray, tile: Tile, frame_wh: tuple[int, int]) -> np.ndarray:
    """N x 4 booleans: which sides (left, top, right, bottom) of each box lie on a side of ``tile`` inside the frame."""
    x1, y1, x2, y2 = tile
    width, height = frame_wh
    inner = np.array([x1 > 0, y1 > 0, x2 < width, y2 < height])
    on_side = np.abs(boxes - np.array([x1, y1, x2, y2], np.float32)) <= CUT_PX
    return on_side & inner


def merge_boxes(boxes: np.ndarray, scores: np.ndarray, sources: np.ndarray, cuts: np.ndarray,
                nms_iou: float) -> tuple[np.ndarray, np.ndarray]:
    """One box per person from boxes found in several places (``sources``: the frame or tile each came from).

    A box cut at a tile side is a piece: it is joined (union box, best score) with every box from another source
    that it overlaps across that side and along it by ALONG_SHARE of the narrower of the two. Then non-maximum
    suppression at ``nms_iou``. Returns boxes and scores, most confident first."""
    groups = np.arange(len(boxes))

    def root(i: int) -> int:
        while groups[i] != i:
            groups[i] = groups[groups[i]]
            i = int(groups[i])
        return i

    for a in np.nonzero(cuts.any(axis=1))[0]:
        for b in np.nonzero(sources != sources[a])[0]:
            if _pieces_of_one(boxes[a], boxes[b], cuts[a]):
                groups[root(int(a))] = root(int(b))
    roots = np.array([root(i) for i in range(len(boxes))], np.int64)
    unique = np.unique(roots)
    joined = np.array([[boxes[roots == r, 0].min(), boxes[roots == r, 1].min(), boxes[roots == r, 2].max(),
                        boxes[roots == r, 3].max()] for r in unique], np.float32).reshape(-1, 4)
    best = np.array([scores[roots == r].max() for r in unique], np.float32)
    keep = non_max_suppression(joined, best, nms_iou)
    return joined[keep], best[keep]


def _pieces_of_one(a: np.ndarray, b: np.ndarray, a_cut: np.ndarray) -> bool:
    """Whether ``b`` continues ``a`` across a side where ``a`` was cut."""
    overlap_x = min(a[2], b[2]) - max(a[0], b[0])
    overlap_y = min(a[3], b[3]) - max(a[1], b[1])
    if overlap_x <= 0 or overlap_y <= 0:
        return False
    narrow_x = min(a[2] - a[0], b[2] - b[0])
    narrow_y = min(a[3] - a[1], b[3] - b[1])
    across_rows = (a_cut[1] and b[1] < a[1]) or (a_cut[3] and b[3] > a[3])  # continues above or below
    across_cols = (a_cut[0] and b[0] < a[0]) or (a_cut[2] and b[2] > a[2])
    return bool((across_rows and overlap_x >= ALONG_SHARE * narrow_x)
                or (across_cols and overlap_y >= ALONG_SHARE * narrow_y))
