"""The Python API: parse photos and arrays, draw the overlay, stream video through the worker pool.

Images go in and come out as RGB ``uint8`` arrays (H x W x 3), as PIL, matplotlib and most Python imaging code
use them; inside the stages they are BGR, as OpenCV and FFmpeg use them. Errors are `vidparse.errors.VidparseError`
subclasses, each with a ``message``, a ``hint`` and the CLI's ``exit_code``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import cv2
import numpy as np

from vidparse.config import Config, config_from, load_config, merge, user_settings
from vidparse.errors import BadInputError
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.pipeline.cpus import threads_per_worker
from vidparse.stages.images import load_upright
from vidparse.stages.recolor import Recolor
from vidparse.stages.types import LabelSet, PersonStats

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
    if isinstance(config, Config):
        return config_from(merge(config.to_dict(), user_settings(None, overrides)))
    return load_config(Path(config) if config is not None else None, overrides)


def _bgr(image: ImageInput) -> np.ndarray:
    """An image path (EXIF orientation applied) or an RGB array (H x W, H x W x 3 or H x W x 4, uint8) as BGR."""
    if isinstance(image, (str, Path)):
        path = Path(image)
        if not path.is_file():
            raise BadInputError(f"image {path} does not exist", hint="check the path")
        return load_upright(path)
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.size == 0:
        raise BadInputError(f"cannot parse {type(image).__name__} {getattr(image, 'dtype', '')}".rstrip(),
                            hint="give a path or a non-empty uint8 RGB array of shape H x W x 3")
    channels = 1 if image.ndim == 2 else image.shape[2] if image.ndim == 3 else 0
    conversion = {1: cv2.COLOR_GRAY2BGR, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGR}.get(channels)
    if conversion is None:
        raise BadInputError(f"cannot parse an array of shape {image.shape}",
                            hint="give H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA)")
    return cv2.cvtColor(np.ascontiguousarray(image), conversion)


class Parser:
    """Parses images one at a time in this process, with the models loaded once.

    ``model``: ``cihp-lite`` (default), ``bodypix``, ``m2fp`` or ``m2fp-single``; ``model_dir``: an explicit model
    file or folder; ``config`` and ``overrides`` as in `resolve_config`. The models load on the first `parse`
    (or on ``open``); `close` frees them. A context manager::

        with vidparse.Parser(model="bodypix") as parser:
            parsings = [parser.parse(path) for path in paths]
    """

    def __init__(self, model: str | None = None, config: ConfigInput = None, model_dir: str | Path | None = None,
                 **overrides: Any) -> None:
        self.config = resolve_config(config, model=model, model_path=str(model_dir) if model_dir else None,
                                     **overrides)
        self.models = ResolvedModels.for_config(self.config)  # a missing model fails here, not at the first image
        self._stage: Any = None

    def open(self) -> None:
        """Load the models (`parse` does it when needed)."""
        if self._stage is None:
            stage = build_person_parser(self.config, self.models, threads_per_worker(1, self.config.threads))
            stage.open()
            self._stage = stage

    @property
    def label_set(self) -> LabelSet:
        """The classes this parser's labels index (loads the models)."""
        self.open()
        return self._stage.label_set

    def parse(self, image: ImageInput) -> Parsing:
        """Parse one image: a path (jpg, png, webp, bmp, tiff; EXIF orientation applied) or an RGB ``uint8``
        array of any size. Raises `BadInputError` for anything else."""
        bgr = _bgr(image)
        self.open()
        labels, result = self._stage.process(bgr)
        return Parsing(labels=labels, persons=result.persons, label_set=self._stage.label_set)

    def close(self) -> None:
        """Free the models; a later `parse` loads them again."""
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
    rgb = np.ascontiguousarray(_bgr(image)[:, :, ::-1])
    if rgb.shape[:2] != parsing.labels.shape:
        raise BadInputError(f"image is {rgb.shape[1]}x{rgb.shape[0]} but its labels are "
                            f"{parsing.labels.shape[1]}x{parsing.labels.shape[0]}",
                            hint="annotate the image that was parsed")
    options = resolve_config(**{"compose.alpha": alpha, "compose.legend": legend}).compose  # validated, YAML defaults
    rgb_colors = replace(parsing.label_set, colors=parsing.palette)  # Recolor blends in the image's channel order
    return Recolor(rgb_colors, options).process(rgb, parsing.labels)
