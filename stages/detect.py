"""Person detection with FastestDet (COCO, class 0 = person)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from vidparse.stages.onnx_session import open_session
from vidparse.stages.types import Detections
from vidparse.stages.options import DetectorOptions

INPUT_SIZE = 352
PERSON_CLASS = 0


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices of the boxes kept, most confident first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        x1 = np.maximum(boxes[best, 0], boxes[rest, 0])
        y1 = np.maximum(boxes[best, 1], boxes[rest, 1])
        x2 = np.minimum(boxes[best, 2], boxes[rest, 2])
        y2 = np.minimum(boxes[best, 3], boxes[rest, 3])
        inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
        iou = inter / (areas[best] + areas[rest] - inter + 1e-9)
        order = rest[iou <= iou_threshold]
    return np.array(keep, dtype=np.int64)


class PersonDetector:
    def __init__(self, model_path: Path, options: DetectorOptions, threads: int | None = None) -> None:
        self.model_path = model_path
        self.options = options
        self.threads = threads
        self._session = None

    def open(self) -> None:
        self._session = open_session(self.model_path, self.threads)
        self._input_name = self._session.get_inputs()[0].name

    def process(self, image: np.ndarray) -> Detections:
        assert self._session is not None, "open() first"
        height, width = image.shape[:2]
        blob = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        blob = blob.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        grid = self._session.run(None, {self._input_name: blob})[0][0]  # 85 x G x G
        return self._decode(grid, width, height)

    def _decode(self, grid: np.ndarray, width: int, height: int) -> Detections:
        cells = grid.shape[1]
        scores = grid[0] ** 0.6 * grid[5 + PERSON_CLASS] ** 0.4
        rows, cols = np.nonzero(scores > self.options.score_threshold)
        if rows.size == 0:
            return Detections()
        cx = (cols + np.tanh(grid[1, rows, cols])) / cells
        cy = (rows + np.tanh(grid[2, rows, cols])) / cells
        bw = 1 / (1 + np.exp(-grid[3, rows, cols]))
        bh = 1 / (1 + np.exp(-grid[4, rows, cols]))
        boxes = np.stack([(cx - bw / 2) * width, (cy - bh / 2) * height, (cx + bw / 2) * width, (cy + bh / 2) * height], 1)
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32)
        box_scores = scores[rows, cols].astype(np.float32)
        keep = non_max_suppression(boxes, box_scores, self.options.nms_iou)
        boxes, box_scores = boxes[keep], box_scores[keep]
        tall_enough = (boxes[:, 3] - boxes[:, 1]) >= self.options.min_height
        return Detections(boxes=boxes[tall_enough], scores=box_scores[tall_enough])

    def close(self) -> None:
        self._session = None
