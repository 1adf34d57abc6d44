"""Video input: PyAV demux and threaded decode of files, RTSP/HTTP streams and cameras.

Files are read once, losslessly. Live inputs (streams, cameras) reconnect by themselves: end of stream, a read
that times out or an error counts as a disconnect, followed by reconnect attempts with exponential backoff and
jitter. Live frames carry one monotonic timeline across reconnects and their wall-clock capture time.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import random
import re
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from enum import Enum
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import av
import av.sidedata.sidedata
import numpy as np

from vidparse.errors import BadInputError, StreamLostError
from vidparse.stages.orientation import Turn, turn_for_display_matrix
from vidparse.stages.timestamps import BestEffortTimestamps
from vidparse.stages.types import Frame
from vidparse.stages.options import LiveOptions

log = logging.getLogger(__name__)

# After a stall FFmpeg's H.264 parser still hands out the last whole frame it holds when the first timed-out
# read gives up, so a stall surfaces only when a second read times out: each read gets half the budget.
READS_PER_STALL = 2
# A jump in a live stream's own timestamps beyond this (or backwards) re-bases the output timeline.
MAX_TIMESTAMP_GAP_S = 10.0
# A live stream's timestamp this many frames behind the last one is a frame the decoder gave out of order (B-frames
# whose reordering FFmpeg learns as it goes), not a new clock: it keeps the stream's clock.
REORDERED_FRAMES = 4
# PyAV gives connecting and reading the stream headers an open timeout each; a connection attempt ends when the
# first frame is decoded, within those two. A camera's SDP often lacks the H.264 parameter sets: FFmpeg's probing
# may then end without a frame size, which the decoder learns from the first keyframe.
OPEN_TIMEOUTS_PER_ATTEMPT = 2


MIN_SIDE = 2  # the smallest frame side: the encoder's 4:2:0 chroma takes pixels in pairs


class InputKind(Enum):
    FILE = "file"
    RTSP = "rtsp"
    HTTP = "http"  # HLS or any stream over HTTP(S); a file (a known duration or length) is read like a file
    CAMERA = "camera"  # /dev/videoN through FFmpeg's v4l2
    STREAM = "stream"  # any other protocol URL (udp://, srt://, rtmp://, ...)

    @property
    def always_live(self) -> bool:
        """A camera or stream whatever the URL names (a file over HTTP is not: only opening it tells)."""
        return self in (InputKind.RTSP, InputKind.CAMERA, InputKind.STREAM)


def input_kind(url: str) -> InputKind:
    """What ``url`` names, judged from the string alone."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("rtsp", "rtsps"):
        return InputKind.RTSP
    if scheme in ("http", "https"):
        return InputKind.HTTP
    if re.fullmatch(r"/dev/video\d+", url):
        return InputKind.CAMERA
    return InputKind.FILE if scheme in ("", "file") else InputKind.STREAM


def malformed_url(url: str) -> str | None:
    """Why ``url`` (an address with a scheme) is no address FFmpeg could reach, judged from the string alone: a
    space, brackets that do not close, a port that is no number, no host where the scheme needs one. None: well
    formed."""
    if any(c.isspace() for c in url):
        return "it holds a space (percent-encode it as %20)"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsing the port is the check)
    except ValueError as exc:
        return str(exc)
    if input_kind(url) in (InputKind.RTSP, InputKind.HTTP) and not parts.hostname:
        return "it names no host"
    return None


CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]*@")
QUERY_PARAMETER = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")
# A query parameter whose name holds one of these words carries a secret: `?token=`, `access_token`, `api-key`,
# `password`, a signed URL's `X-Amz-Signature` and `X-Amz-Credential`, a camera's `?user=admin&pwd=`.
SECRET_WORDS = frozenset({"token", "key", "apikey", "secret", "password", "passwd", "pwd", "pass", "auth",
                          "authorization", "signature", "sig", "credential", "credentials", "session", "sessionid",
                          "jwt"})
HIDDEN = "***"


def _hide_secret_value(parameter: re.Match[str]) -> str:
    separator, name, value = parameter.groups()
    if value and SECRET_WORDS.intersection(re.split(r"[^a-z0-9]+", name.lower())):
        return f"{separator}{name}={HIDDEN}"
    return parameter.group(0)


def without_credentials(text: str) -> str:
    """``text`` with the ``user:password@`` of every URL in it taken out and the values of its secret query
    parameters (`SECRET_WORDS`) hidden (log lines, errors, listings, output names)."""
    return QUERY_PARAMETER.sub(_hide_secret_value, CREDENTIALS.sub(r"\1", text))


class FrameTooLargeError(BadInputError):
    """An input whose frames have more pixels than its `InputLimits` allow."""


class NotSeekableError(BadInputError):
    """An MP4 over HTTP(S) none of whose frames FFmpeg reached while it probed it: most likely its index (the moov
    atom) comes after them and the server answers no Range request, which every attempt would meet alike (it is never
    retried); a connection cut while probing looks the same."""


