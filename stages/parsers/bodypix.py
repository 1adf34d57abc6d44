"""BodyPix 2.0 (MobileNetV1 0.50, stride 16): a person mask and 24 body parts per image."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from vidparse.stages.labels import load_label_set
from vidparse.stages.onnx_session import check_image_input, open_session
from vidparse.stages.parsers.base import Parser
from vidparse.stages.options import BodyPixOptions as Options

STRIDE = 16
# Upsampled maps are made in tiles of this many pixels a side: each tile reads only the few logit cells under it, so
# the work grows with the pixels, not with the square of a side (a 30000-pixel-wide panorama), and a tile's 25 planes
# stay small.
TILE = 256


def _interpolation_matrix(positions: np.ndarray, in_size: int) -> np.ndarray:
    """Linear interpolation weights (len(positions) x in_size) sampling an axis of ``in_size`` samples at
    fractional ``positions``."""
    if in_size == 1:
        return np.ones((len(positions), 1), np.float32)
    low = np.clip(np.floor(positions).astype(int), 0, in_size - 2)
    frac = np.clip(positions - low, 0, 1)
    weights = np.zeros((len(positions), in_size), np.float32)
    weights[np.arange(len(positions)), low] = 1 - frac
    weights[np.arange(len(positions)), low + 1] = frac
    return weights


def _sample_positions(out_size: int, image_size: int, padded_size: int, in_size: int) -> np.ndarray:
    """Where ``out_size`` samples spread over the first ``image_size`` input pixels (the image; the rest is padding)
    fall on a logit axis of ``in_size`` cells over a ``padded_size`` input, corners aligned."""
    pixels = np.arange(out_size, dtype=np.float64) * ((image_size - 1) / max(out_size - 1, 1))
    return pixels * ((in_size - 1) / max(padded_size - 1, 1))


def _bands(positions: np.ndarray, in_size: int) -> list[tuple[slice, slice, np.ndarray]]:
    """The interpolation weights of (rising) ``positions`` on an axis of ``in_size`` cells, in runs of TILE
    samples, each over the span of cells it reads: (samples, cells, the run's weights over those cells)."""
    bands = []
    for start in range(0, len(positions), TILE):
        run = positions[start:start + TILE]
        first = min(int(run[0]), max(in_size - 2, 0))  # the cells _interpolation_matrix reads: clipped alike
        last = min(int(run[-1]) + 1, in_size - 1)
        bands.append((slice(start, start + len(run)), slice(first, last + 1),
                      _interpolation_matrix(run - first, last + 1 - first)))
    return bands


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
        check_image_input(self._session, self.model_path, "BodyPix", channels_last=True)

    def parse(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        return [self._parse_one(image) for image in images]

    def _parse_one(self, image: np.ndarray) -> np.ndarray:
        labels = np.empty(image.shape[:2], np.uint8)
        for rows, columns, planes in upsampled_tiles(*self.logits(image), image.shape[:2]):
            tile = _argmax_planes(planes[1:]) + 1
            tile[planes[0] <= self._logit_threshold] = 0
            labels[rows, columns] = tile
        return labels

    def logits(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int], tuple[int, int]]:
        """The person logit and the 24 part logits (25 x h x w, stride 16) of ``image`` padded to a size BodyPix
        accepts; with that padded size and the image's, as ``upsample`` takes them."""
        assert self._session is not None, "open() first"
        height, width = image.shape[:2]
        padded_h, padded_w = _valid_size(height), _valid_size(width)
        rgb = np.zeros((padded_h, padded_w, 3), np.float32)
        rgb[:height, :width] = image[:, :, ::-1]
        rgb[:height, :width] *= 1 / 127.5
        rgb[:height, :width] -= 1
        segments, parts = self._session.run(["segments", "part_heatmaps"], {"input": rgb[None]})
        return np.concatenate([segments[0], parts[0]], axis=2).transpose(2, 0, 1), (padded_h, padded_w), (height, width)

    def close(self) -> None:
        self._session = None


def upsampled_tiles(logits: np.ndarray, padded_hw: tuple[int, int], image_hw: tuple[int, int],
                    out_hw: tuple[int, int] | None = None) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """BodyPix logits upsampled bilinearly (corners aligned, padding cut off) to ``out_hw`` (default: the image's
    size), tile by tile: (rows, columns, C x rows x columns)."""
    out_h, out_w = out_hw or image_hw
    in_h, in_w = logits.shape[1:]
    columns = _bands(_sample_positions(out_w, image_hw[1], padded_hw[1], in_w), in_w)
    for out_rows, in_rows, row_weights in _bands(_sample_positions(out_h, image_hw[0], padded_hw[0], in_h), in_h):
        band = row_weights @ logits[:, in_rows, :]
        for out_columns, in_columns, column_weights in columns:
            yield out_rows, out_columns, band[:, :, in_columns] @ column_weights.T


def upsample(logits: np.ndarray, padded_hw: tuple[int, int], image_hw: tuple[int, int],
             out_hw: tuple[int, int] | None = None) -> np.ndarray:
    """BodyPix logits upsampled bilinearly (corners aligned, padding cut off) to ``out_hw`` (default: the image's
    size): C x out_h x out_w."""
    out_h, out_w = out_hw or image_hw
    planes = np.empty((logits.shape[0], out_h, out_w), np.float32)
    for rows, columns, tile in upsampled_tiles(logits, padded_hw, image_hw, out_hw):
        planes[:, rows, columns] = tile
    return planes


def create(name: str, options: Options, model_path: Path, device: str, threads: int | None = None) -> Parser:
    return BodyPixParser(model_path, options, threads, device)
