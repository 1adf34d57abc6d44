"""Side outputs: one palette PNG of class ids per frame, one JSON line of statistics per frame."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path
from typing import IO

import cv2
import numpy as np
from PIL import Image

from vidparse.errors import BadOutputError
from vidparse.names import frame_png_name
from vidparse.stages.types import FrameResult, LabelSet

log = logging.getLogger(__name__)


def write_failed(path: Path, error: OSError) -> BadOutputError:
    """One line for a side output that could not be written mid-run (disk full, directory removed)."""
    return BadOutputError(f"writing {path} failed: {error.strerror or error}",
                          hint="check free disk space and that the output directory still exists")


def make_directory(path: Path, what: str) -> None:
    """Create the folder ``path`` (and its parents) for an output, or fail with one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadOutputError(f"cannot create {what} {path}: {exc.strerror}", hint="choose a writable location") from exc


def label_palette(label_set: LabelSet) -> list[int]:
    """The class colors as a PIL palette (RGB, 256 entries)."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(label_set)] = label_set.colors[:, ::-1]
    return palette.ravel().tolist()


def label_image(labels: np.ndarray, palette: list[int]) -> Image.Image:
    """A label map as an 8-bit palette image: pixel values are class ids, shown in their class colors."""
    image = Image.fromarray(labels, mode="P")
    image.putpalette(palette)
    return image


class MaskWriter:
    """Writes ``DIR/000123.png``: 8-bit palette PNGs whose pixel values are class ids (lossless)."""

    def __init__(self, directory: Path, label_set: LabelSet) -> None:
        self.directory = directory
        self._palette = label_palette(label_set)

    def open(self) -> None:
        make_directory(self.directory, "mask directory")

    def write(self, seq: int, labels: np.ndarray, name: str | None = None) -> None:
        """Write ``DIR/<name>.png``; the name defaults to the frame number, ``000123``."""
        path = self.directory / (f"{name}.png" if name else frame_png_name(seq))
        image = label_image(labels, self._palette)
        try:
            image.save(path, optimize=False, compress_level=1)
        except OSError as exc:
            path.unlink(missing_ok=True)  # a half-written PNG (a full disk) is not left under a frame's name
            raise write_failed(path, exc) from exc

    def close(self) -> None:
        pass


class InstanceWriter:
    """Writes ``DIR/000123.png``: 16-bit grayscale PNGs whose pixel values are track ids (0: no person)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open(self) -> None:
        make_directory(self.directory, "instance directory")

    def write(self, seq: int, instances: np.ndarray) -> None:
        path = self.directory / frame_png_name(seq)
        try:
            saved = cv2.imwrite(str(path), instances, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        except cv2.error as exc:
            path.unlink(missing_ok=True)
            raise write_failed(path, OSError(str(exc))) from exc
        if not saved:  # OpenCV says no more: a folder removed during the run is the likely reason
            path.unlink(missing_ok=True)
            raise write_failed(path, OSError("the PNG encoder refused it") if self.directory.is_dir()
                               else OSError(errno.ENOENT, os.strerror(errno.ENOENT)))

    def close(self) -> None:
        pass


class StatsWriter:
    """Writes one JSON object per frame: the stream's name, seq, pts, seconds, persons (box, score, part pixels),
    timings."""

    def __init__(self, path: Path, stream: str | None = None) -> None:
        self.path = path
        self.stream = stream
        self._file: IO[str] | None = None

    def open(self) -> None:
        make_directory(self.path.parent, "stats folder")  # as --masks makes its folder
        try:
            self._file = self.path.open("w")
        except OSError as exc:
            raise BadOutputError(f"cannot write stats file {self.path}: {exc.strerror}",
                                 hint="choose a writable location") from exc

    def write(self, result: FrameResult, pts: int | None, seconds: float | None, extra: dict | None = None) -> None:
        assert self._file is not None, "open() first"
        record = {
            "stream": self.stream,
            "seq": result.seq,
            "status": result.status,
            "carried_from": result.carried_from,
            "cut": result.cut,
            "pts": pts,
            "time_s": None if seconds is None else round(seconds, 6),
            "persons": [
                {"box": [round(v, 1) for v in p.box], "score": round(p.score, 4), "parts": p.part_pixels,
                 "track_id": p.track_id, "bridged": p.bridged}
                for p in result.persons
            ],
            "timings_ms": {k: round(v * 1000, 3) for k, v in result.timings.items()},
            **(extra or {}),
        }
        try:
            self._file.write(json.dumps(record) + "\n")
        except OSError as exc:
            self._end_at_a_whole_line()
            raise write_failed(self.path, exc) from exc

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError as exc:
                self._end_at_a_whole_line()
                raise write_failed(self.path, exc) from exc
            finally:
                self._file = None
            if not self.path.exists():  # removed (its folder with it): the lines went to a file no one can open
                raise write_failed(self.path, OSError(errno.ENOENT, "it was removed during the run"))

    def _end_at_a_whole_line(self) -> None:
        """After a failed write (a full disk), cut the file back to its last whole line, so every line still parses."""
        try:
            if self._file is not None:
                self._file.close()  # what the buffer held is lost either way
        except OSError:
            pass
        self._file = None
        if not self.path.is_file():  # a device or a pipe keeps no lines to cut (and /dev/full reads as endless zeros)
            return
        try:
            with self.path.open("rb+") as file:
                end = file.seek(0, 2)
                start = max(0, end - (1 << 16))
                file.seek(start)
                tail = file.read()
                cut = tail.rfind(b"\n")
                if cut >= 0:
                    file.truncate(start + cut + 1)
                elif start == 0:  # not one whole line
                    file.truncate(0)
        except OSError as exc:
            log.warning("could not cut %s back to whole lines: %s", self.path, exc)
