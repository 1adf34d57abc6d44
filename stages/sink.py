"""Video output: libx264 yuv420p with the source's timestamps, fast-start MP4, the source's audio copied (or as AAC).

For long runs the output can be rotated into segments named by their start time, and MP4/MOV can be written
fragmented, so that a process killed at any moment leaves files that play up to (nearly) that moment.
"""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path
from typing import TypeGuard

import av
import cv2
import numpy as np

from vidparse.errors import BadOutputError, file_in_the_way, folder_vanished, not_writable
from vidparse.stages.source import StreamInfo, frame_seconds, short_of, without_credentials
from vidparse.stages.types import Frame
from vidparse.stages.options import EncoderOptions

log = logging.getLogger(__name__)

CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}  # .m4v: Apple's name for an MP4
FRAGMENTABLE = ("mp4", "mov")  # the formats written in fragments (and finished as fast-start files)
FRAGMENT_US = 1_000_000  # longest fragment: what a killed process can lose beyond the encoder's delay
# FFmpeg's interleaver holds the other tracks' packets this long for a track that has none yet (max_interleave_delta):
# a fragmented file waits no longer than that for a late audio track's first packet
AUDIO_WAIT_S = 10
SEGMENT_TIME_FORMAT = "%Y%m%dT%H%M%S"  # UTC
H264_SIDES = (2, 16384)  # the frame sides libx264 encodes, after an odd side has lost its last row or column
RATE_DENOMINATOR = 1001  # the largest denominator of an encoder rate measured from frames: NTSC's 30000/1001 stays


def writes_photos(output: Path | None) -> TypeGuard[Path]:
    """Photos given ``output`` are written as annotated photos with their label PNGs (into an image file or a
    folder), not made into a video."""
    return output is not None and output.suffix.lower() not in CONTAINERS


def fragmentable(path: Path) -> bool:
    return CONTAINERS.get(path.suffix.lower()) in FRAGMENTABLE


def container_options(fmt: str, fragmented: bool, edit_list: bool = False) -> dict[str, str]:
    """The muxer's options; ``edit_list``: a fragmented file's moov waits for every track's first packet (written
    with the first fragment), so that its edit lists say where each track starts. Otherwise a fragmented MP4 starts
    every track at 0: audio that starts before the first frame played with that frame held from 0, and browsers
    played audio that starts later from 0 (FFmpeg held its first packet until its second)."""
    if fmt not in FRAGMENTABLE:
        return {}
    if fragmented:
        # flush_packets: each finished fragment reaches the file at once instead of waiting in the I/O buffer.
        flags = "+frag_keyframe+empty_moov+default_base_moof" + ("+delay_moov" if edit_list else "")
        return {"movflags": flags, "frag_duration": str(FRAGMENT_US), "flush_packets": "1",
                **({"use_editlist": "1"} if edit_list else {})}
    return {"movflags": "+faststart"}


def audio_starts_in_time(source: av.container.InputContainer) -> bool:
    """Whether the first audio track of ``source`` starts, by the header, before its video or at most `AUDIO_WAIT_S`
    after it: a fragmented file's moov, which gives the edit lists, waits for it (`container_options`)."""
    if not source.streams.audio or not source.streams.video:
        return False
    audio, video = start_s(source.streams.audio[0]), start_s(source.streams.video[0])
    return audio is not None and video is not None and audio <= video + AUDIO_WAIT_S


def start_s(stream: av.stream.Stream) -> Fraction | None:
    """Where ``stream`` starts by its header, seconds; None when it does not say."""
    if stream.start_time is None or not stream.time_base:
        return None
    return stream.start_time * stream.time_base


def segment_path(path: Path, stamp: str) -> Path:
    """``out.mp4`` -> ``out_<stamp>.mp4``; a numbered name when that one exists (a restarted run, or two live
    segments within one second)."""
    candidate = path.with_name(f"{path.stem}_{stamp}{path.suffix}")
    number = 1
    while candidate.exists():
        number += 1
        candidate = path.with_name(f"{path.stem}_{stamp}-{number}{path.suffix}")
    return candidate


