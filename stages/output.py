"""The output stages: measure each frame's motion (``measure``), recolor each parsed frame (``compose``), then encode
it into a video (``AnnotatedOutput``) or save it as an image (``AnnotatedImages``), and write the optional masks and
statistics (``emit``). Frames come to each in order; each step may run on its own thread, a frame or two ahead of
the next."""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from vidparse.errors import BadOutputError, folder_vanished
from vidparse.stages.images import AVIF_SUFFIXES, ImageSet
from vidparse.stages.motion import Flow
from vidparse.stages.recolor import ComposeOptions, Recolor
from vidparse.stages.sink import EncoderOptions, VideoSink
from vidparse.stages.source import MAX_TIMESTAMP_GAP_S, StreamInfo
from vidparse.stages.temporal import TemporalOptions
from vidparse.stages.track_labels import OrderedLabels, TrackedFrame, draw_track_ids
from vidparse.stages.timestamps import TimestampRepair
from vidparse.stages.tracker import TrackingOptions
from vidparse.stages.types import Frame, FrameResult, LabelSet
from vidparse.stages.writers import InstanceWriter, MaskWriter, StatsWriter, make_directory


@dataclass
class Composed:
    """A frame ready to be written: its labels (after tracking and the vote), its annotated image, and its
    instances (track ids; None without tracking). ``written`` is False for a warm-up frame, which is not written."""

    frame: Frame
    labels: np.ndarray
    annotated: np.ndarray
    result: FrameResult
    instances: np.ndarray | None = None
    written: bool = True


def _ordered(ordered: OrderedLabels, labels: np.ndarray, image: np.ndarray, result: FrameResult,
             measured: Flow | None) -> TrackedFrame:
    """The frame's labels voted on and tracked, its persons and cut set on ``result`` in place: the run's summary
    counts the persons written, the stats say where a shot starts."""
    tracked = ordered.process(labels, image, result, measured)
    result.persons, result.cut = tracked.result.persons, tracked.result.cut
    return tracked


# Suffixes OpenCV writes by another's encoder: .jfif (Windows' name for a JPEG saved from the web) is a JPEG it does
# not know by that name
ENCODED_AS = {".jfif": ".jpg"}
# OpenCV writes WebP lossless unless given a quality, several times a lossy file's size; 90 looks as JPEG's default 95
ENCODER_PARAMS = {".webp": [cv2.IMWRITE_WEBP_QUALITY, 90]}
AVIF_QUALITY = 90  # as WebP's; Pillow's default, 75, blurs the fine colored edges of the labels


def write_image(path: Path, image: np.ndarray) -> bool:
    """``cv2.imwrite``, a suffix of `ENCODED_AS` too: False where OpenCV or the file system could not write it. An
    AVIF is written by Pillow, which read it (an OpenCV wheel may have no AVIF encoder)."""
    suffix = path.suffix.lower()
    if suffix in AVIF_SUFFIXES:
        buffer = io.BytesIO()
        try:
            Image.fromarray(np.ascontiguousarray(image[..., ::-1])).save(buffer, "AVIF", quality=AVIF_QUALITY)
        except (OSError, ValueError):
            return False
        encoded, data = True, np.frombuffer(buffer.getbuffer(), np.uint8)
    else:
        encoded, data = cv2.imencode(ENCODED_AS.get(suffix, suffix), image, ENCODER_PARAMS.get(suffix, []))
    try:
        return encoded and path.write_bytes(data.tobytes()) > 0
    except OSError:
        return False


