"""Video input: PyAV demux and threaded decode of anything FFmpeg reads."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from vidparse.errors import BadInputError
from vidparse.stages.types import Frame

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamInfo:
    width: int
    height: int
    time_base: Fraction
    frame_rate: Fraction
    frames: int  # 0 when the container does not say
    duration_s: float | None
    codec: str
    has_audio: bool

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


def open_container(url: str, options: dict[str, str] | None = None) -> av.container.InputContainer:
    """Open an input for reading, turning FFmpeg's failures into one clear ``BadInputError``."""
    if "://" not in url:
        path = Path(url)
        if not path.exists():
            raise BadInputError(f"input {url} does not exist", hint="check the path")
        if path.is_dir():
            raise BadInputError(f"input {url} is a directory", hint="give a video file")
        if path.stat().st_size == 0:
            raise BadInputError(f"input {url} is empty (0 bytes)", hint="the file was not written completely")
    try:
        return av.open(url, options=options or {})
    except PermissionError as exc:
        raise BadInputError(f"input {url} is not readable: permission denied", hint="check the file's permissions") from exc
    except (av.error.FFmpegError, OSError) as exc:
        raise BadInputError(f"input {url} is not a readable video ({exc.strerror or exc})",
                            hint="give a video file FFmpeg can read (mp4, avi, mkv, ...)") from exc


class VideoSource:
    """Decodes the first video stream of ``url`` into BGR frames with the stream's own timestamps."""

    def __init__(self, url: str, max_frames: int | None = None) -> None:
        self.url = url
        self.max_frames = max_frames
        self.skipped_packets = 0
        self._container: av.container.InputContainer | None = None
        self.info: StreamInfo | None = None

    def open(self) -> StreamInfo:
        container = open_container(self.url)
        if not container.streams.video:
            container.close()
            raise BadInputError(f"input {self.url} has no video stream", hint="give a file with a video track")
        stream = container.streams.video[0]
        if stream.codec_context.width <= 0 or stream.codec_context.height <= 0:
            container.close()
            raise BadInputError(f"input {self.url} has a video stream without a frame size",
                                hint="the file may be truncated or damaged")
        if container.format.name == "image2" or container.format.name.endswith("_pipe"):
            container.close()
            raise BadInputError(f"input {self.url} is a still image, not a video", hint="give a video file")
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        self._container = container
        self.info = StreamInfo(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            time_base=stream.time_base or Fraction(1, 1000),
            frame_rate=Fraction(rate),
            frames=stream.frames or 0,
            duration_s=float(stream.duration * stream.time_base) if stream.duration and stream.time_base else
            (container.duration / av.time_base if container.duration else None),
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
        )
        return self.info

    def frames(self) -> Iterator[Frame]:
        assert self._container is not None and self.info is not None, "open() first"
        stream = self._container.streams.video[0]
        frame_step = 1 / (self.info.frame_rate * self.info.time_base)
        seq = 0
        for packet in self._container.demux(stream):
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError as exc:
                self.skipped_packets += 1
                log.warning("skipped an undecodable packet at pts %s: %s", packet.pts, exc)
                continue
            for av_frame in decoded:
                pts = av_frame.pts if av_frame.pts is not None else round(seq * frame_step)
                image = np.ascontiguousarray(av_frame.to_ndarray(format="bgr24"))
                yield Frame(seq=seq, pts=pts, time_base=self.info.time_base, image=image)
                seq += 1
                if self.max_frames is not None and seq >= self.max_frames:
                    return

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None


def probe(url: str) -> StreamInfo:
    """Open an input only to describe it (and to fail early with a clear error if it is not a video)."""
    source = VideoSource(url)
    try:
        return source.open()
    finally:
        source.close()