@dataclass(frozen=True)
class InputLimits:
    """What an input from an untrusted caller may be (`vidparse serve`): FFmpeg's demuxers and protocols allowed
    (None: any), enforced by FFmpeg while it opens the input and checked again after; the largest frame (width x
    height, None: any); whether HTTP redirects are followed."""

    formats: tuple[str, ...] | None = None
    protocols: tuple[str, ...] | None = None
    max_pixels: int | None = None
    follow_redirects: bool = True

    def ffmpeg_options(self, kind: InputKind) -> dict[str, str]:
        options = {}
        if self.formats is not None:
            options["format_whitelist"] = ",".join(self.formats)
        if self.protocols is not None:
            options["protocol_whitelist"] = ",".join(self.protocols)
        if kind is InputKind.HTTP and not self.follow_redirects:
            options["max_redirects"] = "0"
        return options

    def check(self, shown_url: str, container: av.container.InputContainer, width: int, height: int) -> None:
        """Raise `BadInputError` for a demuxer or a frame size past the limits."""
        if self.formats is not None and not set(container.format.name.split(",")) & set(self.formats):
            raise BadInputError(f"input {shown_url} is in a format that is not allowed ({container.format.name})",
                                hint="allowed: " + ", ".join(self.formats))
        if self.max_pixels is not None and width * height > self.max_pixels:
            raise FrameTooLargeError(f"input {shown_url} has {width}x{height} frames, more than {self.max_pixels} "
                                     "pixels", hint="send a smaller video")


class StopSignal(Protocol):
    """What interrupts a reconnect wait: a ``threading.Event`` or a multiprocessing one."""

    def wait(self, timeout: float | None = None) -> bool: ...


def backoff_delay(attempt: int, initial_s: float, max_s: float) -> float:
    """Seconds to wait before reconnect ``attempt`` (1, 2, ...): doubling, capped, then jittered to 50-100 %
    so that many clients of one camera do not reconnect in lockstep."""
    ceiling = min(max_s, initial_s * 2 ** (attempt - 1))
    return ceiling * random.uniform(0.5, 1.0)


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
    live: bool = False  # a stream or camera: frames arrive in real time, reconnects happen, nothing can wait
    # the header gives no frame rate: frame_rate is FFmpeg's guess (a Matroska file of a few frames muxed without
    # one: 1000, its time base's)
    frame_rate_guessed: bool = False
    # the width of a pixel as shown over its height, upright, when not 1: an anamorphic picture (DV, DVD, broadcast
    # 720x576 shown 1024x576), which players stretch
    sample_aspect_ratio: Fraction | None = None

    @property
    def frame_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)


def short_of(seconds: float | None, end_s: float, slack_s: float = 1.0) -> bool:
    """Whether a video that got to ``seconds`` (None: nowhere) stopped short of ``end_s``, where another stream may
    set the end: more than 2% and ``slack_s`` before it (by default a second: a file's streams seldom end
    together)."""
    return seconds is None or seconds < end_s * 0.98 - slack_s


# Frames a whole file may fall short of its header by: the last frame starts one frame before the end, and one more
# for rounding. Measured on whole files (docs/faults.md): x264 MP4 (with audio, 29.97 fps, variable rate, 10 min),
# MJPEG and MPEG-4 AVI (null frames too), FFV1 and x264 MKV, VP8 WebM, ProRes MOV: every one ends 0 or 1 frame short.
FRAMES_SHORT = 2
MAX_FRAME_RATE = 1000  # an average rate above it, beside a codec rate under it, is not the frames' (raw DV)


def frame_seconds(info: StreamInfo, decoded: int, first_pts: int | None, last_pts: int | None) -> float | None:
    """How long a frame of a file lasts: by its header's frame rate, else by the spacing of the ``decoded`` frames
    (the first at ``first_pts``, the last at ``last_pts``); None from a lone frame of a header without a rate."""
    if not info.frame_rate_guessed:
        return float(1 / info.frame_rate)
    if decoded < 2 or first_pts is None or last_pts is None:
        return None
    return float((last_pts - first_pts) * info.time_base) / (decoded - 1)


def ended_early(info: StreamInfo, decoded: int, last_pts: int | None, discarded: int = 0,
                first_pts: int | None = None) -> str | None:
    """How a file that has ended after ``decoded`` frames (the first at ``first_pts``, the last at ``last_pts``)
    falls short of what its header announces: a frame count when it gives one, else a duration; None when it does
    not fall short. A shortfall counts past `FRAMES_SHORT` frames, in both frames and time: a header may count frames
    that never decode (an AVI's null frames for the ones a capture dropped) while the frames that do decode still
    reach its end. A frame lasts what `frame_seconds` says: a lone frame of a header without a frame rate is not
    checked against a duration. ``discarded``: the packets the header counts and its edit list hides (a file trimmed
    without re-encoding). A duration is the longest stream's: with audio beside the video it allows a second and 2%
    (`short_of`). Time counts from 0 (a Matroska file's duration is where its end is, counted from 0, wherever its
    first frame is), or from a first frame before 0 (a transport stream whose timestamps wrapped past 2^33)."""
    start = min(0, first_pts or 0)
    seconds = None if last_pts is None else float((last_pts - start) * info.time_base)
    frame_s = frame_seconds(info, decoded, first_pts, last_pts)
    if info.frames:
        frames = info.frames - discarded
        if frames - decoded > FRAMES_SHORT and (seconds is None or frame_s is None
                                                or seconds < (frames - FRAMES_SHORT) * frame_s):
            return f"after {decoded} of the {frames} frames its header announces"
    elif info.duration_s and seconds is not None and (
            short_of(seconds, info.duration_s) if info.has_audio
            else frame_s is not None and seconds < info.duration_s - FRAMES_SHORT * frame_s):
        return f"at {seconds:.1f} s of the {info.duration_s:.1f} s its header announces"
    return None


