"""Recorded parses: each frame of a clip parsed once and kept in a file, then read back for measuring what comes
after the parser (smoothing), or replayed by a parser that costs nothing, to find the pipeline's own ceiling."""

from __future__ import annotations

import copy
import logging
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidparse.config import Config
from vidparse.errors import BadInputError
from vidparse.evaluation.runs import parsed_frames
from vidparse.jobs import ResolvedModels
from vidparse.pipeline.messages import FrameKey
from vidparse.stages.types import FrameResult

log = logging.getLogger(__name__)


@dataclass
class Recording:
    """Frame ``i``'s labels (``labels[i]``, H x W class ids) and its result (persons found, with their boxes)."""

    labels: np.ndarray
    results: list[FrameResult]

    def __len__(self) -> int:
        return len(self.results)


def record(config: Config, models: ResolvedModels, url: str, frames: int, path: Path, threads: int | None = None,
           on_frame: Callable[[], None] | None = None) -> Recording:
    """Parse the first ``frames`` frames of ``url`` as `vidparse run` parses them and save them to ``path``."""
    labels, results = [], []
    for _, frame_labels, result in parsed_frames(config, models, url, frames, threads, on_frame):
        labels.append(frame_labels)
        results.append(result)
    recording = Recording(np.stack(labels), results)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:  # an open file: savez would add ".npz" to a name without it
        np.savez_compressed(file, labels=recording.labels,
                            results=np.frombuffer(pickle.dumps(results), np.uint8))
    return recording


def recorded(config: Config, url: str, frames: int, path: Path | None = None) -> Path:
    """The file holding the first ``frames`` parses of ``url`` with ``config``'s model: ``path``, or one in the
    temporary folder named by the video, model and frames; recorded first when it does not exist yet."""
    path = path or Path(tempfile.gettempdir()) / f"vidparse-replay-{Path(url).stem}-{config.model}-{frames}.npz"
    if not path.exists():
        log.info("recording %d parses of %s with %s into %s", frames, url, config.model, path)
        record(config, ResolvedModels.for_config(config), url, frames, path)
    return path


def load_recording(path: Path) -> Recording:
    try:
        with np.load(path) as saved:
            return Recording(saved["labels"], pickle.loads(saved["results"].tobytes()))
    except (OSError, KeyError, ValueError, pickle.UnpicklingError) as exc:
        raise BadInputError(f"cannot read the recorded parses {path}: {exc}",
                            hint="delete it to record them again") from exc


@dataclass
class ReplaySpec:
    """A parser factory (as `jobs.ParserSpec`) whose workers answer each frame with its recorded parse: frame
    ``seq`` gets recording ``seq % len``, so a clip longer than the recording repeats it."""

    path: Path

    def make_parser(self, threads: int) -> ReplayParser:
        return ReplayParser(self.path)


class ReplayParser:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._recording: Recording | None = None

    def open(self) -> None:
        self._recording = load_recording(self.path)

    def process(self, image: np.ndarray, key: FrameKey, group: int | None
                ) -> tuple[dict[str, np.ndarray], FrameResult]:
        assert self._recording is not None, "open() first"
        index = key.seq % len(self._recording)
        result = copy.deepcopy(self._recording.results[index])
        result.seq, result.timings = key.seq, {}
        return {"labels": self._recording.labels[index]}, result

    def forget(self, stream: int) -> None:
        pass

    def close(self) -> None:
        self._recording = None