def segment_stamp(live: bool, captured_at: float | None, seconds: Fraction) -> str:
    """A live segment is named by the wall clock (UTC) when its first frame came (``20261123T041500``), a file's by
    where it starts in the video (``00h01m30s``, ``00h00m00.500s``): a file is parsed faster than it plays."""
    if live:
        return datetime.fromtimestamp(captured_at or time.time(), timezone.utc).strftime(SEGMENT_TIME_FORMAT)
    millis = round(seconds * 1000)
    whole, fraction = divmod(millis, 1000)
    hours, rest = divmod(whole, 3600)
    return f"{hours:02d}h{rest // 60:02d}m{rest % 60:02d}" + (f".{fraction:03d}s" if fraction else "s")


def check_output_path(path: Path) -> None:
    """Fail before any work if ``path`` cannot become a video file."""
    if path.is_dir():
        raise BadOutputError(f"output {path} is a directory", hint=f"give a file name, e.g. {path / 'out.mp4'}")
    if not path.suffix:
        raise BadOutputError(f"output {path} has no extension and is not a folder",
                             hint=f"give a file name such as {path}.mp4, or create the folder first: mkdir -p {path}")
    if path.suffix.lower() not in CONTAINERS:
        raise BadOutputError(f"output {path} has an unsupported extension",
                             hint=f"use one of: {', '.join(CONTAINERS)}")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise file_in_the_way(path, parent) or BadOutputError(f"output directory {parent} does not exist",
                                                              hint=f"create it first: mkdir -p {parent}")
    if refused := not_writable(path):
        raise BadOutputError(f"output {path} is not writable: {refused.strerror}", hint="choose a writable location")


