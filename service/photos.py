"""Photos: parsed in the server process by one parser loaded at start-up (photo requests never wait behind the
worker pool's video frames), answered as JSON, a label PNG or an overlay JPEG."""

from __future__ import annotations

import base64
import io
import threading
import time
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from vidparse.config import Config
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.recolor import Recolor
from vidparse.stages.types import FrameResult
from vidparse.stages.writers import label_image, label_palette


@dataclass
class ParsedPhoto:
    image: np.ndarray  # BGR, upright
    labels: np.ndarray  # class ids, the photo's size
    result: FrameResult
    seconds: float


def _hex(color: np.ndarray) -> str:
    b, g, r = (int(c) for c in color)
    return f"#{r:02x}{g:02x}{b:02x}"


class PhotoParser:
    """One detect-crop-parse stage (as a worker runs it) behind a lock: requests take turns."""

    def __init__(self, config: Config, models: ResolvedModels, threads: int) -> None:
        self.stage = build_person_parser(config, models, threads)
        self.label_set = load_label_set(LABEL_SETS[config.model])
        self.recolor = Recolor(self.label_set, config.compose)
        self.palette = label_palette(self.label_set)
        self.quality = config.serve.preview_quality
        self._lock = threading.Lock()
        self.ready = False

    def open(self) -> None:
        self.stage.open()
        self.ready = True

    def close(self) -> None:
        self.ready = False
        self.stage.close()

    def parse(self, image: np.ndarray) -> ParsedPhoto:
        with self._lock:
            started = time.perf_counter()
            labels, result = self.stage.process(image)
            return ParsedPhoto(image, labels, result, time.perf_counter() - started)

    def overlay_jpeg(self, photo: ParsedPhoto) -> bytes:
        return jpeg(self.recolor.process(photo.image, photo.labels), self.quality)

    def labels_png(self, photo: ParsedPhoto) -> bytes:
        buffer = io.BytesIO()
        label_image(photo.labels, self.palette).save(buffer, format="PNG")
        return buffer.getvalue()

    def summary(self, photo: ParsedPhoto, with_overlay: bool = False) -> dict[str, Any]:
        """Persons (box, score, part pixels), the whole photo's part pixels and the label set with colors."""
        counts = np.bincount(photo.labels.ravel(), minlength=len(self.label_set))
        names = self.label_set.names
        answer: dict[str, Any] = {
            "width": int(photo.image.shape[1]),
            "height": int(photo.image.shape[0]),
            "label_set": self.label_set.name,
            "labels": [{"id": i, "name": name, "color": _hex(self.label_set.colors[i])} for i, name in enumerate(names)],
            "parts": {names[i]: int(counts[i]) for i in np.nonzero(counts)[0] if i != 0},
            "persons": [{"box": [round(v, 1) for v in p.box], "score": round(p.score, 3), "parts": p.part_pixels}
                        for p in photo.result.persons],
            "parse_ms": round(photo.seconds * 1000, 1),
        }
        if with_overlay:
            answer["overlay_jpeg"] = base64.b64encode(self.overlay_jpeg(photo)).decode()
        return answer


def jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return data.tobytes()
