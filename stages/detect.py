"""Person detection with FastestDet (COCO, class 0 = person): the whole frame, and on wide frames a finer pass: tiles
of the frame, then a zoomed look at every small box and (``scan_below``) at the rows where the boxes found say small
people stand (stages/tiles.py); a box nested in a surer one is dropped."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidparse.stages.onnx_session import check_image_input, open_session
from vidparse.stages.options import DetectorOptions
from vidparse.stages.tiles import (CUT_PX, Tile, cut_sides, drop_nested, finer_pass, height_fit, merge_boxes,
                                   non_max_suppression, scan_windows, seen_closer, tile_grid, zoom_windows)
from vidparse.stages.types import Detections

INPUT_SIZE = 352
PERSON_CLASS = 0


class PersonDetector:
    def __init__(self, model_path: Path, options: DetectorOptions, threads: int | None = None) -> None:
        self.model_path = model_path
        self.options = options
        self.threads = threads
        self._session: Any = None  # an onnxruntime.InferenceSession once open

    def open(self) -> None:
        self._session = open_session(self.model_path, self.threads)
        check_image_input(self._session, self.model_path, "FastestDet", output_channels=85)
        self._input_name = self._session.get_inputs()[0].name

    def process(self, image: np.ndarray) -> Detections:
        height, width = image.shape[:2]
        options = self.options
        boxes, scores, cuts = self._detect_in(image, (0, 0, width, height), options.score_threshold)
        tiles = tile_grid(width, height, options)
        finer = finer_pass(width, options)
        zooming = bool(options.zoom_below) and finer
        tile_threshold = min(options.tile_score_threshold, options.zoom_candidate_threshold) if zooming \
            else options.tile_score_threshold
        if tiles:
            found = [(boxes, scores, cuts)]  # the whole frame: nothing cut
            for tile in tiles:
                tile_boxes, tile_scores, cuts = self._detect_in(image, tile, tile_threshold)
                # under tile_score_threshold, only whole small boxes: candidates the zoomed look keeps or drops
                candidate = ((tile_boxes[:, 3] - tile_boxes[:, 1]) < options.zoom_below) & ~cuts.any(axis=1)
                kept = (tile_scores >= options.tile_score_threshold) | candidate
                found.append((tile_boxes[kept], tile_scores[kept], cuts[kept]))
            sources = np.concatenate([np.full(len(b), i) for i, (b, _, _) in enumerate(found)])
            boxes, scores = merge_boxes(np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found]),
                                        sources, np.concatenate([f[2] for f in found]), options.nms_iou)
        scan = self.windows_to_scan(boxes, scores, (width, height)) if finer and options.scan_below else []
        if zooming or scan:
            boxes, scores = self.look_closer(image, boxes, scores, scan)
        # a second box on one person (a piece of them, or a loose box around them and more) beside a surer one: the
        # looks' boxes less than nms_iou apart, and on any frame the halves of a person FastestDet also boxes
        keep = drop_nested(boxes, scores)
        boxes, scores = boxes[keep], scores[keep]
        tall_enough = (boxes[:, 3] - boxes[:, 1]) >= options.min_height
        return Detections(boxes=boxes[tall_enough], scores=scores[tall_enough])

    def look_closer(self, image: np.ndarray, boxes: np.ndarray, scores: np.ndarray,
                    scan: list[Tile] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Boxes shorter than ``zoom_below`` replaced by what the detector finds in windows around them, where a
        person of 30-100 pixels is 3-4 times larger in its input than in a tile's, and every box a ``scan`` window
        shows closer (whole in it, at most half its height: small or not) replaced by what is found in the scan's
        windows (such a box gets no window of its own; the windows overlap, so one holds it whole). What a
        window cuts at one of its sides inside the frame is left out (the box it belongs to has a window of its own
        or is tall enough). Small boxes past ``zoom_max_windows`` windows stay as they were found if they score
        ``tile_score_threshold``; under it they were only candidates for a closer look, and are dropped."""
        options = self.options
        height, width = image.shape[:2]
        scan = scan or []
        small = (boxes[:, 3] - boxes[:, 1]) < options.zoom_below
        scanned = seen_closer(boxes, scan)
        windows = scan + zoom_windows(boxes[small & ~scanned], (width, height), options)
        kept = ~small & ~scanned
        kept[small] = ~seen_closer(boxes[small], windows) & (scores[small] >= options.tile_score_threshold)
        found = [(boxes[kept], scores[kept])]
        for window in windows:
            window_boxes, window_scores, cuts = self._detect_in(image, window, options.zoom_score_threshold)
            whole = ~cuts.any(axis=1)
            found.append((window_boxes[whole], window_scores[whole]))
        zoomed = np.concatenate([np.full(len(b), i > 0) for i, (b, _) in enumerate(found)])
        boxes, scores = np.concatenate([b for b, _ in found]), np.concatenate([s for _, s in found])
        keep = non_max_suppression(boxes, scores, options.nms_iou, first=zoomed)  # a closer look wins
        return boxes[keep], scores[keep]

    def windows_to_scan(self, boxes: np.ndarray, scores: np.ndarray, frame_wh: tuple[int, int]) -> list[Tile]:
        """The windows of ``scan_windows`` over the rows where the boxes found so far say people ``scan_above`` to
        ``scan_below`` pixels tall stand (those scoring ``score_threshold``; left out: a box nested in a surer one,
        as the halves of a person would say people are smaller than they are, and a box the frame's top or bottom
        cuts); none where they do not say."""
        options = self.options
        sure = drop_nested(boxes, scores)
        whole = (boxes[sure, 1] > CUT_PX) & (boxes[sure, 3] < frame_wh[1] - CUT_PX)
        sure = sure[(scores[sure] >= options.score_threshold) & whole]
        fit = height_fit(boxes[sure])
        return scan_windows(fit, frame_wh, options) if fit else []

    def _detect_in(self, image: np.ndarray, region: Tile, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (frame pixels) and scores the detector finds in one region of the frame above ``threshold``, after
        suppression, and which of their sides lie on the region's sides inside the frame (``cut_sides``)."""
        x1, y1, x2, y2 = region
        boxes, scores = self._detect(image[y1:y2, x1:x2], threshold)
        keep = non_max_suppression(boxes, scores, self.options.nms_iou)
        boxes = boxes[keep] + np.array([x1, y1, x1, y1], np.float32)
        return boxes, scores[keep], cut_sides(boxes, region, (image.shape[1], image.shape[0]))

    def _detect(self, image: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Every grid cell's person box (image pixels) and score above ``threshold``, before suppression."""
        assert self._session is not None, "open() first"
        height, width = image.shape[:2]
        blob = cv2.resize(image, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
        blob = blob.transpose(2, 0, 1)[None].astype(np.float32) / 255.0
        grid = self._session.run(None, {self._input_name: blob})[0][0]  # 85 x G x G
        cells = grid.shape[1]
        scores = grid[0] ** 0.6 * grid[5 + PERSON_CLASS] ** 0.4
        rows, cols = np.nonzero(scores > threshold)
        cx = (cols + np.tanh(grid[1, rows, cols])) / cells
        cy = (rows + np.tanh(grid[2, rows, cols])) / cells
        bw = 1 / (1 + np.exp(-grid[3, rows, cols]))
        bh = 1 / (1 + np.exp(-grid[4, rows, cols]))
        boxes = np.stack([(cx - bw / 2) * width, (cy - bh / 2) * height, (cx + bw / 2) * width, (cy + bh / 2) * height], 1)
        boxes = np.clip(boxes, 0, [width, height, width, height]).astype(np.float32).reshape(-1, 4)
        return boxes, scores[rows, cols].astype(np.float32)

    def close(self) -> None:
        self._session = None
