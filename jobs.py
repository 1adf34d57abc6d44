"""Wiring: which stages a run uses, built from the configuration inside each process; the one place an engine is
built for a run and streams are added to it (`build_engine`, `add_stream`), and the one naming of outputs
(`output_names`). `vidparse run`, the Python API, the service, batch, bench and tune all go through here."""

from __future__ import annotations

import glob
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import numpy as np

from vidparse.config import Config
from vidparse.errors import ConfigError
from vidparse.model_check import check_loadable
from vidparse.model_store import needed_models, resolve_model
from vidparse.names import unique_names
from vidparse.pipeline.cpus import threads_per_worker
from vidparse.pipeline.contracts import OnConnecting, OnEnd, OnOpen, ParserFactory
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.messages import FrameKey
from vidparse.pipeline.settings import PoolSettings, StreamSettings
from vidparse.pipeline.slots import SlotLayout
from vidparse.pipeline.writer import Subscriber
from vidparse.stages.detect import PersonDetector
from vidparse.stages.keyframes import KeyframeParser
from vidparse.stages.images import ImageSet
from vidparse.stages.output import AnnotatedImages, AnnotatedOutput
from vidparse.stages.labels import load_label_set
from vidparse.stages.onnx_session import providers
from vidparse.stages.options import M2fpOptions
from vidparse.stages.parsers import LABEL_SETS, create_parser
from vidparse.stages.person_parser import PersonParser
from vidparse.stages.sink import writes_photos
from vidparse.stages.source import FrameWindow, InputKind, InputLimits, StreamInfo, input_kind, without_credentials
from vidparse.stages.source_spec import SourceSpec
from vidparse.stages.types import FrameResult


@dataclass
class ResolvedModels:
    detector: Path
    parser: Path

    @classmethod
    def for_config(cls, config: Config, check_files: bool = True) -> ResolvedModels:
        """Find the model files up front, check that the parser can run on ``config.device`` and (``check_files``)
        that the files are whole (`check_loadable`), so a missing or damaged model or a device fails before any
        process starts."""
        check_device(config)
        explicit = Path(config.model_path) if config.model_path else None
        models = cls(detector=resolve_model("fastestdet"), parser=resolve_model(config.model, explicit))
        if check_files:
            for name, path in (("fastestdet", models.detector), *needed_models(config.model),
                               (config.model, models.parser)):
                check_loadable(name, path)
        return models


def check_device(config: Config) -> None:
    """A `ConfigError` when the parser's runtime cannot reach ``config.device``: ONNX Runtime without its CUDA
    provider (bodypix, cihp-lite, cihp-net), PyTorch without CUDA (m2fp's eager backend), or m2fp's onnx backend,
    which runs on the CPU only."""
    if config.device == "cpu":
        return
    options = config.parser_options
    if not isinstance(options, M2fpOptions):  # the other parsers are ONNX models
        providers(config.device)
        return
    options.check_device(config.device)
    import torch

    if not torch.cuda.is_available():
        why = "was built without CUDA" if torch.version.cuda is None else "finds no CUDA GPU"
        raise ConfigError(f"--device {config.device}: this PyTorch ({torch.__version__}) {why}",
                          hint="install a CUDA build of PyTorch on a machine with an NVIDIA GPU, or use --device cpu")


def build_person_parser(config: Config, models: ResolvedModels, threads: int | None) -> PersonParser:
    """The per-frame stage (detect, crop, parse, paste) exactly as `vidparse run` uses it."""
    detector = PersonDetector(models.detector, config.detector, threads)
    parser = create_parser(config.model, config.parser_options, models.parser, config.device, threads)
    return PersonParser(detector, parser, config.roi)


class LabelsParser:
    """The per-frame stage as the worker pool runs it: frames of any stream in, the ``labels`` array out (named as
    in `StreamSpec.slot_layout`)."""

    def __init__(self, stage: PersonParser | KeyframeParser) -> None:
        self.stage = stage

    def open(self) -> None:
        self.stage.open()

    def process(self, image: np.ndarray, key: FrameKey, group: int | None) -> tuple[dict[str, np.ndarray], FrameResult]:
        if not image.size:  # a photo that could no longer be read
            return {"labels": np.zeros(image.shape[:2], np.uint8)}, FrameResult(key.seq, status="missing")
        if isinstance(self.stage, KeyframeParser):
            labels, result = self.stage.process(image, key.seq, key.stream, group)
        else:
            labels, result = self.stage.process(image, key.seq)
        return {"labels": labels}, result

    def forget(self, stream: int) -> None:
        if isinstance(self.stage, KeyframeParser):
            self.stage.forget(stream)

    def close(self) -> None:
        self.stage.close()


