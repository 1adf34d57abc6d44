"""The Python API: parse photos and arrays, draw the overlay, stream video through the worker pool.

Images go in and come out as RGB ``uint8`` arrays (H x W x 3), as PIL, matplotlib and most Python imaging code
use them; inside the stages they are BGR, as OpenCV and FFmpeg use them. Errors are `vidparse.errors.VidparseError`
subclasses, each with a ``message``, a ``hint`` and the CLI's ``exit_code``; they name this API's arguments and
config keys, where the CLI's name its flags (`vidparse.api_words`).
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np
from PIL import UnidentifiedImageError

from vidparse.api_words import STREAM_NAMES, api_words, in_api_words, reworded
from vidparse.config import Config, config_from, load_config, merge, user_settings
from vidparse.errors import BadInputError, ConfigError, VidparseError
from vidparse.jobs import ResolvedModels, StreamSpec, add_stream, build_engine, build_person_parser
from vidparse.pipeline.cpus import threads_per_worker
from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.writer import Written
from vidparse.runs import (RunOutcome, Source, check_source, checked_max_frames, files_read,
                           no_empty_folder_left_on_error, path_or_folder, run_sources, sources_for,
                           warn_if_oversubscribed, written_twice)
from vidparse.runs import StreamOutcome as StreamOutcome  # a RunOutcome's streams: `vidparse.StreamOutcome`
from vidparse.stages.images import load_upright
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.recolor import Recolor
from vidparse.stages.types import LabelSet, PersonStats

log = logging.getLogger(__name__)

ImageInput = Union[str, Path, np.ndarray]
ConfigInput = Union[str, Path, Config, None]


@dataclass
class Parsing:
    """What parsing one image gives.

    ``labels``: H x W ``uint8`` class ids at the image's own size (0 is background), indexing ``label_set.names``.
    ``persons``: one `PersonStats` per person found, most confident first: ``box`` (x1, y1, x2, y2 in pixels),
    ``score``, ``part_pixels`` (class name -> pixels), ``track_id`` (video with tracking on; else None).
    ``label_set``: the classes (``names``; ``colors`` is BGR, `palette` the same colors as RGB).
    """

    labels: np.ndarray
    persons: list[PersonStats]
    label_set: LabelSet

    @property
    def names(self) -> tuple[str, ...]:
        """Class names; ``names[i]`` is the class of label ``i``."""
        return self.label_set.names

    @property
    def palette(self) -> np.ndarray:
        """Class colors as an N x 3 ``uint8`` RGB array (row ``i`` is label ``i``'s color)."""
        return self.label_set.colors[:, ::-1].copy()


def resolve_config(config: ConfigInput = None, **overrides: Any) -> Config:
    """A validated `Config`: ``config`` (a YAML path, a preset name such as ``"fast"``, a `Config`, or None for
    the defaults) with ``overrides`` on top. Overrides use the YAML keys: ``workers=2``, ``roi={"margin": 0.2}``
    or, as in ``**{"roi.margin": 0.2}``, dotted keys; None values are ignored. Raises `ConfigError`."""
    with api_words():
        if isinstance(config, Config):
            return config_from(merge(config.to_dict(), user_settings(None, overrides)))
        if config is not None and not isinstance(config, (str, Path)):
            raise ConfigError(f"config must be a YAML file, a preset name or a Config, got {type(config).__name__}",
                              hint="give settings as keyword arguments: roi={'margin': 0.2}, or **settings for a dict")
        return load_config(Path(config) if config is not None else None, overrides)


def _bgr(image: ImageInput) -> np.ndarray:
    """An image path (EXIF orientation applied) or an RGB array (H x W, H x W x 3 or H x W x 4, uint8) as BGR."""
    if isinstance(image, str) and "://" in image:
        raise BadInputError(f"image {image} is a URL: Parser.parse reads local files and arrays",
                            hint="download it first, or give its bytes decoded as an array")
    if isinstance(image, (str, Path)):
        path = Path(image)
        if path.is_dir():
            raise BadInputError(f"image {path} is a folder", hint="give one image file; vidparse.run parses folders")
        if not path.is_file():
            raise BadInputError(f"image {path} does not exist", hint="check the path")
        return _photo(path)
    if not isinstance(image, np.ndarray):
        raise BadInputError(f"cannot parse {type(image).__name__}", hint="give a path or a uint8 RGB array of shape "
                            "H x W x 3 (a PIL image: np.asarray(image.convert('RGB')))")
    if image.dtype != np.uint8:
        raise BadInputError(f"cannot parse an array of {image.dtype}",
                            hint="give uint8 values 0-255 (floats in 0-1: (image * 255).round().astype(np.uint8))")
    if image.size == 0:
        raise BadInputError(f"cannot parse an empty array (shape {image.shape})",
                            hint="give an image at least 1 pixel high and wide")
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    conversion = {1: cv2.COLOR_GRAY2BGR, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGR}.get(channels)
    if conversion is None:
        raise BadInputError(f"cannot parse an array of shape {image.shape}",
                            hint="give H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA)")
    return cv2.cvtColor(np.ascontiguousarray(image), conversion)


def _photo(path: Path) -> np.ndarray:
    """A photo file as BGR. A file of no image format PIL knows is most often a video given by mistake: it is told
    where videos go, not only that it may be damaged."""
    try:
        return load_upright(path)
    except BadInputError as exc:
        if not isinstance(exc.__cause__, UnidentifiedImageError):
            raise
        raise BadInputError(exc.message, hint="give a jpg, png, webp, bmp or tiff (or this one is damaged); "
                                              "vidparse.stream and vidparse.run parse videos") from exc.__cause__


class Parser:
    """Parses images one at a time in this process, with the models loaded once. One parser may be shared by
    threads: their calls take turns (its models hold state for the call, as TFLite's interpreter does).

    ``model``: ``cihp-net`` (default), ``cihp-lite``, ``bodypix``, ``m2fp`` or ``m2fp-single``; ``model_dir``: an explicit model
    file or folder; ``config`` and ``overrides`` as in `resolve_config`. The models load on the first `parse`
    (or on ``open``); `close` frees them. A context manager::

        with vidparse.Parser(model="bodypix") as parser:
            parsings = [parser.parse(path) for path in paths]
    """

    def __init__(self, model: str | None = None, config: ConfigInput = None, model_dir: str | Path | None = None,
                 **overrides: Any) -> None:
        self.config = resolve_config(config, model=model, model_path=_model_path(model_dir),
                                     **overrides)
        with api_words():
            self.models = ResolvedModels.for_config(self.config)  # a missing model fails here, not at the first image
        self._stage: Any = None
        # Calls from several threads take turns: cihp-net's TFLite segmenter raised RuntimeError ("There is at least
        # 1 reference to internal data") when two threads parsed at once.
        self._lock = threading.RLock()

    def open(self) -> None:
        """Load the models (`parse` does it when needed)."""
        with self._lock:
            if self._stage is None:
                with api_words():
                    stage = build_person_parser(self.config, self.models, threads_per_worker(1, self.config.threads))
                    stage.open()
                self._stage = stage

    @property
    def label_set(self) -> LabelSet:
        """The classes this parser's labels index (loads the models)."""
        with self._lock:
            self.open()
            return self._stage.label_set

    def parse(self, image: ImageInput) -> Parsing:
        """Parse one image: a path (jpg, png, webp, bmp, tiff; EXIF orientation applied) or an RGB ``uint8``
        array of any size. Raises `BadInputError` for anything else."""
        bgr = _bgr(image)  # read and checked outside the turns
        with self._lock:
            self.open()
            labels, result = self._stage.process(bgr)
            return Parsing(labels=labels, persons=result.persons, label_set=self._stage.label_set)

    def close(self) -> None:
        """Free the models (once a call under way in another thread has ended); a later `parse` loads them
        again."""
        with self._lock:
            if self._stage is not None:
                stage, self._stage = self._stage, None
                stage.close()

    def __enter__(self) -> Parser:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_image(image: ImageInput, model: str | None = None, config: ConfigInput = None,
                model_dir: str | Path | None = None, **overrides: Any) -> Parsing:
    """Parse one image (a path or an RGB array) with models loaded for this call only; use `Parser` for many.
    Arguments as for `Parser`."""
    with Parser(model=model, config=config, model_dir=model_dir, **overrides) as parser:
        return parser.parse(image)


def annotate(image: ImageInput, parsing: Parsing, alpha: float | None = None, legend: bool = False) -> np.ndarray:
    """The overlay alone: ``image`` (RGB array or path) with each labelled pixel blended with its class color
    (``alpha``: the color's weight, default ``compose.alpha`` of the defaults), optionally with a legend of the
    classes present. Returns a new RGB ``uint8`` array; ``parsing.labels`` must have the image's height and width."""
    if not isinstance(parsing, Parsing):  # the labels array alone, or the arguments swapped
        raise BadInputError(f"annotate needs the image's Parsing, got {type(parsing).__name__}",
                            hint="parsing = parser.parse(image), then vidparse.annotate(image, parsing)")
    rgb = np.ascontiguousarray(_bgr(image)[:, :, ::-1])
    if rgb.shape[:2] != parsing.labels.shape:
        raise BadInputError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but its labels are "
                            f"{parsing.labels.shape[1]}x{parsing.labels.shape[0]}",
                            hint="annotate the image that was parsed")
    try:  # validated as the config's keys are, and named as this function's arguments
        options = resolve_config(None, **{"compose.alpha": alpha, "compose.legend": legend}).compose
    except ConfigError as exc:
        argument = {"compose.alpha": "alpha", "compose.legend": "legend"}.get(exc.key or "")
        if argument is None:
            raise
        raise ConfigError(exc.message.replace(f"config key '{exc.key}'", argument),
                          hint=exc.hint and exc.hint.replace(f"set {exc.key} to", f"give {argument}")
                          .replace(f"write {exc.key} as", f"give {argument} as"), key=exc.key) from None
    rgb_colors = replace(parsing.label_set, colors=parsing.palette)  # Recolor blends in the image's channel order
    return Recolor(rgb_colors, options).process(rgb, parsing.labels)


