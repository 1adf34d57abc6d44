"""Video output: libx264 yuv420p with the source's timestamps, fast-start MP4, the source's audio copied."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np

from vidparse.errors import BadOutputError
from vidparse.stages.source import StreamInfo
from vidparse.stages.types import Frame

log = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass
class EncoderOptions:
    crf: int = field(metadata={"range": (0, 51)})
    preset: str = field(metadata={"choices": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")})


def check_output_path(path: Path) -> None:
    """Fail before any work if ``path`` cannot become a video file."""
    if path.suffix.lower() not in CONTAINERS:
        raise BadOutputError(f"output {path} has an unsupported extension",
                             hint=f"use one of: {', '.join(CONTAINERS)}")
    if path.is_dir():
        raise BadOutputError(f"output {path} is a directory", hint="give a file name, e.g. out.mp4")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BadOutputError(f"output directory {parent} does not exist", hint=f"create it first: mkdir -p {parent}")
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            with open(path, "xb"):  # probe, then leave nothing behind until there is something to write
                pass
            path.unlink()
    except OSError as exc:
        raise BadOutputError(f"output {path} is not writable: {exc.strerror}", hint="choose a writable location") from exc


class VideoSink:
    """Encodes annotated frames. Audio packets of ``audio_from`` are copied, interleaved by time."""

    def __init__(self, path: Path, info: StreamInfo, options: EncoderOptions, audio_from: str | None = None) -> None:
        self.path = path
        self.info = info
        self.options = options
        self.audio_from = audio_from
        self.frames_written = 0

    def open(self) -> None:
        fmt = CONTAINERS[self.path.suffix.lower()]
        container_options = {"movflags": "+faststart"} if fmt in ("mp4", "mov") else {}
        try:
            self._output = av.open(str(self.path), "w", format=fmt, options=container_options)
        except (av.error.FFmpegError, OSError) as exc:
            raise BadOutputError(f"cannot create {self.path}: {exc}", hint="choose a writable location") from exc
        stream = self._output.add_stream("libx264", rate=self.info.frame_rate)
        stream.width = self.info.width - self.info.width % 2
        stream.height = self.info.height - self.info.height % 2
        stream.pix_fmt = "yuv420p"
        stream.time_base = self.info.time_base
        stream.codec_context.time_base = self.info.time_base
        stream.options = {"crf": str(self.options.crf), "preset": self.options.preset}
        self._video = stream
        self._audio = _AudioCopy(self.audio_from, self._output) if self.audio_from else None

    def write(self, frame: Frame) -> None:
        image = frame.image[: self._video.height, : self._video.width]
        av_frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="bgr24")
        av_frame.pts = frame.pts
        av_frame.time_base = frame.time_base
        self._mux(self._video.encode(av_frame))
        if self._audio is not None and frame.seconds is not None:
            self._audio.copy_until(frame.seconds)
        self.frames_written += 1

    def _mux(self, packets: list[av.Packet]) -> None:
        try:
            self._output.mux(packets)
        except OSError as exc:
            raise BadOutputError(f"writing {self.path} failed: {exc.strerror or exc}",
                                 hint="check free disk space and that the output directory still exists") from exc

    def close(self) -> None:
        """Flush the encoder and finalize the file so it plays, whatever happened before."""
        if getattr(self, "_output", None) is None:
            return
        try:
            self._mux(self._video.encode(None))
            if self._audio is not None:
                self._audio.copy_until(float("inf"))
        finally:
            if self._audio is not None:
                self._audio.close()
            self._output.close()
            self._output = None


class _AudioCopy:
    """Remuxes the input's first audio stream without re-encoding."""

    def __init__(self, url: str, output: av.container.OutputContainer) -> None:
        self._input = av.open(url)
        self._stream = self._input.streams.audio[0]
        self._out_stream = output.add_stream_from_template(self._stream)
        self._output = output
        self._packets = self._input.demux(self._stream)
        self._pending: av.Packet | None = None

    def copy_until(self, seconds: float) -> None:
        while True:
            packet = self._pending or next(self._packets, None)
            self._pending = None
            if packet is None:
                return
            if packet.dts is None:  # the demuxer's empty flush packet
                continue
            if packet.pts is not None and float(packet.pts * packet.time_base) > seconds:
                self._pending = packet
                return
            packet.stream = self._out_stream
            self._output.mux(packet)

    def close(self) -> None:
        self._input.close()