class VideoSink:
    """Encodes annotated frames. Audio packets of ``audio_from`` are copied, interleaved by time; with
    ``audio_to_last_frame`` (a run told to stop before the input's end: --max-frames) the audio ends where the last
    frame written ends, as it does when a run stops well short of the input's end.

    With ``segment_seconds`` each segment is a complete file whose timestamps start at 0; ``paths`` lists
    every file written. Audio is copied only into unsegmented output.
    """

    def __init__(self, path: Path, info: StreamInfo, options: EncoderOptions, audio_from: str | None = None,
                 audio_to_last_frame: bool = False) -> None:
        self.path = path
        self.failed = False  # a write failed (disk full, directory gone): the file is kept as written
        self.info = info
        self.options = options
        self.audio_from, self.audio_to_last_frame = audio_from, audio_to_last_frame
        self.frames_written = 0
        self._frames_in_file = 0  # of the file being written (the last segment)
        self.paths: list[Path] = []
        self._output: av.container.OutputContainer | None = None
        self._audio: AudioCopy | None = None
        self._segment_start: Fraction | None = None  # first frame time of the current segment, seconds
        self._pts_origin = 0
        self._written_to: float | None = None  # the input's time where the last frame written ends, seconds
        # the frames written so far that have a timestamp (how long a frame lasts), the first's and the last's
        self._timed = 0
        self.first_pts: int | None = None
        self.last_pts: int | None = None
        self._unrated: av.VideoFrame | None = None  # a first frame waiting for the encoder's rate (`_encode`)
        self._video_first_s: float | None = None  # the first frame written, on the input's clock
        # where the audio's first packet starts from the first frame, on the input's clock (before it: negative, as
        # AAC's priming), for the fast-start rewrite; None: not known (no audio, no timestamp)
        self._audio_offset_s: float | None = None
        # a file kept fragmented, with audio: written with edit lists that place the audio beside the first frame, which
        # is at 0 (`container_options`)
        self._edit_list = False

    @property
    def segmented(self) -> bool:
        return self.options.segment_seconds > 0

    def open(self) -> None:
        width, height = self.info.width - self.info.width % 2, self.info.height - self.info.height % 2
        if not (H264_SIDES[0] <= width <= H264_SIDES[1] and H264_SIDES[0] <= height <= H264_SIDES[1]):
            raise BadOutputError(f"output {self.path}: H.264 takes frames of {H264_SIDES[0]} to {H264_SIDES[1]} "
                                 f"pixels a side, the input's are {self.info.width}x{self.info.height}",
                                 hint="write a photo as a photo (an image file or folder as the output), or scale "
                                      "the input to fit")
        if self.info.live and self.info.has_audio:
            log.warning("a live input's audio is not recorded (it would open the camera a second time)")
        if self.segmented:
            if self.audio_from:
                log.warning("segmented output: the input's audio is not copied")
            return  # each segment is named by the time of its first frame, so it opens with that frame
        audio_input = av.open(self.audio_from) if self.audio_from else None
        try:
            self._edit_list = (self.options.fragmented and fragmentable(self.path) and audio_input is not None
                               and audio_starts_in_time(audio_input))
            output = self._open_file(self.path)
        except BaseException:
            if audio_input is not None:
                audio_input.close()
            raise
        self._audio = AudioCopy(audio_input, output) if audio_input is not None else None

    @property
    def _faststart_at_end(self) -> bool:
        """A plain MP4/MOV is written fragmented (a crash or a full disk leaves a playable file) and turned into
        a fast-start file when the run ends: the index first, for browsers and seeking."""
        return not self.options.fragmented and not self.segmented and fragmentable(self.path)

    def _open_file(self, path: Path) -> av.container.OutputContainer:
        """Open ``path`` as the file being written (``_output``), with its video stream; returns it."""
        fmt = CONTAINERS[path.suffix.lower()]
        fragmented = self.options.fragmented or self._faststart_at_end
        options = container_options(fmt, fragmented, edit_list=self._edit_list)
        if self._faststart_at_end:
            # A fragment cannot start before 0: the muxer would move the frames after the first by the audio's
            # priming (the first held that much longer). With an edit list they keep their times; the audio's
            # go back to the input's in the rewrite (`_make_faststart`).
            options["use_editlist"] = "1"
        try:
            output = self._output = av.open(str(path), "w", format=fmt, options=options)
        except (av.error.FFmpegError, OSError) as exc:
            raise BadOutputError(f"cannot create {path}: {exc}", hint="choose a writable location") from exc
        self.paths.append(path)
        stream = output.add_stream("libx264")  # its rate is set with its first frame (`_encode`)
        stream.width = self.info.width - self.info.width % 2
        stream.height = self.info.height - self.info.height % 2
        stream.pix_fmt = "yuv420p"
        if self.info.sample_aspect_ratio:  # anamorphic (DV, DVD, broadcast): players stretch it as the input's
            stream.codec_context.sample_aspect_ratio = self.info.sample_aspect_ratio
        stream.time_base = self.info.time_base
        stream.codec_context.time_base = self.info.time_base
        # No B-frames: presentation order is decode order, so fragments need no edit list to start at the
        # source's first timestamp, and live frames leave the encoder without a reordering delay.
        stream.options = {"crf": str(self.options.crf), "preset": self.options.preset, "bf": "0",
                          # tagged as what `yuv420p` holds, so that players do not take HD frames for BT.709
                          "x264-params": "colorprim=smpte170m:transfer=smpte170m:colormatrix=smpte170m:range=tv"}
        self._video = stream
        return output

    def _rotate(self, frame: Frame) -> None:
        """Start the next segment with ``frame`` when the current one is full (or none is open yet)."""
        seconds = Fraction(frame.pts or 0) * frame.time_base
        if self._segment_start is not None and seconds - self._segment_start < self.options.segment_seconds:
            return
        self._finish_file()
        self._open_file(segment_path(self.path, segment_stamp(self.info.live, frame.captured_at, seconds)))
        self._segment_start, self._frames_in_file = seconds, 0
        self._pts_origin = frame.pts or 0
        log.info("writing segment %s", self.paths[-1])

    def _start_at(self, frame: Frame) -> None:
        """Make ``frame`` the output's 0, and the audio beside it: what comes before it falls before 0, which the
        edit list skips, and what comes later waits there."""
        self._pts_origin = frame.pts or 0
        if self._audio is not None and frame.seconds is not None:
            self._audio.shift_s = frame.seconds

    def write(self, frame: Frame) -> None:
        self._time(frame)
        if self.segmented:
            self._rotate(frame)
        elif self._edit_list and self.frames_written == 0:
            self._start_at(frame)
        image = frame.image[: self._video.height, : self._video.width]
        yuv = to_yuv420(np.ascontiguousarray(image))
        av_frame = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        av_frame.pts = None if frame.pts is None else frame.pts - self._pts_origin
        av_frame.time_base = frame.time_base
        self._encode(av_frame)
        audio, seconds = self._audio, frame.seconds
        if self._video_first_s is None:
            self._video_first_s = seconds
        if audio is not None and seconds is not None:
            self._mux(lambda: audio.copy_until(seconds))
        self.frames_written += 1
        self._frames_in_file += 1
        if frame.seconds is not None:
            self._written_to = frame.seconds + self._frame_seconds()

    def _time(self, frame: Frame) -> None:
        """Count ``frame`` in the frames' spacing."""
        if frame.pts is None:
            return
        self._timed += 1
        self.first_pts = frame.pts if self.first_pts is None else self.first_pts
        self.last_pts = frame.pts

    def _frame_seconds(self) -> float:
        """How long a frame lasts, as `frame_seconds` says from the frames come so far: by the header's frame rate,
        else by their spacing; a lone frame of a header without a rate lasts what FFmpeg guessed (nothing tells)."""
        measured = frame_seconds(self.info, self._timed, self.first_pts, self.last_pts)
        return float(1 / self.info.frame_rate) if measured is None else measured

    def _encode(self, av_frame: av.VideoFrame | None) -> None:
        """Encode ``av_frame`` (None: flush the encoder); a file's first frame waits for the next one while the
        encoder's rate does (`_awaits_rate`)."""
        if av_frame is not None and self._awaits_rate():
            self._unrated = av_frame
            return
        if self._unrated is not None:
            waiting, self._unrated = self._unrated, None
            self._encode_now(waiting)
        self._encode_now(av_frame)

    def _awaits_rate(self) -> bool:
        """Whether the encoder's rate, taken with a file's first frame, waits for the frames' spacing: the header
        gives none and only one frame has come. x264 picks the H.264 level by it: at a guessed 1000 fps, a level
        players may refuse."""
        return self.info.frame_rate_guessed and not self._video.codec_context.is_open and self._timed < 2

    def _encode_now(self, av_frame: av.VideoFrame | None) -> None:
        codec = self._video.codec_context
        if not codec.is_open:
            codec.framerate = Fraction(1 / self._frame_seconds()).limit_denominator(RATE_DENOMINATOR)
        self._mux(lambda: self._lasting_a_frame(self._video.encode(av_frame)))

    def _lasting_a_frame(self, packets: list[av.Packet]) -> list[av.Packet]:
        """``packets`` lasting `_frame_seconds`, which the muxer takes the file's last frame to last (x264 gives no
        duration: the muxer would take the rate's)."""
        for packet in packets:
            assert packet.time_base is not None  # the stream's
            packet.duration = round(self._frame_seconds() / packet.time_base)
        return packets

    def _mux(self, packets: Callable[[], list[av.Packet] | None]) -> None:
        """Encode and mux; whatever FFmpeg or the disk raises becomes a ``BadOutputError`` and marks the sink
        failed, so that closing only finalizes what was written."""
        try:
            written = packets()
            if written is not None:
                assert self._output is not None  # muxed only while a file is open
                self._output.mux(written)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise self._write_failed(reason, refused=not isinstance(exc, OSError)) from exc

    def _write_failed(self, reason: str, refused: bool = False) -> BadOutputError:
        """The error for a failed write; ``refused``: the encoder or muxer refused the data, not the disk."""
        self.failed = True
        directory = self.paths[-1].parent
        if not directory.is_dir():
            return folder_vanished(directory)
        if refused:
            return BadOutputError(f"encoding {self.paths[-1]} failed: FFmpeg refused a frame ({reason})",
                                  hint="the frames written so far play; run with --verbose and report this input")
        return BadOutputError(f"writing {self.paths[-1]} failed: {reason}",
                              hint="check free disk space and that the output directory still exists")

    def _finish_file(self) -> None:
        """Flush the encoder and finalize the current file so it plays, whatever happened before."""
        if self._output is None:
            return
        try:
            if not self.failed:  # after a failure the encoder's last packets are not worth a second error
                self._encode(None)
                audio = self._audio
                if audio is not None and self.frames_written:  # no frame, no file: not an audio-only one
                    self._mux(lambda: audio.finish(self._audio_end()))
        finally:
            if self._audio is not None:
                if self._audio.first_s is not None and self._video_first_s is not None:
                    self._audio_offset_s = self._audio.first_s - self._video_first_s
                self._audio.close()
                self._audio = None
            try:
                self._output.close()  # writes the trailer: a fragmented file plays up to its last fragment
            except (av.error.FFmpegError, OSError) as exc:
                if not self.failed:
                    raise self._write_failed(getattr(exc, "strerror", None) or str(exc)) from exc
            finally:
                self._output = None

    def _audio_end(self) -> float:
        """Where the copied audio stops: at the input's end when the frames written reach it, else (a run stopped
        early: Ctrl-C, --max-frames, a damaged file) where the last frame written ends, so no audio plays on over a
        still picture."""
        assert self._audio is not None
        end = self._audio.input_end_s
        if self._written_to is not None and (self.audio_to_last_frame or (end is not None and
                                                                          short_of(self._written_to, end))):
            return self._written_to
        return float("inf")

    def _cut_to_whole_fragments(self) -> bool:
        """End the last file at its last whole fragment; whether it ended mid-fragment. Without a whole fragment no
        frame plays, and the file goes, as after a run that wrote no frame."""
        path = self.paths[-1] if self.paths else None
        if path is None or not path.exists() or not fragmentable(path):
            return False
        trimmed = trim_to_whole_fragments(path)
        if trimmed.fragments == 0:
            path.unlink()
        elif trimmed.cut and (kept := video_packets(path)) < self._frames_in_file:
            log.warning("%s holds %d of the %d frames written to it (cut back to its last whole fragment); the masks "
                        "and statistics have them all", path, kept, self._frames_in_file)
        return trimmed.cut

    def close(self) -> None:
        # A write that fails while FFmpeg closes the file (its last fragment, the disk full: often because another
        # output filled it) is not reported: the file itself tells.
        try:
            try:
                self._finish_file()
            finally:
                cut = self._cut_to_whole_fragments()
            if cut and not self.failed:
                raise self._write_failed("its last fragment could not be written")
            if self.paths and not self.paths[-1].parent.is_dir():
                raise self._write_failed("its directory is gone")
            if self.frames_written and not self.failed and self.paths and not self.paths[-1].exists():
                raise self._write_failed("it was deleted while being written")  # PyAV makes it with its first frame
        finally:  # a file that got no frame was never made; one removed (its folder with it) is not written
            self.paths = [path for path in self.paths if path.exists()]
        if self._faststart_at_end and not self.failed and self.paths and self.path.exists():  # gone: removed meanwhile
            _make_faststart(self.path, self._audio_offset_s)