@dataclass
class StreamFrame(Parsing):
    """One parsed frame of `stream`: a `Parsing` (labels, persons with track ids when tracking is on, label set)
    plus where it came from. ``stream`` is the source's index in the list given to `stream` and ``source`` its
    input (for a folder or pattern of photos, the photo's path); ``seq`` counts the source's frames from 0; ``pts`` is the frame's timestamp in the source's time base
    and ``time_s`` the same in seconds (None when the source has none, as a photo or a folder of photos: a
    pattern's frames are 25 fps); ``image`` is the frame, RGB."""

    stream: int
    source: str
    seq: int
    pts: int | None
    time_s: float | None
    image: np.ndarray


class Stream:
    """The frames of `stream`, as they are written: an iterator, and a context manager that stops the run on exit.

    `close` (from any thread), the end of a ``with`` block or dropping the object stops the pipeline: the processes
    end and the outputs are closed with what was written (leaving a loop over ``stream(...)`` itself drops it). A source that fails (unreachable, lost for good,
    damaged) stops alone, with a logged warning, and lands in `failed`; once every source has ended, the loop
    raises the first failure's `VidparseError`. What stops every source (workers that cannot start) raises at
    once."""

    def __init__(self, engine: Engine, specs: list[StreamSpec], settings: Config) -> None:
        self.failed: dict[int, Exception] = {}  # source index -> why it stopped
        self._engine = engine
        self._frames = self._run(engine, specs, settings, self.failed)  # holds no reference to self: no cycle

    @staticmethod
    def _run(engine: Engine, specs: list[StreamSpec], settings: Config, failed: dict[int, Exception]
             ) -> Generator[StreamFrame, None, None]:
        written_frames = engine.results()
        label_set = load_label_set(LABEL_SETS[settings.model])
        with api_words(STREAM_NAMES):
            try:
                for index, spec in enumerate(specs):
                    add_stream(engine, spec, on_end=_ender(index, failed))
                engine.start()
                for written in written_frames:
                    if written.result.status != "missing":  # a photo gone since its folder was listed (logged)
                        yield _stream_frame(written, specs[written.stream], label_set)
            finally:
                written_frames.close()  # aborts a run that is still going, and waits for its processes
            if failed:
                raise next(iter(failed.values()))

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> StreamFrame:
        return next(self._frames)

    def close(self) -> None:
        """Stop the run (if it still goes) and wait for its processes to end. From another thread than the loop's
        (a watchdog, a stop button), the loop then ends as if the sources had."""
        if inspect.getgeneratorstate(self._frames) == inspect.GEN_CREATED:  # never iterated: nothing started
            self._frames.close()
            return
        # Not by closing the generator: a loop in another thread may be inside it (or about to be); it ends by
        # itself once the engine has, and so does the loop here.
        self._engine.abort()
        self._engine.wait()

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ender(index: int, failed: dict[int, Exception]) -> Callable[[StreamEnd], None]:
    def ended(end: StreamEnd) -> None:
        if end.failed_alone:  # what ended every source is raised, not said once per source
            log.warning("source %d failed: %s", index, reworded(end.message or str(end.error), STREAM_NAMES))
        if end.error is not None:
            failed[index] = in_api_words(end.error, STREAM_NAMES) if isinstance(end.error, VidparseError) \
                else end.error

    return ended