class AnnotatedOutput:
    """Each parsed frame recolored and encoded into ``video_path`` (None: no video, as for `vidparse.stream`), with
    the optional masks, statistics and instances."""

    def __init__(
        self,
        info: StreamInfo,
        label_set: LabelSet,
        video_path: Path | None,
        compose: ComposeOptions,
        encoder: EncoderOptions,
        audio_from: str | None = None,
        audio_to_last_frame: bool = False,
        masks_dir: Path | None = None,
        stats_path: Path | None = None,
        temporal: TemporalOptions | None = None,
        tracking: TrackingOptions | None = None,
        margin: float = 0.0,
        instances_dir: Path | None = None,
        stream_name: str | None = None,
        warmup: int = 0,
        index_offset: int = 0,
    ) -> None:
        """The first ``warmup`` frames only bring the tracker and the vote up to date and are not written (a
        `vidparse batch` segment); masks and instances are named by ``seq + index_offset``."""
        self.label_set = label_set
        self.warmup = warmup
        self.index_offset = index_offset
        self.ordered = OrderedLabels(label_set, temporal, tracking, margin)
        self.draw_ids = bool(tracking and tracking.enabled and tracking.draw_ids)
        self.recolor = Recolor(label_set, compose)
        self.sink = (VideoSink(video_path, info, encoder, audio_from, audio_to_last_frame)
                     if video_path is not None else None)
        self.masks = MaskWriter(masks_dir, label_set) if masks_dir else None
        self.stats = StatsWriter(stats_path, stream_name) if stats_path else None
        self.instances = InstanceWriter(instances_dir) if instances_dir else None
        # A file's timestamps are repaired here, where frames arrive in order; a live timeline is already strict.
        self.timestamps = None if info.live else TimestampRepair(info.time_base, info.frame_rate, MAX_TIMESTAMP_GAP_S)

    @property
    def paths(self) -> list[Path]:
        return self.sink.paths if self.sink is not None else []

    def _side_outputs(self) -> list:
        return [writer for writer in (self.masks, self.stats, self.instances) if writer is not None]

    def open(self) -> None:
        self.ordered.open()
        if self.sink is not None:
            self.sink.open()
        for writer in self._side_outputs():
            writer.open()

    def measure(self, frame: Frame, arrays: dict[str, np.ndarray]) -> Flow | None:
        """What ``compose`` needs from the frame and its parse (in order, ahead of it): its optical flow."""
        return self.ordered.measure(frame.image, arrays["labels"], frame.seq)

    def compose(self, frame: Frame, arrays: dict[str, np.ndarray], result: FrameResult,
                measured: Flow | None = None) -> Composed:
        """One frame made from its parser ``arrays`` and what ``measure`` found, in order: the temporal vote and
        tracking, then the recolor."""
        started = time.perf_counter()
        if self.timestamps:
            frame = replace(frame, pts=self.timestamps.stamp(frame.pts))
        tracked = _ordered(self.ordered, arrays["labels"], frame.image, result, measured)
        if frame.seq < self.warmup:
            return Composed(frame, tracked.labels, frame.image, result, tracked.instances, written=False)
        annotated = self.recolor.process(frame.image, tracked.labels)
        if self.draw_ids:
            draw_track_ids(annotated, result.persons)
        result.timings["compose"] = time.perf_counter() - started
        return Composed(frame, tracked.labels, annotated, result, tracked.instances)

    def emit(self, composed: Composed) -> None:
        """Encode a composed frame and write its masks, instances and statistics (frames in order)."""
        if not composed.written:
            return
        frame, result = composed.frame, composed.result
        started = time.perf_counter()
        if self.sink is not None:
            self.sink.write(replace(frame, image=composed.annotated))
        result.timings["encode"] = time.perf_counter() - started
        if self.masks:
            self.masks.write(frame.seq + self.index_offset, composed.labels)
        if self.instances:
            assert composed.instances is not None  # --instances needs tracking (runs.check_source)
            self.instances.write(frame.seq + self.index_offset, composed.instances)
        if self.stats:
            latency = None if frame.captured_at is None else round((time.time() - frame.captured_at) * 1000, 1)
            self.stats.write(result, frame.pts, frame.seconds, {"latency_ms": latency})

    def stopped_early(self) -> None:
        """The run stops before the input's end: the audio ends where the last frame written does."""
        if self.sink is not None:
            self.sink.audio_to_last_frame = True

    def close(self) -> None:
        self.ordered.close()
        first: Exception | None = None
        for output in (self.sink, *self._side_outputs()):
            try:
                if output is not None:
                    output.close()
            except Exception as exc:  # every output is closed; the first failure is the one told
                first = first or exc
        if first is not None:
            raise first