@dataclass
class ParserSpec:
    """What every worker needs, whatever the stream: pickled into each worker process."""

    config: Config
    models: ResolvedModels

    def make_parser(self, threads: int) -> LabelsParser:
        parser = build_person_parser(self.config, self.models, threads)
        keyframes = self.config.keyframes
        return LabelsParser(parser if keyframes.parse_every == 1 else
                            KeyframeParser(parser, keyframes, self.config.temporal.cut_share))


@dataclass
class StreamSpec:
    """One input and its output, for the main process; its `source_spec()` goes to the stream's source process."""

    config: Config
    input_url: str
    output_path: Path | None  # None: no video or images written (`vidparse.stream`)
    masks_dir: Path | None = None
    stats_path: Path | None = None
    instances_dir: Path | None = None  # per-frame 16-bit PNGs of track ids (tracking must be on)
    max_frames: int | None = None
    images: ImageSet | None = None  # the input is still images (a photo, a folder, a pattern)
    name: str | None = None  # the stream's name in every stats line
    window: FrameWindow | None = None  # read only this part of a file: a `vidparse batch` segment (no audio)
    write_from: int = 0  # the window's first frame written (index in the whole file); earlier ones only warm up
    limits: InputLimits | None = None  # what the input may be (`vidparse serve`'s inputs from callers)

    @property
    def stills(self) -> bool:
        """Photos (not a pattern's frames), each its own picture even made into a video: no person is followed,
        voted on or carried (--parse-every) from one photo to the next."""
        return self.images is not None and not self.images.sequence

    def source_spec(self) -> SourceSpec:
        """What the source process gets: the input alone, so that it imports only what decoding needs."""
        return SourceSpec(self.input_url, self.config.live, self.max_frames, self.window, self.images, self.limits)

    def slot_layout(self, info: StreamInfo) -> SlotLayout:
        # a set of photos knows its number (a video's header may not tell it right): no idle photo-sized slots
        frames = min(info.frames, self.max_frames or info.frames) if self.images and info.frames else None
        return SlotLayout((("image", info.frame_shape, "uint8"), ("labels", info.frame_shape[:2], "uint8")), frames,
                          photos=self.stills and writes_photos(self.output_path))

    def make_output(self, info: StreamInfo) -> AnnotatedOutput | AnnotatedImages:
        if self.images and writes_photos(self.output_path):
            return AnnotatedImages(self.images, load_label_set(LABEL_SETS[self.config.model]), self.output_path,
                                   self.config.compose, masks_dir=self.masks_dir, stats_path=self.stats_path,
                                   stream_name=self.name,
                                   temporal=None if self.stills else self.config.temporal,
                                   tracking=None if self.stills else self.config.tracking,
                                   margin=self.config.roi.margin)
        return AnnotatedOutput(
            info,
            load_label_set(LABEL_SETS[self.config.model]),
            self.output_path,
            self.config.compose,
            # A live input is written fragmented: a killed process still leaves a playable file.
            replace(self.config.output, fragmented=self.config.output.fragmented or info.live),
            # Copying audio opens the input a second time: fine for a file, not for a camera.
            audio_from=self.input_url if info.has_audio and not info.live and not self.window else None,
            audio_to_last_frame=self.max_frames is not None and not (info.frames and self.max_frames >= info.frames),
            masks_dir=self.masks_dir,
            stats_path=self.stats_path,
            temporal=None if self.stills else self.config.temporal,
            tracking=None if self.stills else self.config.tracking,
            margin=self.config.roi.margin,
            instances_dir=self.instances_dir,
            stream_name=self.name,
            warmup=self.write_from - self.window.first_index if self.window else 0,
            index_offset=self.window.first_index if self.window else 0,
        )


def drops_frames(config: Config, input_url: str) -> bool:
    """Whether waiting frames are dropped when the workers fall behind: the default for live inputs."""
    return config.policy == "drop" or (config.policy == "auto" and input_kind(input_url) is not InputKind.FILE)


