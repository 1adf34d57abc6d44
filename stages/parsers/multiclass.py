"""MediaPipe's multiclass selfie segmenter (TFLite): background, hair, body skin, face skin, clothes, others.

Its input is fixed at 256x256 (the interpreter cannot resize it), and one call costs as much as parsing several
small people with BodyPix, so small crops are packed into a grid of 2x2, 3x3 or 4x4 cells and segmented in one call.
Each crop is stretched to fill its cell, as the model expects a whole image stretched to its input, after black
columns (or rows) pad it to an ordinary photo's shape: a person crop is about three times taller than wide, and
stretched that much the model sees poorly (on ccp-train photos, hair / skin / clothes IoU 60 / 73 / 77 on crops around
the person against 79 / 82 / 87 with the crops padded to 3:4 and 76 / 81 / 84 on the whole photo).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from vidparse.errors import ModelError

CLASSES = ("background", "hair", "body_skin", "face_skin", "clothes", "others")
SIDE = 256  # the model's input height and width
GRIDS = (4, 3, 2, 1)  # cells per side of a call's canvas, most crops per call first
ASPECT = 0.75  # width / height an image is padded to at least (and height / width)


def cell_side(grid: int) -> int:
    return SIDE // grid


def grid_for(height: float, detail: float) -> int:
    """Cells per side for a crop holding ``height`` rows of real pixels: the most crops per call whose cell is still
    at least ``detail`` x ``height`` pixels (a crop is never segmented finer than one call of its own)."""
    for grid in GRIDS:
        if cell_side(grid) >= height * detail:
            return grid
    return 1


def _window(height: int, width: int, side: int) -> tuple[int, int, int, int]:
    """Where an image goes in its ``side`` x ``side`` cell once padded (centred) to ``ASPECT``: top, left, rows,
    columns; the canvas is black (-1 after scaling) elsewhere."""
    rows = columns = side
    if width < height * ASPECT:
        columns = max(1, min(side, round(side * width / (height * ASPECT))))
    elif height < width * ASPECT:
        rows = max(1, min(side, round(side * height / (width * ASPECT))))
    return (side - rows) // 2, (side - columns) // 2, rows, columns


def softmax(logits: np.ndarray, axis: int) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


class MulticlassSegmenter:
    """``probabilities(images, heights)``: per BGR image, 6 x rows x columns class probabilities of the image
    (``CLASSES``), at most cell x cell: the image is padded to ``ASPECT`` and stretched to its cell, and the padding's
    share of the cell cut off again; ``heights``: rows of real pixels in each image (less than its height where it was
    enlarged), which size its cell."""

    def __init__(self, model_path: Path, threads: int | None = None, detail: float = 0.33) -> None:
        self.model_path, self.threads, self.detail = model_path, threads, detail
        self._interpreter = None

    def open(self) -> None:
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise ModelError("the multiclass segmenter needs the LiteRT runtime",
                             hint='pip install ai-edge-litert (it comes with: pip install "vidparse")') from exc
        try:
            interpreter = Interpreter(model_path=str(self.model_path), num_threads=self.threads or 1)
            interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load model {self.model_path}: {str(exc).splitlines()[0]}",
                             hint="the file is corrupt or not a TFLite model; fetch it again: "
                                  "vidparse models pull multiclass") from exc
        (source,), (target,) = interpreter.get_input_details(), interpreter.get_output_details()
        if tuple(source["shape"]) != (1, SIDE, SIDE, 3) or tuple(target["shape"]) != (1, SIDE, SIDE, len(CLASSES)):
            raise ModelError(f"{self.model_path} is not the multiclass selfie segmenter (input {source['shape']}, "
                             f"output {target['shape']})", hint="vidparse models pull multiclass")
        self._interpreter, self._input, self._output = interpreter, source["index"], target["index"]

    def probabilities(self, images: Sequence[np.ndarray], heights: Sequence[float] | None = None) -> list[np.ndarray]:
        results: list[np.ndarray | None] = [None] * len(images)
        by_grid: dict[int, list[int]] = {}
        for index, image in enumerate(images):
            height = image.shape[0] if heights is None else heights[index]
            by_grid.setdefault(grid_for(height, self.detail), []).append(index)
        for grid, indices in by_grid.items():
            per_call = grid * grid
            for start in range(0, len(indices), per_call):
                batch = indices[start:start + per_call]
                for index, probabilities in zip(batch, self._segment_grid([images[i] for i in batch], grid)):
                    results[index] = probabilities
        return [r for r in results if r is not None]

    def _segment_grid(self, images: Sequence[np.ndarray], grid: int) -> list[np.ndarray]:
        assert self._interpreter is not None, "open() first"
        side = cell_side(grid)
        canvas = np.zeros((SIDE, SIDE, 3), np.float32)
        cells = [(row * side, col * side) for row in range(grid) for col in range(grid)][:len(images)]
        windows = []
        for (y, x), image in zip(cells, images):
            top, left, rows, columns = _window(image.shape[0], image.shape[1], side)
            interpolation = cv2.INTER_AREA if image.shape[0] > rows else cv2.INTER_LINEAR
            canvas[y + top:y + top + rows, x + left:x + left + columns] = cv2.resize(
                image, (columns, rows), interpolation=interpolation)[:, :, ::-1]
            windows.append((y + top, x + left, rows, columns))
        canvas *= 1 / 127.5
        canvas -= 1
        self._interpreter.set_tensor(self._input, canvas[None])
        self._interpreter.invoke()
        logits = self._interpreter.get_tensor(self._output)[0]
        return [softmax(logits[y:y + rows, x:x + columns], axis=2).transpose(2, 0, 1) for y, x, rows, columns in windows]

    def close(self) -> None:
        self._interpreter = None
