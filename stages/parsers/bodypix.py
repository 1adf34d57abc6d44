"""BodyPix 2.0 (MobileNetV1 0.50, stride 16): a person mask and 24 body parts per image."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vidparse.stages.labels import load_label_set
from vidparse.stages.onnx_session import open_session
from vidparse.stages.parsers.base import Parser
from vidparse.stages.options import BodyPixOptions as Options

STRIDE = 16


def _align_corners_matrix(out_size: int, in_size: int) -> np.ndarray:
    """Bilinear interpolation weights (out_size x in_size) that map the corners onto each other."""
    if in_size == 1:
        return np.ones((out_size, 1), np.float32)
    position = np.arange(out_size, dtype=np.float64) * (in_size - 1) / (out_size - 1)
    low = np.minimum(np.floor(position).astype(int), in_size - 2)
    frac = position - low
    weights = np.zeros((out_size, in_size), np.float32)
    weights[np.arange(out_size), low] = 1 - frac
    weights[np.arange(out_size), low + 1] = frac
    return weights


def _argmax_planes(planes: np.ndarray) -> np.ndarray:
    """Index of the largest plane per pixel; a running max beats np.argmax over a leading axis by ~2.5x."""
    best = planes[0].copy()
    index = np.zeros(best.shape, np.uint8)
    for i in range(1, len(planes)):
        better = planes[i] > best
        np.copyto(best, planes[i], where=better)
        index[better] = i
    return index


def _valid_size(n: int) -> int:
    """Smallest size >= n that BodyPix accepts: a multiple of the stride plus one."""
    return -(-(n - 1) // STRIDE) * STRIDE + 1


class BodyPixParser(Parser):
    def __init__(self, model_path: Path, options: Options, threads: int | None = None, device: str = "cpu") -> None:
        self.model_path = model_path
        self.device = device
        self.options = options
        self.threads = threads
        self.label_set = load_label_set("bodypix")
        self._session = None
        self._logit_threshold = float(np.log(options.person_threshold / (1 - options.person_threshold)))

    def open(self) -> None:
        self._session = open_session(self.model_path, self.threads, device=self.device)

    def parse(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self._parse_one(image) for image in images]

    def _parse_one(self, image: np.ndarray) -> np.ndarray:
        assert self._session is not None, "open() first"
        height, width = image.shape[:2]
        padded_h, padded_w = _valid_size(height), _valid_size(width)
        rgb = np.zeros((padded_h, padded_w, 3), np.float32)
        rgb[:height, :width] = image[:, :, ::-1]
        rgb[:height, :width] *= 1 / 127.5
        rgb[:height, :width] -= 1
        segments, parts = self._session.run(["segments", "part_heatmaps"], {"input": rgb[None]})
        logits = np.concatenate([segments[0], parts[0]], axis=2).transpose(2, 0, 1)  # 25 x h x w, stride 16
        rows = _align_corners_matrix(padded_h, logits.shape[1])[:height]
        cols = _align_corners_matrix(padded_w, logits.shape[2])[:width]
        planes = rows @ logits @ cols.T  # bilinear upsampling, separable: 25 x height x width
        labels = _argmax_planes(planes[1:]) + 1
        labels[planes[0] <= self._logit_threshold] = 0
        return labels

    def close(self) -> None:
        self._session = None


def create(name: str, options: Options, model_path: Path, device: str, threads: int | None = None) -> Parser:
    return BodyPixParser(model_path, options, threads, device)