def _stream_frame(written: Written, spec: StreamSpec, label_set: LabelSet) -> StreamFrame:
    image, labels = written.frame.image, written.labels  # copies already (`Engine.results`)
    source = spec.input_url
    if spec.images is not None:  # photos share a canvas as large as the largest: back to this one's size
        width, height = spec.images.sizes[written.frame.seq]
        image, labels = image[:height, :width], labels[:height, :width]
        source = str(spec.images.paths[written.frame.seq])
    persons = sorted(written.result.persons, key=lambda person: -person.score)  # tracking lists them by track
    # Photos (not a pattern's frames) have no clock, as their stats lines say (pts and time_s null): the 25 fps
    # the pipeline numbers them by is no time of theirs.
    pts, seconds = (None, None) if spec.stills else (written.frame.pts, written.frame.seconds)
    return StreamFrame(labels=np.ascontiguousarray(labels), persons=persons, label_set=label_set,
                       stream=written.stream, source=source, seq=written.frame.seq, pts=pts,
                       time_s=seconds, image=cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def _inputs(sources: str | Path | Sequence[str | Path], what: str = "inputs") -> list[str]:
    """``what``: the argument's name in the call (`run`'s inputs, `stream`'s sources)."""
    if isinstance(sources, (str, Path)):
        return [str(sources)]
    if not isinstance(sources, Sequence) or not all(isinstance(source, (str, Path)) for source in sources):
        raise ConfigError(f"{what} must be a path or URL, or a list of them; got {sources!r}",
                          hint='e.g. "clip.mp4" or ["a.mp4", "rtsp://camera/1"]')
    if not sources:  # run would write nothing and say "ok"; stream would blame the outputs
        raise ConfigError("no input given", hint='e.g. "clip.mp4" or ["a.mp4", "rtsp://camera/1"]')
    return [str(source) for source in sources]


def _path(value: str | Path | None, what: str, folder_slash: bool = False, example: str | None = None) -> Path | None:
    """``value`` as a path; ``folder_slash``: a trailing slash asks for a folder, made here, as the CLI's -o does;
    ``example``: what the hint shows (default: ``what="parsed/what"``)."""
    if value is not None and not isinstance(value, (str, Path)):
        example = example or f'{what}="parsed/{what}"'
        raise ConfigError(f"{what} must be a path, got {value!r}", hint=f"e.g. {example}")
    if folder_slash:
        return path_or_folder(value)
    return None if value is None else Path(value)


def _model_path(model_dir: str | Path | None) -> str | None:
    """``model_dir`` as the config's ``model_path``, refused as the other paths are when it is none."""
    _path(model_dir, "model_dir", example='model_dir="models/"')
    return str(model_dir) if model_dir else None


def stream(sources: str | Path | Sequence[str | Path], model: str | None = None, workers: int | None = None,
           config: ConfigInput = None, outputs: str | Path | Sequence[str | Path | None] | None = None,
           max_frames: int | None = None, model_dir: str | Path | None = None, **overrides: Any) -> Stream:
    """Parse one or more videos (files, ``rtsp://`` and other URLs FFmpeg opens, ``/dev/videoN``) on one pool of
    ``workers`` parser processes, yielding every written frame as a `StreamFrame`, each source's in order::

        for frame in vidparse.stream(["a.mp4", "rtsp://camera/1"], workers=2):
            print(frame.stream, frame.seq, len(frame.persons))

    ``outputs``: one annotated video per source (None, or a None entry: none written). Frames wait in a small
    bounded queue, so memory stays bounded however slow the loop is (files wait; live sources drop their oldest
    frames, as ``policy: auto`` says). Other arguments as for `Parser`; ``max_frames`` (a whole number >= 1) stops
    each source after that many frames. Inputs, outputs (two sources writing one file, an output over another
    source's input), models and settings are checked before any process starts."""
    with api_words(STREAM_NAMES):
        inputs = _inputs(sources, "sources")
        paths = [outputs] if outputs is None or not isinstance(outputs, Sequence) or isinstance(outputs, str) \
            else list(outputs)
        if len(paths) == 1 and len(inputs) > 1 and paths[0] is None:
            paths = paths * len(inputs)
        if len(paths) != len(inputs):
            raise ConfigError(f"{len(inputs)} sources but {len(paths)} outputs",
                              hint="give one output (or None) per source, or no outputs")
        settings = resolve_config(config, model=model, workers=workers, model_path=_model_path(model_dir),
                                  **overrides)
        limit = checked_max_frames(max_frames)
        sources_given = [Source(url, _path(path, "outputs", example='outputs=["a.mp4", None]'), max_frames=limit)
                         for url, path in zip(inputs, paths)]
        if (repeated := written_twice(sources_given)) is not None:
            raise ConfigError(f"two sources write {repeated}", hint="give each source its own output, or None")
        read = files_read(sources_given)  # no output may replace what another source reads
        specs = [check_source(source, settings, read, partial(reworded, names=STREAM_NAMES)) for source in sources_given]
        warn_if_oversubscribed(settings.worker_count)  # as `vidparse run` and `vidparse.run` warn
        return Stream(build_engine(settings, specs), specs, settings)


def run(inputs: str | Path | Sequence[str | Path], output: str | Path, model: str | None = None,
        workers: int | None = None, config: ConfigInput = None, masks: str | Path | None = None,
        stats: str | Path | None = None, instances: str | Path | None = None, max_frames: int | None = None,
        model_dir: str | Path | None = None, check: bool = True, **overrides: Any) -> RunOutcome:
    """What ``vidparse run INPUT... -o OUTPUT`` does, without the progress bar: one input writes ``output`` (a
    video, an image or a folder of images); several write ``output/<name>.mp4`` each, on one pool of workers.
    ``masks``, ``stats`` and ``instances`` as the CLI's ``--masks``, ``--stats`` and ``--instances``; other
    arguments as for `Parser`.

    Returns a `RunOutcome`: per stream its statistics, files and error, and the CLI's ``exit_code``. A source that
    fails stops alone; with ``check`` (the default) the first failure is raised once every stream has ended.
    Ctrl-C, SIGTERM or SIGHUP (in the main thread) finishes the frames in flight and closes the files, then raises
    KeyboardInterrupt, so that a loop over many calls stops too."""
    if not isinstance(check, bool):  # check="no" is truthy: it would raise the failures it was meant to return
        raise ConfigError(f"check must be True or False, got {check!r}",
                          hint="check=False returns a failed input's error in the outcome instead of raising it")
    settings = resolve_config(config, model=model, workers=workers, model_path=_model_path(model_dir),
                              **overrides)
    typed = (value if isinstance(value, (str, Path)) else None for value in (output, stats, masks, instances))
    with no_empty_folder_left_on_error(*typed):
        with api_words():
            inputs_given = _inputs(inputs)
            target = _path(output, "output", folder_slash=True, example='output="out.mp4"')
            if target is None:
                raise ConfigError("no output given", hint='output="out.mp4" (a folder for several inputs)')
            outcome = run_sources(settings, sources_for(inputs_given, target, _path(masks, "masks"),
                                                        _path(stats, "stats", folder_slash=True),
                                                        _path(instances, "instances"), max_frames), words=reworded)
        for stream in outcome.failed:
            if isinstance(stream.error, VidparseError):
                in_api_words(stream.error)
        if outcome.interrupted:  # before any stream's failure: a loop over many calls stops, whatever else it catches
            raise KeyboardInterrupt
        if check and (error := next((s.error for s in outcome.failed if s.error is not None), None)) is not None:
            raise error
    return outcome