def pool_settings(config: Config, live: bool) -> PoolSettings:
    """``config``'s workers with its threads each (0: an equal share of the CPUs). ``live`` (any stream drops
    frames): one frame per worker, so a frame never waits behind another in a worker's inbox."""
    workers = config.worker_count
    return PoolSettings(workers=workers, threads=threads_per_worker(workers, config.threads),
                        frame_timeout_s=config.frame_timeout_s, prefetch=1 if live else 2,
                        worker_niceness=config.worker_niceness,
                        max_memory_mb=config.max_memory_mb)


def build_engine(config: Config, specs: Sequence[StreamSpec] = (), live: bool = False, until_idle: bool = True,
                 parser: ParserFactory | None = None) -> Engine:
    """The engine for a run (not started): one pool of ``config``'s workers for every stream. It is live (one frame
    per worker at a time) when ``live`` or any of ``specs`` drops frames; ``until_idle`` as in `Engine`;
    ``parser``: the workers' spec when the models were resolved already (else they are found here, so a missing
    model fails before any process starts)."""
    parser = parser or ParserSpec(config, ResolvedModels.for_config(config))
    live = live or any(drops_frames(spec.config, spec.input_url) for spec in specs)
    return Engine(parser, pool_settings(config, live), until_idle)


def add_stream(engine: Engine, spec: StreamSpec, subscribers: list[Subscriber] | None = None,
               on_open: OnOpen | None = None, on_end: OnEnd | None = None,
               on_connecting: OnConnecting | None = None) -> int:
    """Add one input to ``engine`` with the stream settings its kind wants (`stream_settings`)."""
    return engine.add_source(spec, stream_settings(spec.config, spec.input_url, spec.stills), subscribers,
                             on_open=on_open, on_end=on_end, on_connecting=on_connecting)


# A URL's name is cut to this: a signed URL's query runs to hundreds of characters, and the name with the suffixes
# added to it (a segment's start time, `_2`, `_masks`) must stay a file name (255 bytes).
URL_NAME_CHARS = 120


def stream_name(input: str) -> str:
    """A file's stem; a pattern's folder; for a URL, its host, path (a file's without its suffix, as a file is
    named) and query, secrets left out (`without_credentials`), with anything but letters, digits, '-' and '.' as '_'
    (its first `URL_NAME_CHARS`)."""
    if "://" in input:
        shown = without_credentials(input)
        try:
            url = urlsplit(shown)
        except ValueError:  # malformed ('rtsp://[::1:554/x'): named as typed, and opening it says what is wrong
            shown = shown.split("://", 1)[1]
        else:
            stem = url.path.removesuffix(PurePosixPath(url.path).suffix)
            shown = url._replace(scheme="", path=stem).geturl().removeprefix("//")
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", shown)
        return name[:URL_NAME_CHARS].strip("_") or "stream"
    path = Path(input.rstrip("/"))
    # a pattern of photos: named by its folder, as a folder is; a file named like one ("clip [1080p].mp4") by its stem
    if (glob.has_magic(path.name) or "%" in path.name) and not path.is_file():
        return Path(path.parent).resolve().name or "photos"
    return path.stem or "stream"


def output_names(inputs: Sequence[str]) -> list[str]:
    """What each input's outputs are named after, the same for `vidparse run` and `vidparse batch`: `stream_name`,
    and ``_2``, ``_3``... for a name that repeats (in input order)."""
    return unique_names([stream_name(input) for input in inputs])


def stream_settings(config: Config, input_url: str, stills: bool = False) -> StreamSettings:
    """Settings for this input: live inputs drop the oldest waiting frame; every source has a watchdog; ``stills``
    (`StreamSpec.stills`): with --parse-every, each photo is a keyframe."""
    watchdog = config.frame_timeout_s
    if input_kind(input_url) is not InputKind.FILE:
        options = config.live
        # Longer than a stall plus the slowest reconnect attempt, so the watchdog never fights the reconnect loop.
        watchdog = options.read_timeout_s + options.open_timeout_s + options.backoff_max_s + 5
    # Dropped frames break fixed groups: the parser then carries from the stream's latest frame it saw.
    # a URL over HTTP names a stream or a file; the source tells which when it opens (a file has a duration)
    return StreamSettings(queue_size=config.queue_size, drop_oldest=drops_frames(config, input_url),
                          drop_only_if_live=config.policy == "auto" and input_kind(input_url) is InputKind.HTTP,
                          source_timeout_s=watchdog,
                          group_size=config.keyframes.parse_every, stills=stills)