# OpenCV's YCrCb is full range (JPEG's): chroma 128 +- 127.5 -> limited range (video's) 128 +- 112
_LIMITED_CHROMA = np.clip(np.round(128 + (np.arange(256) - 128) * 224 / 255), 0, 255).astype(np.uint8)


def to_yuv420(image: np.ndarray) -> np.ndarray:
    """An even-sized BGR image as I420 (BT.601, limited range, as FFmpeg's scaler gives x264): OpenCV's luma, and
    chroma from the mean colour of each 2x2 block (OpenCV's own I420 conversion takes one pixel of each: fine stripes
    and dithered GIFs came out in one stripe's colour). On the serial emit thread: about 0.6 ms a 768x576 frame more
    than OpenCV's own (docs/benchmarks.md)."""
    height, width = image.shape[:2]
    yuv = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
    block_means = cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    chroma = cv2.LUT(cv2.cvtColor(block_means, cv2.COLOR_BGR2YCrCb), _LIMITED_CHROMA)
    quarter = (height // 2) * (width // 2)
    planes = yuv.reshape(-1)[height * width:]
    planes[:quarter] = chroma[:, :, 2].reshape(-1)  # U (Cb)
    planes[quarter:] = chroma[:, :, 1].reshape(-1)  # V (Cr)
    return yuv


@dataclass(frozen=True)
class Trimmed:
    fragments: int  # whole fragments kept (-1: the file could not be read)
    cut: bool  # whether the file ended mid-fragment


def video_packets(path: Path) -> int:
    """The video packets (frames) a file holds, by demuxing it (nothing decoded); 0 when it cannot be read."""
    try:
        with av.open(str(path)) as container:
            return sum(1 for packet in container.demux(video=0) if packet.size)
    except (av.error.FFmpegError, OSError, IndexError):
        return 0


def trim_to_whole_fragments(path: Path) -> Trimmed:
    """Cut a fragmented MP4 that a full disk stopped mid-fragment back to its last whole fragment (a ``moof`` and its
    ``mdat``): browsers stop decoding at a cut fragment, and every player plays the file to its end once it is gone."""
    fragments = 0
    try:
        with open(path, "r+b") as file:
            end = os.fstat(file.fileno()).st_size
            offset = kept = 0
            while offset + 8 <= end:
                file.seek(offset)
                size, kind = struct.unpack(">I4s", file.read(8))
                if size == 1:  # a 64-bit size follows the type
                    size = struct.unpack(">Q", file.read(8))[0]
                elif size == 0:  # up to the file's end
                    size = end - offset
                if size < 8 or offset + size > end:
                    break
                offset += size
                if kind == b"mdat":
                    fragments += 1
                if kind != b"moof":  # a fragment is whole once its mdat is
                    kept = offset
            if kept < end:
                file.truncate(kept)
                log.info("cut %s back to its last whole fragment (%d of %d bytes)", path, kept, end)
    except OSError as exc:
        log.warning("could not cut %s back to whole fragments: %s", path, exc)
        return Trimmed(-1, False)
    return Trimmed(fragments, kept < end)


def move_packet(packet: av.Packet, seconds: float | Fraction) -> None:
    """Move ``packet`` ``seconds`` later (earlier if negative), in whole ticks of its time base."""
    assert packet.time_base is not None  # a demuxed or encoded packet has its stream's
    ticks = round(seconds / packet.time_base)
    if packet.pts is not None:
        packet.pts += ticks
    if packet.dts is not None:
        packet.dts += ticks


def _make_faststart(path: Path, audio_offset_s: float | None = None) -> None:
    """Rewrite a finished fragmented MP4 as a fast-start MP4 (packets copied, not re-encoded), atomically. The audio
    moves to start ``audio_offset_s`` from the first frame, as it did in the input: a fragmented file starts every
    track at 0, which moved audio that started later than the video (a late audio track) earlier, and audio that
    started before it (a transport stream's, AAC's priming) later. An edit list skips what lies before 0 and waits
    for what starts later."""
    staging = path.with_name(f".{path.name}.faststart")
    try:
        with av.open(str(path)) as source, av.open(str(staging), "w", format=CONTAINERS[path.suffix.lower()],
                                                   options={"movflags": "+faststart"}) as target:
            streams = {s.index: target.add_stream_from_template(s) for s in source.streams if s.type in ("video", "audio")}
            shift_s = _audio_shift(source, audio_offset_s)
            for packet in source.demux(*[s for s in source.streams if s.index in streams]):
                if packet.dts is None:
                    continue
                if shift_s and packet.stream.type == "audio":
                    move_packet(packet, shift_s)
                packet.stream = streams[packet.stream.index]
                target.mux(packet)
        staging.replace(path)
    except (av.error.FFmpegError, OSError) as exc:
        staging.unlink(missing_ok=True)
        log.warning("kept %s fragmented (it plays; fast start failed: %s)", path, exc)


def _audio_shift(source: av.container.InputContainer, audio_offset_s: float | None) -> float:
    """How far the audio of the fragmented file ``source`` moves, in seconds, to start ``audio_offset_s`` from its
    video (0 when either is unknown)."""
    if audio_offset_s is None or not source.streams.audio or not source.streams.video:
        return 0.0
    audio, video = source.streams.audio[0], source.streams.video[0]
    starts = [float(start_s(stream) or 0) for stream in (audio, video)]
    return audio_offset_s - (starts[0] - starts[1])


BROWSER_AUDIO = ("aac", "mp3")  # audio every browser plays in an MP4; other codecs (PCM, FLAC, Vorbis...) -> AAC
AAC_RATES = frozenset(av.Codec("aac", "w").audio_rates or ())  # 7350 to 96000 Hz
AAC_FALLBACK_RATE = 48000


def _channels(stream: av.audio.stream.AudioStream) -> int:
    """How many channels ``stream`` has. A layout that lists its channels one by one (a custom order: a MOV's
    channel labels, as FFmpeg writes 7.1 PCM) is replaced by the usual layout of as many channels before anything
    reads it: PyAV (17, 18) copies such a layout without its list and frees the list twice, which aborts the process
    (the run ended by SIGABRT, leaving no output and no message). The channels may be mixed down to stereo as the
    usual layout's, not as labelled."""
    layout = stream.codec_context.layout  # a copy that shares a custom layout's list with the decoder
    count = layout.nb_channels
    if "(" in layout.name:  # a custom order is described as "8 channels (FL+FR+FC+LFE+SL+SR+BL+BR)"
        log.info("audio channels %s taken as %s", layout.name, av.AudioLayout(f"{count}c").name)
        stream.codec_context.layout = av.AudioLayout(f"{count}c")
    del layout  # frees the list now that only it has it
    return count


class AudioCopy:
    """The input's first audio stream: its packets copied as they are when browsers play them in an MP4 (AAC,
    MP3), else decoded and encoded as AAC (PCM from an AVI or MKV would be muxed as ``ipcm``, which they do not), at
    the input's rate when AAC has it, else at 48 kHz (a 192 kHz recorder's PCM). ``shift_s``: moved that much earlier
    than on the input's clock (the input's time of the output's 0). ``source``: the input's URL, or the input opened
    (taken over: closed with this)."""

    def __init__(self, source: str | av.container.InputContainer, output: av.container.OutputContainer,
                 shift_s: float = 0.0) -> None:
        self._input = av.open(source) if isinstance(source, str) else source
        self._stream = self._input.streams.audio[0]
        if (tracks := len(self._input.streams.audio)) > 1:
            log.warning("input %s has %d audio tracks: only the first is kept", without_credentials(self._input.name),
                        tracks)
        self._encoder: av.audio.stream.AudioStream | None = None
        channels = _channels(self._stream)
        codec = self._stream.codec_context.codec.canonical_name  # "mp3", where the decoder is "mp3float"
        # AAC in ADTS frames (MPEG-TS, HLS) carries no AudioSpecificConfig, which an MP4 needs: re-encoded too
        adts = codec == "aac" and not self._stream.codec_context.extradata
        if codec in BROWSER_AUDIO and not adts:
            self._out_stream = output.add_stream_from_template(self._stream)
        else:
            rate = self._stream.rate or AAC_FALLBACK_RATE
            if rate not in AAC_RATES:
                log.info("audio at %d Hz resampled to %d Hz (AAC has no %d Hz)", rate, AAC_FALLBACK_RATE, rate)
                rate = AAC_FALLBACK_RATE
            self._encoder = self._out_stream = output.add_stream("aac", rate=rate)
            self._encoder.layout = "stereo" if channels > 1 else "mono"
            log.info("audio %s re-encoded as AAC%s (%s)", codec,
                     f", its {channels} channels mixed down to stereo" if channels > 2 else "",
                     "its ADTS frames do not go into an MP4 as they are" if adts else "browsers do not play it in an MP4")
        self._output = output
        self.shift_s = shift_s
        self._packets = self._input.demux(self._stream)
        self._pending: av.Packet[av.audio.stream.AudioStream] | None = None
        # where the first packet written starts on the input's clock (AAC's priming: before the first sample),
        # seconds; None before it is written
        self.first_s: float | None = None
        self._written = False

    @property
    def input_end_s(self) -> float | None:
        """The input's end on its own clock (start time plus duration), seconds; None when it does not say."""
        if self._input.duration is None:
            return None
        return ((self._input.start_time or 0) + self._input.duration) / av.time_base

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
            if self._encoder is None:
                packet.stream = self._out_stream
                self._mux([packet])
                continue
            for frame in packet.decode():
                if frame.pts is not None:  # on the encoder's clock, in samples (an AVI counts its packets)
                    assert frame.time_base is not None  # a decoded frame has its stream's
                    frame.pts = round(frame.pts * frame.time_base * frame.sample_rate)
                frame.time_base = Fraction(1, frame.sample_rate)
                self._mux(self._encoder.encode(frame))

    def _mux(self, packets: list[av.Packet]) -> None:
        if packets and not self._written:
            self._written = True
            first = packets[0]
            if first.pts is not None and first.time_base is not None:
                self.first_s = float(first.pts * first.time_base)
        if self.shift_s:
            for packet in packets:
                move_packet(packet, -self.shift_s)
        self._output.mux(packets)

    def finish(self, seconds: float) -> None:
        """Copy up to ``seconds``, then flush the encoder (when re-encoding)."""
        self.copy_until(seconds)
        if self._encoder is not None:
            self._mux(self._encoder.encode(None))

    def close(self) -> None:
        self._input.close()