class AnnotatedImages:
    """One annotated image and one label PNG per input image, each at that image's own size.

    ``target`` is the annotated image's path for a single photo, else a folder that gets ``<stem><suffix>`` per
    image. Both go where `ImageSet.output_paths` says. A pattern's frames are one sequence, as they are made into a
    video: given ``temporal`` and ``tracking``, they are voted on and tracked as a video's frames are (photos, each
    its own picture, are given neither).
    """

    timestamps = None  # images carry no timestamps to repair

    def __init__(self, images: ImageSet, label_set: LabelSet, target: Path, compose: ComposeOptions,
                 masks_dir: Path | None = None, stats_path: Path | None = None, stream_name: str | None = None,
                 temporal: TemporalOptions | None = None, tracking: TrackingOptions | None = None,
                 margin: float = 0.0) -> None:
        self.images = images
        self.ordered = OrderedLabels(label_set, temporal, tracking, margin)
        self.draw_ids = bool(tracking and tracking.enabled and tracking.draw_ids)
        self.recolor = Recolor(label_set, compose)
        self.target = target
        self.masks = MaskWriter(masks_dir or self._image_dir, label_set)
        self._outputs = images.output_paths(target, masks_dir)  # (annotated image, label PNG) per image
        self.stats = StatsWriter(stats_path, stream_name) if stats_path else None
        self.paths: list[Path] = []

    @property
    def _image_dir(self) -> Path:
        return self.target.parent if self.images.single and self.target.suffix else self.target

    def open(self) -> None:
        make_directory(self._image_dir, "output folder")
        self.ordered.open()
        self.masks.open()
        if self.stats:
            self.stats.open()

    def measure(self, frame: Frame, arrays: dict[str, np.ndarray]) -> Flow | None:
        """A pattern's frame's optical flow, as `AnnotatedOutput.measure`; None for photos (nothing is measured
        across them) and for a photo gone since the listing (it is not written)."""
        if frame.picture == (0, 0):
            return None
        return self.ordered.measure(frame.image, arrays["labels"], frame.seq)

    def compose(self, frame: Frame, arrays: dict[str, np.ndarray], result: FrameResult,
                measured: Flow | None = None) -> Composed:
        """As `AnnotatedOutput.compose` (a pattern's frames voted on and tracked on the shared canvas), at the
        image's own size."""
        started = time.perf_counter()
        labels = arrays["labels"]
        if frame.picture != (0, 0):
            labels = _ordered(self.ordered, labels, frame.image, result, measured).labels
        width, height = self.images.sizes[frame.seq]
        image, labels = frame.image[:height, :width], np.ascontiguousarray(labels[:height, :width])
        annotated = self.recolor.process(image, labels)
        if self.draw_ids:
            draw_track_ids(annotated, result.persons)
        result.timings["compose"] = time.perf_counter() - started
        return Composed(frame, labels, annotated, result)

    def emit(self, composed: Composed) -> None:
        """Save the annotated image, its label PNG and its statistics (none for a photo gone missing)."""
        if composed.result.status == "missing":
            return
        seq = composed.frame.seq
        path, mask = self._outputs[seq]
        try:
            saved = write_image(path, composed.annotated)
        except cv2.error as exc:
            raise BadOutputError(f"cannot write {path}: {exc}", hint="use jpg, png, webp, bmp or tiff") from exc
        if not saved:  # OpenCV tells no reason
            if not path.parent.is_dir():
                raise folder_vanished(path.parent)
            raise BadOutputError(f"writing {path} failed", hint="check free disk space and the output folder")
        self.paths.append(path)
        try:
            self.masks.write(seq, composed.labels, mask.stem)
        except BadOutputError:  # the folder can go between the annotated copy and its label PNG
            if not mask.parent.is_dir():
                raise folder_vanished(mask.parent) from None
            raise
        if self.stats:
            self.stats.write(composed.result, None, None, {"image": str(self.images.paths[seq])})

    def stopped_early(self) -> None:
        pass  # photos carry no audio to end with the frames

    def close(self) -> None:
        try:
            self.ordered.close()
            if self.stats:
                self.stats.close()
        finally:  # photos removed (their folder with them) are not written
            self.paths = [path for path in self.paths if path.exists()]
