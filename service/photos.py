"""Photos: parsed in the server process by one `vidparse.Parser` loaded at start-up (photo requests never wait
behind the worker pool's video frames), answered as JSON, a label PNG or an overlay JPEG. Photos are read and
parsed one at a time in the parser's own thread, at most ``serve.photo_queue`` admitted at once (one more gets 429):
waiting photos hold no thread of the server's shared pool."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, TypeVar

import cv2
import numpy as np

from vidparse.api import Parser, Parsing, annotate
from vidparse.config import Config
from vidparse.errors import VidparseError
from vidparse.service.errors import ApiError
from vidparse.stages.writers import label_image, label_palette

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class ParsedPhoto:
    image: np.ndarray  # RGB, upright
    parsing: Parsing
    seconds: float


def _hex(rgb: np.ndarray) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in rgb)


class PhotoParser:
    """The parser in its own thread: requests take turns, ``queue`` of them at most admitted at once."""

    def __init__(self, config: Config, threads: int) -> None:
        self.config, self.threads = config, threads
        self.parser: Parser | None = None  # made and loaded by `open`: a damaged model file keeps the server up
        self.alpha = config.compose.alpha
        self.quality = config.serve.preview_quality
        self.queue = config.serve.photo_queue
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="vidparse-photo")
        self._admitted = 0  # photos waiting or being parsed; only the event loop's thread changes it
        self.ready = False
        self.error: VidparseError | None = None  # why the model could not be loaded: every photo request says it

    def open(self) -> None:
        try:
            self.parser = Parser(config=self.config, threads=self.threads)
            self.parser.open()
        except VidparseError as exc:
            log.error("the photo model cannot be loaded: %s (hint: %s)", exc.message, exc.hint)
            self.error = exc
            return
        self.ready = True

    def check_ready(self) -> None:
        """An `ApiError` 503 unless photos can be parsed: the model still loading, or why it cannot be."""
        if self.error is not None:
            raise ApiError(503, f"the photo model cannot be loaded: {self.error.message}", self.error.hint)
        if not self.ready:
            raise ApiError(503, "the photo model is still loading", "retry in a few seconds (GET /readyz)",
                           headers={"Retry-After": "2"})

    def close(self) -> None:
        self.ready = False
        self._thread.shutdown(wait=True, cancel_futures=True)
        if self.parser is not None:
            self.parser.close()

    def no_room(self) -> ApiError | None:
        """The 429 while ``queue`` photos wait or are parsed (the request guard asks before a photo's body is read);
        None while there is room. Only in the event loop's thread."""
        if self._admitted < self.queue:
            return None
        return ApiError(429, f"{self.queue} photo(s) already waiting or being parsed", "retry shortly",
                        headers={"Retry-After": "2"})

    async def run(self, work: Callable[[], T]) -> T:
        """``work`` (read, parse, encode one photo) in the parser's thread; 429 when the queue is full. A photo
        leaves the queue when its work ends, even when its client has gone."""
        if (full := self.no_room()) is not None:
            raise full
        loop = asyncio.get_running_loop()
        self._admitted += 1
        future = self._thread.submit(work)

        def left(_: object) -> None:
            with suppress(RuntimeError):  # the server's loop has closed: nobody counts any more
                loop.call_soon_threadsafe(self._leave)

        future.add_done_callback(left)
        return await asyncio.wrap_future(future)

    def _leave(self) -> None:
        self._admitted -= 1

    def parse(self, bgr: np.ndarray) -> ParsedPhoto:
        """Only in `run`'s work (the parser's thread)."""
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        started = time.perf_counter()
        assert self.parser is not None, "check_ready() first"
        parsing = self.parser.parse(rgb)
        return ParsedPhoto(rgb, parsing, time.perf_counter() - started)

    def overlay_jpeg(self, photo: ParsedPhoto) -> bytes:
        return jpeg(annotate(photo.image, photo.parsing, alpha=self.alpha)[:, :, ::-1], self.quality)

    def labels_png(self, photo: ParsedPhoto) -> bytes:
        buffer = io.BytesIO()
        label_image(photo.parsing.labels, label_palette(photo.parsing.label_set)).save(buffer, format="PNG")
        return buffer.getvalue()

    def summary(self, photo: ParsedPhoto, with_overlay: bool = False) -> dict[str, Any]:
        """Persons (box, score, part pixels), the whole photo's part pixels and the label set with colors."""
        parsing = photo.parsing
        counts = np.bincount(parsing.labels.ravel(), minlength=len(parsing.names))
        names = parsing.names
        answer: dict[str, Any] = {
            "width": int(photo.image.shape[1]),
            "height": int(photo.image.shape[0]),
            "label_set": parsing.label_set.name,
            "labels": [{"id": i, "name": name, "color": _hex(parsing.palette[i])} for i, name in enumerate(names)],
            "parts": {names[i]: int(counts[i]) for i in np.nonzero(counts)[0] if i != 0},
            "persons": [{"box": [round(v, 1) for v in p.box], "score": round(p.score, 3), "parts": p.part_pixels}
                        for p in parsing.persons],
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
