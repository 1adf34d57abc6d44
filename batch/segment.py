"""One segment task: the normal pipeline (jobs.py) on a part of a file, with the CPUs the task was given. Runs in a
thread (`--engine local`) or a Ray worker (`--engine ray`); it resolves the models where it runs.

Every attempt writes into a folder of its own (``video.mp4``, ``masks/``), so an attempt that a dead node left
running can never mix its files with the retry's; the driver keeps the folder of the attempt that succeeded."""

from __future__ import annotations

import functools
import hashlib
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from vidparse.batch.plan import UNBOUNDED, Segment
from vidparse.config import Config
from vidparse.errors import ConfigError, VidparseError
from vidparse.jobs import StreamSpec, build_engine, stream_settings
from vidparse.pipeline.runner import Runner

VIDEO_NAME = "video.mp4"
MASKS_NAME = "masks"
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
CODE_SUFFIXES = (".py", ".onnx")  # the code and the weights shipped with it; the YAML of configs/ below


class SegmentFailed(VidparseError):
    """A segment did not write every one of its frames with labels (worth a retry)."""

    exit_code = 7


@dataclass
class SegmentTask:
    """``parts`` is the driver's folder for the input's segments. With ``gather`` the task writes beside itself and
    sends the files back in its result; otherwise it writes under ``parts`` (a path every node shares)."""

    config: Config
    input_url: str
    segment: Segment
    parts: Path
    masks: bool = False
    gather: bool = False
    cpus: int = 1
    code: str = ""  # the driver's `code_fingerprint`: a node running other code refuses the task


@dataclass
class SegmentResult:
    frames: int
    seconds: float
    folder: Path  # where the attempt wrote (on the driver, once gathered)
    files: dict[str, bytes] | None = None  # gathered: path relative to ``folder`` -> content
    # the input's timestamps (as the output stamps them) of the first and the last frame written: segment 0's first
    # is the file's first, the final segment's last is the file's last decoded frame (`ended_early` needs both)
    first_pts: int | None = None
    last_pts: int | None = None


class Cancel:
    """Cancels a segment running in a thread of this process (`--engine local`): its engine is aborted, now or as
    soon as it exists; the segment then fails as interrupted. Ray cancels its tasks itself."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancelled = False
        self._abort: Callable[[], None] | None = None

    def bind(self, abort: Callable[[], None]) -> None:
        with self._lock:
            self._abort, cancelled = abort, self._cancelled
        if cancelled:
            abort()

    def __call__(self) -> None:
        with self._lock:
            self._cancelled, abort = True, self._abort
        if abort is not None:
            abort()


@functools.cache
def code_fingerprint() -> str:
    """This process's vidparse as `code_digest` sees it (read once)."""
    return code_digest(PACKAGE_ROOT)


def code_digest(root: Path) -> str:
    """A digest of the vidparse installed at ``root``: its packages' code and weights and its configs' YAML (not
    its tests, benchmarks or docs). Two nodes with equal digests run the same vidparse; the models they load (their
    own model folders) and the libraries under it are not compared."""
    digest = hashlib.sha256()
    for path in sorted([*_package_files(root), *(root / "configs").rglob("*.yaml")]):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _package_files(folder: Path) -> list[Path]:
    files = []
    for path in folder.iterdir():
        if path.is_dir() and (path / "__init__.py").is_file():
            files += _package_files(path)
        elif path.suffix in CODE_SUFFIXES and path.is_file():
            files.append(path)
    return files


def run_segment(task: SegmentTask, cancel: Cancel | None = None) -> SegmentResult:
    if task.code and task.code != (here := code_fingerprint()):
        raise ConfigError(f"a segment of {task.input_url} reached node {socket.gethostname()}, whose vidparse differs "
                          f"from the driver's (code {here}, the driver's {task.code}): its labels would not be the "
                          "driver's",
                          hint="install the driver's vidparse (the same checkout or version) on every Ray node")
    attempt = f"{task.segment.number:04d}-{uuid.uuid4().hex[:8]}"
    if not task.gather:
        return _run(task, task.parts / attempt, cancel)
    with tempfile.TemporaryDirectory(prefix="vidparse-segment-") as scratch:
        result = _run(task, Path(scratch), cancel)
        result.files = {str(path.relative_to(scratch)): path.read_bytes()
                        for path in Path(scratch).rglob("*") if path.is_file()}
    result.folder = task.parts / attempt
    return result


def receive(result: SegmentResult) -> Path:
    """The attempt's folder on the driver: gathered files are written there first."""
    for name, content in (result.files or {}).items():
        path = result.folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return result.folder


def _run(task: SegmentTask, folder: Path, cancel: Cancel | None) -> SegmentResult:
    started = time.monotonic()
    folder.mkdir(parents=True, exist_ok=True)
    config = replace(task.config, workers=task.cpus, threads=1)
    segment = task.segment
    stream = StreamSpec(config, task.input_url, folder / VIDEO_NAME, masks_dir=folder / MASKS_NAME if task.masks
                        else None, window=segment.window, write_from=segment.start)
    # The models are resolved in this node's model folder; a segment is a part of a file, never live.
    runner = Runner(build_engine(config, [stream]), stream, stream_settings(config, task.input_url))
    if cancel is not None:
        cancel.bind(runner.engine.abort)
    stats = runner.run()  # raises a failed end's error
    assert runner.end is not None
    sink = runner.output.sink if runner.output is not None else None
    written = sink.frames_written if sink is not None else 0
    # the file's last segment may end early, as `vidparse run` takes a cut file (the driver judges how the file ended)
    short = written < segment.frames and not segment.final
    if not runner.end.ok or stats.degraded or (segment.end != UNBOUNDED and (written > segment.frames or short)):
        what = "wrote" if runner.end.ok else f"was {runner.end.state} after"
        raise SegmentFailed(f"segment {segment.number} of {task.input_url} {what} {written} of {segment.frames} "
                            f"frames{' (degraded: some frames unparsed)' if stats.degraded else ''}",
                            hint="it is retried; see --verbose for the run's log")
    return SegmentResult(written, time.monotonic() - started, folder, first_pts=sink.first_pts if sink else None,
                         last_pts=sink.last_pts if sink else None)