def warn_if_ended_early(url: str, info: StreamInfo, decoded: int, last_pts: int | None, discarded: int,
                        first_pts: int | None) -> None:
    """Warn of a file that falls short of its header, as `ended_early` judges it: `vidparse run`'s source, and
    `vidparse batch` once every segment of the file is parsed."""
    if shortfall := ended_early(info, decoded, last_pts, discarded, first_pts):
        log.warning("input %s ended %s: the file may be truncated or damaged", without_credentials(url), shortfall)


def _finite(container: av.container.InputContainer) -> bool:
    """Whether an input over HTTP is a file rather than a stream: its container gives a duration, or the server its
    length (a transport stream file has no duration; an HLS playlist's length is the playlist's, not the video's)."""
    return bool(container.duration) or ((container.size or 0) > 0 and container.format.name != "hls")


PHOTOS_ARE_FOR_RUN = ("vidparse run takes photos by their extension (.jpg, .png or the like), folders and patterns of "
                      "them; tune, bench and eval-video take one video, batch videos and patterns of videos")


def open_container(url: str, options: dict[str, str] | None = None) -> av.container.InputContainer:
    """Open an input for reading, turning FFmpeg's failures into one clear ``BadInputError`` (``options``: FFmpeg's
    format options)."""
    if not url.strip():  # Path("") is the current folder
        raise BadInputError("the input is an empty name", hint="give a video file or a URL")
    if "://" not in url:
        from vidparse.stages.images import is_sequence  # images reads StreamInfo from here

        path = Path(url)
        if is_sequence(url):
            raise BadInputError(f"input {url} is a pattern of files, not one video", hint=PHOTOS_ARE_FOR_RUN)
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


def frames_out_of_reach(container: av.container.InputContainer) -> bool:
    """Whether an opened MP4 reached none of its frames while FFmpeg probed it (no pixel format found): it read the
    index at the end and could not seek back to the frames before it."""
    stream = main_video_stream(container)
    return ("mp4" in container.format.name.split(",") and stream is not None
            and stream.codec_context.pix_fmt is None)


def open_live(url: str, kind: InputKind, options: LiveOptions,
              limits: InputLimits | None = None) -> av.container.InputContainer:
    """One connection attempt to a stream or camera; FFmpeg's exceptions pass through for the caller to judge."""
    read_s = options.read_timeout_s / READS_PER_STALL
    # PyAV's interrupt enforces both budgets; FFmpeg's per-operation socket timeout is only a backstop should the
    # interrupt not be polled, kept above them so that the budgets decide.
    socket_timeout_us = str(int(2 * max(options.open_timeout_s, options.read_timeout_s) * 1e6))
    ffmpeg_options = {
        InputKind.RTSP: {"rtsp_transport": options.rtsp_transport, "timeout": socket_timeout_us},
        InputKind.HTTP: {"rw_timeout": socket_timeout_us},
        InputKind.STREAM: {"rw_timeout": socket_timeout_us},
    }.get(kind, {}) | (limits or InputLimits()).ffmpeg_options(kind)
    return av.open(url, format="v4l2" if kind is InputKind.CAMERA else None, options=ffmpeg_options,
                   timeout=(options.open_timeout_s, read_s))


class NotReadyError(Exception):
    """A live input answered but shows no picture yet (a camera that is starting, a keyframe still to come)."""


class NoFrameSizeError(NotReadyError):
    """Connected, but the stream did not tell its frame size within the attempt (no keyframe with the SPS yet)."""


class NoKeyframeError(NotReadyError):
    """Connected and the frame size is known, but no frame could be decoded within the attempt."""


PERMANENT, TRANSIENT = True, False
# How a failed connection attempt is sorted: the first row that matches wins; anything else is transient.
# Permanent failures end the first connection at once; every other failure, and any failure after a drop, is
# retried with backoff and counts against ``reconnect_attempts``. docs/live.md shows the same table.
CONNECT_FAILURES: tuple[tuple[type[BaseException], bool], ...] = (
    (av.error.ProtocolNotFoundError, PERMANENT),  # wrong scheme (FFmpeg knows no such protocol)
    (av.error.DemuxerNotFoundError, PERMANENT),  # FFmpeg built without the input's format (v4l2)
    (av.error.HTTPClientError, PERMANENT),  # 401, 403, 404 and any other 4xx answer: credentials, path
    (BadInputError, PERMANENT),  # no video stream
    (FileNotFoundError, PERMANENT),  # no such camera device
    (PermissionError, PERMANENT),  # camera device not readable
    (ConnectionRefusedError, TRANSIENT),  # nothing listens (yet)
    (TimeoutError, TRANSIENT),  # no answer within the open timeout
    (NoFrameSizeError, TRANSIENT),  # no frame size yet
    (NoKeyframeError, TRANSIENT),  # no keyframe yet
    (ConnectionResetError, TRANSIENT),  # the connection was reset
    (av.error.InvalidDataError, TRANSIENT),  # the server went away mid-handshake: FFmpeg reads a cut-off reply
)


