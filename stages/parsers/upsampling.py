"""Model outputs brought up to a crop's size: bilinear, or along the crop's own edges.

The frozen models and the network see a crop at most about 256 rows tall, so on a person filmed or photographed
larger every label edge is drawn at that coarser grid and smeared by the bilinear upsampling. `upsampled` with a
guide uses the fast guided filter (He and Sun, "Fast Guided Filter", 2015): each plane is fitted, in small windows at
its own resolution, as a linear function of the crop's brightness there; the fitted coefficients are upsampled and
applied to the crop's full-resolution pixels, so an edge the planes put near an edge of the image lands on it.
Written here rather than taken from opencv-contrib's ``ximgproc``: that wheel replaces the headless OpenCV the
project pins, and its guided filter works at full resolution (about six times the cost on a large crop).
"""

from __future__ import annotations

import cv2
import numpy as np

GUIDED_FROM = 1.5  # planes upsampled by less than this are nearly at the crop's resolution: bilinear is enough
EPSILON = 1e-3  # the filter's regularizer (brightness 0-1): edges fainter than about its square root are smoothed over


def resized(planes: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """C x h x w planes resized bilinearly to C x out_hw."""
    channels_last = cv2.resize(planes.transpose(1, 2, 0), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    return channels_last.reshape(out_hw[0], out_hw[1], -1).transpose(2, 0, 1)


def brightness(image: np.ndarray) -> np.ndarray:
    """The guide: a BGR crop's gray levels, float32 0-1."""
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32) * np.float32(1 / 255)


def _box(values: np.ndarray, radius: int) -> np.ndarray:
    side = 2 * radius + 1
    return cv2.boxFilter(values, -1, (side, side), borderType=cv2.BORDER_REFLECT).reshape(values.shape)


def upsampled(planes: np.ndarray, out_hw: tuple[int, int], guide: np.ndarray | None = None,
              radius: int = 1) -> np.ndarray:
    """C x h x w planes covering a crop, at C x ``out_hw``: bilinear (`resized`), or with ``guide`` (`brightness` of
    the crop, out_hw in size) their edges moved onto the crop's where they are enlarged GUIDED_FROM times or more;
    ``radius``: the fitting windows' half side at the planes' resolution."""
    if guide is None or out_hw[0] < GUIDED_FROM * planes.shape[1]:
        return resized(planes, out_hw)
    channels, height, width = planes.shape
    low = cv2.resize(guide, (width, height), interpolation=cv2.INTER_AREA)
    values = np.ascontiguousarray(planes.transpose(1, 2, 0), dtype=np.float32)
    mean_guide = _box(low, radius)
    variance = _box(low * low, radius) - mean_guide * mean_guide
    mean_values = _box(values, radius)
    covariance = _box(values * low[:, :, None], radius) - mean_guide[:, :, None] * mean_values
    slope = covariance / (variance[:, :, None] + np.float32(EPSILON))
    offset = mean_values - slope * mean_guide[:, :, None]
    slope, offset = (cv2.resize(_box(c, radius), (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
                     .reshape(out_hw[0], out_hw[1], channels) for c in (slope, offset))
    return (slope * guide[:, :, None] + offset).transpose(2, 0, 1)
