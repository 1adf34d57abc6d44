"""Person regions: crop with a margin and rescale, pack several crops onto one canvas, paste labels back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class Crop:
    """A person crop: ``region`` (x1, y1, x2, y2) in frame pixels and the crop image scaled by ``scale``."""

    region: tuple[int, int, int, int]
    image: np.ndarray
    scale: float


@dataclass(frozen=True)
class Placement:
    x: int
    y: int
    width: int
    height: int


def expand_box(box: Sequence[float] | np.ndarray, margin: float, frame_hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """Grow a box by ``margin`` of its width/height on every side, clip it to the frame, round to pixels."""
    x1, y1, x2, y2 = (float(v) for v in box)
    dx, dy = (x2 - x1) * margin, (y2 - y1) * margin
    height, width = frame_hw
    left, top = max(0, int(np.floor(x1 - dx))), max(0, int(np.floor(y1 - dy)))
    right, bottom = min(width, int(np.ceil(x2 + dx))), min(height, int(np.ceil(y2 + dy)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def crop_height(region_height: int, person_height: int, max_upscale: float = 0.0) -> int:
    """The height a region is parsed at: ``person_height``, or with ``max_upscale`` > 0 no more than
    ``max_upscale`` times the region's own height (small people are not blown up to ``person_height``)."""
    if max_upscale <= 0:
        return person_height
    return max(1, min(person_height, round(region_height * max_upscale)))


def crop_person(image: np.ndarray, box: Sequence[float], margin: float, person_height: int,
                max_upscale: float = 0.0) -> Crop:
    """Cut the box plus margin out of ``image`` and scale it to ``crop_height`` pixels tall."""
    region = expand_box(box, margin, image.shape[:2])
    x1, y1, x2, y2 = region
    patch = image[y1:y2, x1:x2]
    height = crop_height(patch.shape[0], person_height, max_upscale)
    scale = height / patch.shape[0]
    size = (max(1, round(patch.shape[1] * scale)), height)
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return Crop(region=region, image=cv2.resize(patch, size, interpolation=interpolation), scale=scale)


def paste_labels(frame_labels: np.ndarray, crop: Crop, crop_labels: np.ndarray) -> np.ndarray:
    """Write a crop's labels into the frame's label map where the frame is still background.

    Callers paste the smallest box first, so each person keeps the parse of the tightest box around them.
    Returns the labels this crop actually wrote (0 elsewhere), at frame resolution.
    """
    x1, y1, x2, y2 = crop.region
    resized = cv2.resize(crop_labels, (x2 - x1, y2 - y1), interpolation=cv2.INTER_NEAREST)
    target = frame_labels[y1:y2, x1:x2]
    fill = (target == 0) & (resized != 0)
    target[fill] = resized[fill]
    return np.where(fill, resized, 0).astype(np.uint8)


def unpaste_labels(frame_labels: np.ndarray, crop: Crop, written: np.ndarray) -> None:
    """Undo ``paste_labels``: back to background where it wrote ``written``."""
    x1, y1, x2, y2 = crop.region
    frame_labels[y1:y2, x1:x2][written != 0] = 0


def pack(images: Sequence[np.ndarray], gap: int = 16, align: int = 32, fill: int = 0) -> tuple[np.ndarray, list[Placement]]:
    """Shelf-pack images onto one canvas close to square; canvas sides are multiples of ``align``.

    Returns the canvas and where each image went (in input order).
    """
    if not images:
        raise ValueError("pack needs at least one image")
    area = sum((im.shape[0] + gap) * (im.shape[1] + gap) for im in images)
    widest = max(im.shape[1] for im in images)
    row_limit = max(widest, int(np.sqrt(area)))
    order = sorted(range(len(images)), key=lambda i: -images[i].shape[0])
    placements: list[Placement | None] = [None] * len(images)
    x = y = shelf_height = canvas_width = 0
    for i in order:
        h, w = images[i].shape[:2]
        if x > 0 and x + w > row_limit:
            x, y, shelf_height = 0, y + shelf_height + gap, 0
        placements[i] = Placement(x, y, w, h)
        canvas_width = max(canvas_width, x + w)
        x += w + gap
        shelf_height = max(shelf_height, h)
    canvas_height = y + shelf_height
    canvas_h = -(-canvas_height // align) * align
    canvas_w = -(-canvas_width // align) * align
    canvas = np.full((canvas_h, canvas_w, images[0].shape[2]), fill, dtype=images[0].dtype)
    for im, p in zip(images, placements):
        assert p is not None
        canvas[p.y : p.y + p.height, p.x : p.x + p.width] = im
    return canvas, [p for p in placements if p is not None]


def unpack(canvas_labels: np.ndarray, placements: Sequence[Placement]) -> list[np.ndarray]:
    """Cut each packed image's labels back out of a canvas-sized label map."""
    return [canvas_labels[p.y : p.y + p.height, p.x : p.x + p.width].copy() for p in placements]