def is_permanent(error: BaseException) -> bool:
    """Whether retrying a failed connection attempt cannot help, by ``CONNECT_FAILURES``."""
    return next((permanent for kind, permanent in CONNECT_FAILURES if isinstance(error, kind)), TRANSIENT)


def _reason(error: BaseException) -> str:
    return (getattr(error, "strerror", None) or str(error) or type(error).__name__).strip()


# Codecs of single pictures: a track of one of them is most likely a still (a cover not flagged as one, a poster).
# (Not MJPEG: the codec of many cameras' AVI and MOV files, whose tracks carry no default flag.)
IMAGE_CODECS = frozenset({"png", "bmp", "tiff", "webp", "jpeg2000", "jpegls", "qoi"})


def is_still(stream: av.video.stream.VideoStream) -> bool:
    """Whether a video stream is one picture: one frame by its container's count, or pictures of an image codec on
    a track that is not flagged default (an MKV keeps no attached-picture flag and counts no frames)."""
    default = av.stream.Disposition.default in stream.disposition
    return stream.frames == 1 or (stream.codec_context.name in IMAGE_CODECS and not default)


def main_video_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream to parse: a moving one before a still, then of several the one with the most pixels (not a
    preview track), the default one of two as large; never a music file's cover art (an attached picture); None when
    there is none."""
    videos = [s for s in container.streams.video if av.stream.Disposition.attached_pic not in s.disposition]
    return max(videos, key=lambda s: (not is_still(s), s.codec_context.width * s.codec_context.height,
                                      av.stream.Disposition.default in s.disposition), default=None)


def _video_stream(url: str, container: av.container.InputContainer,
                  sized: bool = True) -> av.video.stream.VideoStream:
    """The main video stream, checked for being a usable video (with a frame size, unless not ``sized``);
    closes ``container`` when it is not."""
    problem = None
    stream = main_video_stream(container)
    if stream is None:
        problem = (f"input {url} has no video stream", "give a file or stream with a video track")
    elif sized and (stream.codec_context.width <= 0 or stream.codec_context.height <= 0):
        problem = (f"input {url} has a video stream without a frame size", "the file may be truncated or damaged")
    elif container.format.name == "image2" or container.format.name.endswith("_pipe"):
        hint = ("download it first: vidparse run takes photos from files, by their extension (.jpg, .png or the like)"
                if "://" in url else PHOTOS_ARE_FOR_RUN)
        problem = (f"input {url} is a still image, not a video", hint)
    if problem:
        container.close()
        raise BadInputError(*problem)
    assert stream is not None
    return stream


def in_presentation_order(frames: Iterable[av.VideoFrame], most: int = REORDERED_FRAMES) -> Iterator[av.VideoFrame]:
    """A live stream's decoded frames put back in timestamp order. FFmpeg gives some frames of a camera sending
    B-frames out of order when the stream does not say how far it reorders; this holds no frame until one comes out
    of order, then one more frame for each that does (at most ``most``): such a stream gains that many frames of
    latency, any other none. Frames without a timestamp pass at once."""
    held: list[tuple[int, int, av.VideoFrame]] = []  # (pts, arrival, frame): a heap
    depth, last = 0, None
    for arrival, frame in enumerate(frames):
        if frame.pts is None:
            yield frame
            continue
        if last is not None and frame.pts < last:
            depth = min(most, depth + 1)
        heapq.heappush(held, (frame.pts, arrival, frame))
        while len(held) > depth:
            pts, _, out = heapq.heappop(held)
            last = pts if last is None else max(last, pts)
            yield out
    while held:
        yield heapq.heappop(held)[2]


class LiveTimeline:
    """Output timestamps for a live input, strictly increasing across reconnects.

    Within a connection the stream's own timestamps (smooth, as the camera stamped them) are kept; each new
    connection, and any jump in them, is re-based on the wall clock, so an outage shows as a gap of its length.
    """

    def __init__(self, time_base: Fraction, frame_rate: Fraction) -> None:
        self.time_base = time_base
        self._step = max(1, round(1 / (frame_rate * time_base)))
        self._max_gap = round(MAX_TIMESTAMP_GAP_S / time_base)
        self._started: float | None = None
        self._offset: int | None = None  # output minus stream timestamp on the current connection
        self._last: int | None = None

    def rebase(self) -> None:
        self._offset = None

    def stamp(self, pts: int | None, stream_time_base: Fraction, now: float) -> int:
        if self._started is None:
            self._started = now
        wall = round((now - self._started) / self.time_base)
        rebased = wall if self._last is None else max(wall, self._last + self._step)
        # The offset is only ever set together with a stamp: with an offset, there is a last stamp.
        if pts is None:
            stamped = rebased if self._offset is None or self._last is None else self._last + self._step
        else:
            source = round(pts * stream_time_base / self.time_base)
            if self._offset is None or self._last is None:
                stamped = rebased
                self._offset = stamped - source
            else:
                stamped = source + self._offset
                if self._last - REORDERED_FRAMES * self._step <= stamped <= self._last:
                    stamped = self._last + 1  # out of order: just after the last, the offset kept
                elif not self._last < stamped <= self._last + self._max_gap:
                    stamped = rebased
                    self._offset = stamped - source
        self._last = stamped
        return stamped


@dataclass(frozen=True)
class FrameWindow:
    """A part of a file, by frame index in presentation order (`vidparse batch`'s segments): decoding starts at the
    keyframe with timestamp ``seek_pts`` (frame ``seek_index``); frames before ``first_index`` are decoded and
    dropped, frames from ``end_index`` on are never read. Frames keep their index as ``seq`` minus ``first_index``."""

    seek_pts: int
    seek_index: int
    first_index: int
    end_index: int

    @property
    def seeks(self) -> bool:
        """Whether decoding starts at a seek (not at the file's start)."""
        return self.seek_index > 0


@dataclass(frozen=True)
class Packets:
    """A file's video packets in presentation order: ``pts`` of every frame, the indices of its keyframes; not the
    ``hidden`` packets its edit list hides (a file trimmed without re-encoding), which decode to no frame."""

    pts: list[int]
    keyframes: list[int]
    time_base: Fraction
    hidden: int = 0

    def seconds(self, index: int) -> float:
        return float((self.pts[index] - self.pts[0]) * self.time_base)


def read_packets(url: str) -> Packets | None:
    """The video packets' timestamps and keyframe flags; None when some packet has no timestamp (such a file is
    not cut: it runs as one segment)."""
    with open_container(url) as container:
        stream = main_video_stream(container)
        if stream is None:
            raise BadInputError(f"input {url} has no video stream", hint="give a file with a video track")
        packets, hidden = [], 0
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's empty flush packet
                    continue
                if packet.pts is None:
                    return None
                if packet.is_discard:
                    hidden += 1
                    continue
                packets.append((packet.pts, packet.is_keyframe))
        except av.error.FFmpegError as exc:
            log.warning("reading the packets of %s stopped early (%s); it runs as one segment", url, exc)
            return None
        time_base = stream.time_base or Fraction(1, 1000)
    packets.sort()
    return Packets([pts for pts, _ in packets], [i for i, (_, key) in enumerate(packets) if key], time_base, hidden)


def resume_window(url: str, window: FrameWindow | None, skip: int) -> FrameWindow:
    """``window`` (None: the whole file) less its first ``skip`` frames, for a source that picks up where another
    stopped: decoding starts at the last keyframe at or before the first frame wanted, found from the packets
    (no decoding); a file whose packets lack timestamps is decoded from its window's start and the frames before
    dropped."""
    start = window.first_index if window else 0
    first = start + skip
    end = window.end_index if window else 2**62
    packets = read_packets(url)
    keyframes = [k for k in packets.keyframes if k <= first] if packets else []
    if packets is None or not keyframes or (window is not None and keyframes[-1] < window.seek_index):
        seek_pts, seek_index = (window.seek_pts, window.seek_index) if window else (0, 0)
    else:
        seek_pts, seek_index = packets.pts[keyframes[-1]], keyframes[-1]
    return FrameWindow(seek_pts=seek_pts, seek_index=seek_index, first_index=first, end_index=end)


class VideoSource:
    """Decodes the first video stream of ``url`` into BGR frames with the stream's own timestamps (for files:
    FFmpeg's best-effort ones, frames turned upright as the display matrix says).

    ``live`` configures streams and cameras (ignored for files); once ``stop`` is set, a reconnect wait is
    cut short and the frame iterator ends there (or ``open()`` fails). A file is read within ``window`` only.
    ``limits`` bound what the input may be. Messages and log lines show the URL without its credentials. Without
    ``reports``, what opening finds (undecodable packets, a turn upright) is logged for debugging only (a probe: the
    run's source says it).
    """

    def __init__(self, url: str, max_frames: int | None = None, live: LiveOptions | None = None,
                 stop: StopSignal | None = None, window: FrameWindow | None = None,
                 on_attempt: Callable[[int, str], None] | None = None, resume_at: int = 0,
                 limits: InputLimits | None = None, reports: bool = True) -> None:
        self.url = url
        self.reports = reports
        self.shown_url = without_credentials(url)
        self.limits = limits or InputLimits()
        self.resume_at = resume_at  # a file: start at this frame (of ``window``), found by seeking, not decoding
        self.on_attempt = on_attempt  # told of each failed connection (failures in a row, why) before the wait
        self.window = window
        self.kind = input_kind(url)
        self.max_frames = max_frames
        self.live_options = live or LiveOptions()
        self.stop = stop
        self.skipped_packets = 0
        self.discarded_packets = 0  # a file's packets its edit list hides (trimmed without re-encoding)
        self.reconnects = 0
        self._failures = 0  # failed connections in a row; a decoded frame resets it
        self._container: av.container.InputContainer | None = None
        # Frames decoded and not yet handed out: the first one decoded while connecting and any that came with it
        # (a short file's decoder gives them all at the demuxer's end); ``_demuxed_all``: that end was read.
        self._held: deque[av.VideoFrame] = deque()
        self._demuxed_all = False
        self._file_decoded: Iterator[av.VideoFrame] | None = None
        self.turn = Turn.NONE  # what turns a file's frames upright (its display matrix)
        self.info: StreamInfo | None = None

    def open(self) -> StreamInfo:
        if self.kind is InputKind.FILE:
            if self.resume_at:
                self.window = resume_window(self.url, self.window, self.resume_at)
            container = open_container(self.url, self.limits.ffmpeg_options(self.kind))
            stream = _video_stream(self.shown_url, container)
        else:
            if self.kind is not InputKind.CAMERA and (malformed := malformed_url(self.url)):
                raise BadInputError(f"input {self.shown_url} is not a well-formed URL: {malformed}",
                                    hint="check the URL (scheme://host[:port]/path; IPv6 hosts in [brackets])")
            connected = self._connect(None)
            if connected is None:
                raise BadInputError(f"input {self.shown_url}: stopped before it could be opened")
            container = connected
            stream = _video_stream(self.shown_url, container)
        live = self._is_live(container)
        rate = stream.average_rate
        if rate and rate > MAX_FRAME_RATE and stream.guessed_rate and stream.guessed_rate <= MAX_FRAME_RATE:
            # not a frame rate: FFmpeg 8 gives a raw DV file's as its time base's, 60000 fps (x264 took level 6.2,
            # the last frame lasted 1/60000 s and the whole file was said to be truncated); its codec's rate holds
            rate = stream.guessed_rate
        rate = rate or stream.guessed_rate or Fraction(25)
        self._container = container
        width, height = stream.codec_context.width, stream.codec_context.height
        try:
            self.limits.check(self.shown_url, container, width, height)
            if 0 < min(width, height) < MIN_SIDE:  # 0: not known before the first frame (some live streams)
                raise BadInputError(f"input {self.shown_url} has {width}x{height} frames, too small to parse or encode",
                                    hint=f"H.264 in 4:2:0 needs at least {MIN_SIDE}x{MIN_SIDE}; scale it up first")
            if self.window is not None and self.window.seeks and not live:
                container.seek(self.window.seek_pts, stream=stream, backward=True)
            if not live:
                self.turn = self._peek_turn()
        except BadInputError:
            self._close_container()
            raise
        aspect = stream.sample_aspect_ratio  # the container's when it says, else the codec's (FFmpeg's guess)
        if self.turn.swaps_axes:
            width, height = height, width
            aspect = 1 / aspect if aspect else aspect
        self.info = StreamInfo(
            width=width,
            height=height,
            time_base=stream.time_base or Fraction(1, 1000),
            frame_rate=Fraction(rate),
            frames=stream.frames or 0,
            duration_s=float(stream.duration * stream.time_base) if stream.duration and stream.time_base else
            (container.duration / av.time_base if container.duration else None),
            codec=stream.codec_context.name,
            has_audio=bool(container.streams.audio),
            live=live,
            frame_rate_guessed=not stream.average_rate,
            sample_aspect_ratio=Fraction(aspect) if aspect and aspect != 1 else None,
        )
        return self.info

    def _is_live(self, container: av.container.InputContainer) -> bool:
        """Whether ``container`` is live (a file over HTTP has a duration and is not)."""
        return self.kind is not InputKind.FILE and not (self.kind is InputKind.HTTP and _finite(container))

    def frames(self) -> Iterator[Frame]:
        assert self._container is not None and self.info is not None, "open() first"
        return self._live_frames() if self.info.live else self._file_frames()

    def _decoded(self, deadline: float | None = None) -> Iterator[av.VideoFrame]:
        """Frames in decoding order, after the one decoded while connecting; ends at the first packet read
        after the monotonic ``deadline``. Decoders keep PyAV's slice threads: frame threads report a damaged
        packet's error some frames later, and PyAV's final flush stops at it, losing the frames still held (the
        last two or three of an MP4 cut short)."""
        assert self._container is not None
        while self._held:
            yield self._held.popleft()
        if self._demuxed_all:  # read to its end while connecting: a second end would fail the decoder (EOFError)
            return
        stream = main_video_stream(self._container)
        assert stream is not None  # every container kept passed _video_stream
        for packet in self._container.demux(stream):
            if deadline is not None and time.monotonic() > deadline:
                return
            self.discarded_packets += packet.is_discard
            try:
                decoded = packet.decode()
            except av.error.InvalidDataError as exc:
                if deadline is None:
                    self.skipped_packets += 1
                    self._report(logging.WARNING, "skipped an undecodable packet at pts %s: %s", packet.pts, exc)
                else:  # a camera joined between keyframes: normal until its first keyframe
                    log.debug("skipped an undecodable packet while connecting at pts %s: %s", packet.pts, exc)
                continue
            self._demuxed_all = packet.size == 0 and packet.pts is None  # the demuxer's empty flush packet
            self._held.extend(decoded)  # those not handed out stay for the next `_decoded`, should this one be left
            while self._held:
                yield self._held.popleft()

    def _peek_turn(self) -> Turn:
        """Decode the first frame (kept for ``frames()``) to read its display matrix: the stream's size on screen
        is known before any frame is handed out. A file read from its start that gives no frame at all is damaged."""
        decoded = self._decoded()
        first = next(decoded, None)
        self._file_decoded = decoded if first is None else itertools.chain([first], decoded)
        if first is None:
            if self.window is None or not self.window.seeks:
                raise BadInputError(f"no frame of {self.shown_url} could be decoded", hint="the file is damaged")
            return Turn.NONE
        # PyAV 18.1.0's stub types side_data as a dict of motion vectors; it is a SideDataContainer, a mapping by
        # type (iterating it gave the SideData buffers up to 18.1.0, their types from 18.1.1)
        side_data = cast(av.sidedata.sidedata.SideDataContainer, first.side_data)
        display = side_data.get(av.sidedata.sidedata.Type.DISPLAYMATRIX)
        matrix = None if display is None else np.frombuffer(bytes(display), np.int32)
        turn = turn_for_display_matrix(matrix)
        if turn is not Turn.NONE:
            self._report(logging.INFO, "turning frames upright as the display matrix says (%s)", turn.value)
        return turn

    def _report(self, level: int, message: str, *args: Any) -> None:
        log.log(level if self.reports else logging.DEBUG, message, *args)

    def _file_frames(self) -> Iterator[Frame]:
        """Frames upright, with FFmpeg's best-effort timestamps (None where there is none: the output repairs it).
        A file whose frame size changes midway (joined TS captures) is scaled to its first size, as live input is."""
        assert self.info is not None and self._file_decoded is not None
        timestamps = BestEffortTimestamps()
        width, height = self.info.width, self.info.height
        if self.turn.swaps_axes:  # the decoded size, before the turn
            width, height = height, width
        if self.max_frames is not None and self.resume_at >= self.max_frames:
            return
        decoded, first_pts, last_pts = self.resume_at, None, None
        for seq, av_frame in enumerate(self._windowed(self._file_decoded), self.resume_at):
            self._check_size(av_frame)
            pts = timestamps.guess(av_frame.pts, av_frame.dts)
            image = np.ascontiguousarray(av_frame.to_ndarray(format="bgr24", width=width, height=height))
            image = self.turn.apply(image)
            yield Frame(seq=seq, pts=pts, time_base=self.info.time_base, image=image, captured_at=time.time())
            decoded, last_pts = seq + 1, pts
            first_pts = pts if first_pts is None else first_pts
            if self.max_frames is not None and seq + 1 >= self.max_frames:
                return
        if self.window is None:  # a batch segment's file is judged by the batch, from all its segments' frames
            warn_if_ended_early(self.url, self.info, decoded, last_pts, self.discarded_packets, first_pts)

    def _check_size(self, av_frame: av.VideoFrame) -> None:
        """A frame past the limits ends the input there, wherever it comes (the first frame's size was checked when
        the input opened: a file may change its size midway)."""
        limit = self.limits.max_pixels
        if limit is not None and av_frame.width * av_frame.height > limit:
            raise FrameTooLargeError(f"input {self.shown_url} has a {av_frame.width}x{av_frame.height} frame, more than "
                                     f"{limit} pixels", hint="send a smaller video")

    def _windowed(self, decoded: Iterator[av.VideoFrame]) -> Iterator[av.VideoFrame]:
        """The decoded frames of ``window``: after a seek, frames shown before the keyframe (an open GOP's leading
        B-frames) are dropped, so that counting from the keyframe gives each frame its index in the whole file.
        Without a seek every frame counts, as in a plain read (some files start with negative timestamps)."""
        window = self.window
        if window is None:
            yield from decoded
            return
        index = window.seek_index
        for av_frame in decoded:
            if window.seeks and av_frame.pts is not None and av_frame.pts < window.seek_pts:
                continue
            if index >= window.end_index:
                return
            if index >= window.first_index:
                yield av_frame
            index += 1

    def _live_frames(self) -> Iterator[Frame]:
        """Frames across reconnects, scaled to the first connection's size should a camera change it."""
        assert self.info is not None
        timeline = LiveTimeline(self.info.time_base, self.info.frame_rate)
        seq = 0
        while True:
            try:
                for av_frame in in_presentation_order(self._decoded()):
                    self._check_size(av_frame)
                    captured_at = time.time()
                    image = av_frame.to_ndarray(format="bgr24", width=self.info.width, height=self.info.height)
                    pts = timeline.stamp(av_frame.pts, av_frame.time_base or self.info.time_base, captured_at)
                    yield Frame(seq=seq, pts=pts, time_base=self.info.time_base,
                                image=np.ascontiguousarray(image), captured_at=captured_at)
                    self._failures = 0
                    seq += 1
                    if self.max_frames is not None and seq >= self.max_frames:
                        return
                reason = "the stream ended"
            except (av.error.FFmpegError, OSError) as exc:
                timed_out = isinstance(exc, (av.error.ExitError, TimeoutError))  # PyAV's interrupt, FFmpeg's timeout
                reason = f"no data for {self.live_options.read_timeout_s:g} s" if timed_out else _reason(exc)
            self._close_container()
            self._container = self._connect(reason)
            if self._container is None:
                return
            self.reconnects += 1
            timeline.rebase()

    def _connect(self, lost: str | None) -> av.container.InputContainer | None:
        """Connect to the live input, retrying with backoff; ``lost`` says why the last connection ended (None
        before the first one). None when stopped; raises once ``reconnect_attempts`` failed in a row."""
        options = self.live_options
        reason = lost
        event = f"disconnected from {self.shown_url}" if lost is not None else f"cannot connect to {self.shown_url}"
        while True:
            if reason is not None:
                self._failures += 1
                if 0 <= options.reconnect_attempts < self._failures:
                    raise self._gave_up(reason, connected_before=lost is not None)
                delay = backoff_delay(self._failures, options.backoff_initial_s, options.backoff_max_s)
                log.warning("%s (%s); reconnecting in %.1f s (attempt %d%s)", event, reason, delay, self._failures,
                            f" of {options.reconnect_attempts}" if options.reconnect_attempts >= 0 else "")
                event = f"reconnecting to {self.shown_url} failed"
                if self.on_attempt is not None:
                    self.on_attempt(self._failures, reason)
                if self._wait(delay):
                    return None
            try:
                self._attempt()
            except NotSeekableError:  # its own message and hint: no attempt would do better
                raise
            except (av.error.FFmpegError, OSError, BadInputError, NotReadyError) as exc:
                reason = _reason(exc)
                if lost is None and is_permanent(exc):
                    if isinstance(exc, BadInputError):  # what the input is (a photo, no video): its own hint
                        raise
                    raise self._unreachable(reason) from exc
                continue
            if self._wait(0):  # told to stop while connecting: the connection is not wanted any more
                self._close_container()
                return None
            if reason is not None:
                log.info("%s to %s", "connected" if lost is None else "reconnected", self.shown_url)
            return self._container

    def _attempt(self) -> None:
        """One connection: open the input and decode its first frame (kept for ``frames()``), within
        ``OPEN_TIMEOUTS_PER_ATTEMPT`` open timeouts; on failure, raises an exception that ``CONNECT_FAILURES``
        sorts."""
        options = self.live_options
        started = time.monotonic()
        try:
            container = open_live(self.url, self.kind, options, self.limits)
        except (av.error.FFmpegError, OSError) as exc:
            # An interrupted RTSP handshake surfaces as "invalid data"; the clock tells what happened.
            if time.monotonic() - started >= options.open_timeout_s and not is_permanent(exc):
                raise TimeoutError(f"no answer within {options.open_timeout_s:g} s") from exc
            raise
        _video_stream(self.shown_url, container, sized=False)
        live = self._is_live(container)
        self._container = container
        try:
            self._held.appendleft(self._first_frame_by(started + OPEN_TIMEOUTS_PER_ATTEMPT * options.open_timeout_s))
        except BaseException as exc:
            out_of_reach = isinstance(exc, OSError) and not live and frames_out_of_reach(container)
            self._close_container()
            if out_of_reach:
                raise NotSeekableError(
                    f"cannot read {self.shown_url}: none of this MP4's frames could be reached, as when the server "
                    "does not allow seeking (no HTTP Range requests) and the MP4 keeps its index after its frames, "
                    f"or when the connection breaks while it is probed ({_reason(exc)})",
                    hint="if it fails alike again, make it fast-start (ffmpeg -i IN -c copy -movflags +faststart "
                         "OUT) or download it first") from exc
            raise

    def _first_frame_by(self, deadline: float) -> av.VideoFrame:
        """The newly connected input's first frame, decoded by the monotonic ``deadline``."""
        try:
            frame = next(self._decoded(deadline), None)
        except (av.error.ExitError, TimeoutError):  # no data for a read timeout: no picture, like any other
            frame = None
        if frame is not None:
            return frame
        assert self._container is not None
        waited = f"within {OPEN_TIMEOUTS_PER_ATTEMPT} x {self.live_options.open_timeout_s:g} s"
        stream = main_video_stream(self._container)
        assert stream is not None
        codec = stream.codec_context
        if codec.width <= 0 or codec.height <= 0:
            raise NoFrameSizeError(f"connected, but no frame size {waited}")
        raise NoKeyframeError(f"connected, but no keyframe {waited}")

    def _wait(self, seconds: float) -> bool:
        """Sleep, or return True early when asked to stop."""
        if self.stop is not None:
            return self.stop.wait(seconds)
        time.sleep(seconds)
        return False

    def _unreachable(self, reason: str) -> BadInputError:
        return BadInputError(f"cannot open {self.shown_url}: {reason}",
                             hint="check the address, the credentials and that the camera or server is running")

    def _gave_up(self, reason: str, connected_before: bool) -> BadInputError | StreamLostError:
        attempts = self.live_options.reconnect_attempts
        failed = f"{attempts} reconnect attempt{'s' if attempts != 1 else ''} failed"
        if not connected_before:
            return self._unreachable(reason + (f" ({failed})" if attempts else ""))
        return StreamLostError(f"lost {self.shown_url}: {reason}; " + (failed if attempts else "reconnecting is off"),
                               hint="raise --reconnect-attempts (-1 = keep trying) or check the camera")

    def _close_container(self) -> None:
        self._held.clear()
        self._demuxed_all = False
        if self._container is not None:
            self._container.close()
            self._container = None

    def close(self) -> None:
        self._close_container()


def probe(url: str, live: LiveOptions | None = None, limits: InputLimits | None = None) -> StreamInfo:
    """Open an input only to describe it (and to fail early with a clear error if it is not a video)."""
    source = VideoSource(url, live=live, limits=limits, reports=False)
    try:
        return source.open()
    finally:
        source.close()
