"""``OUTDIR/manifest.jsonl``: one JSON line per finished input (done or failed), appended as each one ends, so a
killed batch keeps what it finished. The last line of an input wins; a rerun skips an input that is done with the
same configuration and the same file (size and mtime) whose outputs are as it wrote them."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from vidparse.batch.plan import splits_videos
from vidparse.config import Config
from vidparse.errors import BadOutputError, not_writable
from vidparse.names import frame_numbers

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.jsonl"
LOCK_NAME = ".batch.lock"
WRITE_PROBE_NAME = ".batch.probe"
# Keys that change how fast a run goes, never what it writes: not part of the configuration's hash.
EXECUTION_KEYS = ("workers", "threads", "queue_size", "policy", "max_memory_mb", "frame_timeout_s",
                  "worker_niceness", "live", "serve")
EXECUTION_BATCH_KEYS = ("retries", "cpus_per_task")
CUTTING_BATCH_KEYS = ("segment_seconds", "warmup_frames", "split_tracked")  # where and how videos are cut


def config_hash(config: Config) -> str:
    settings = config.to_dict()
    for key in EXECUTION_KEYS:
        settings.pop(key)
    for key in EXECUTION_BATCH_KEYS:
        settings["batch"].pop(key)
    if not splits_videos(config):  # each video runs whole, as `vidparse run` parses it
        for key in CUTTING_BATCH_KEYS:
            settings["batch"].pop(key)
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def input_key(url: str) -> str:
    """What names an input across runs: a local file by its absolute path (``a.mp4``, ``./a.mp4`` and
    ``/data/a.mp4`` are one input; a Ray node reads it there, whatever folder the node started in), a URL as it is."""
    return url if "://" in url else str(Path(url).resolve())


def input_identity(url: str) -> tuple[int, int] | None:
    """(size, mtime in ns) of a local file; None for what cannot be stat'ed."""
    try:
        stat = os.stat(url)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


@dataclass
class Record:
    input: str
    state: str  # done | failed
    outputs: list[str] = field(default_factory=list)
    frames: int = 0
    fps: float = 0.0  # frames over the input's wall time, all its segments together
    seconds: float = 0.0
    segments: int = 0
    attempts: int = 0  # segment runs, retries included
    error: str | None = None
    config_hash: str = ""
    size: int | None = None
    mtime_ns: int | None = None
    video_size: int | None = None  # bytes of the output video as joined; None in manifests written before it was kept

    def skips(self, config_digest: str, masks: bool = False) -> bool:
        """Whether this record lets a rerun skip its input: done, same configuration, same file, outputs as written
        (the label masks among them when ``masks`` are asked for: a folder beside the video)."""
        identity = input_identity(self.input)
        return (self.state == "done" and self.config_hash == config_digest and identity == (self.size, self.mtime_ns)
                and self._outputs_intact()
                and (not masks or any(Path(path).is_dir() for path in self.outputs)))

    def _outputs_intact(self) -> bool:
        """The video (the first output) of its recorded size, or any non-empty one where no size was recorded, and a
        mask folder holding a PNG for each frame."""
        if not self.outputs:
            return False
        video, *folders = (Path(path) for path in self.outputs)
        return self._video_intact(video) and all(self._masks_intact(folder) for folder in folders)

    def _video_intact(self, video: Path) -> bool:
        try:
            size = video.stat().st_size
        except OSError:
            return False
        return size == self.video_size if self.video_size is not None else size > 0

    def _masks_intact(self, folder: Path) -> bool:
        return folder.is_dir() and len(frame_numbers(folder)) == self.frames


class Manifest:
    def __init__(self, outdir: Path) -> None:
        self.path = outdir / MANIFEST_NAME

    def load(self) -> dict[str, Record]:
        """The last record of each input, by `input_key` (a relative spelling from this folder)."""
        records: dict[str, Record] = {}
        if not self.path.exists():
            return records
        names = {f.name for f in dataclasses.fields(Record)}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            try:
                data = json.loads(line)
                record = Record(**{k: v for k, v in data.items() if k in names})
            except (ValueError, TypeError):  # a line cut short by a crash: that input simply runs again
                log.warning("%s line %d is damaged; ignoring it", self.path, number)
                continue
            records[input_key(record.input)] = record
        return records

    def append(self, record: Record) -> None:
        with open(self.path, "a") as file:
            file.write(json.dumps(dataclasses.asdict(record)) + "\n")
            file.flush()
            os.fsync(file.fileno())


@contextmanager
def only_batch_in(outdir: Path) -> Iterator[None]:
    """Hold ``outdir`` for this batch: a second batch writing there would remove the first's segments and write the
    manifest over it. The lock goes with the process, however it ends."""
    if (refused := not_writable(outdir / WRITE_PROBE_NAME)) is not None:  # a lock left there may still open
        raise BadOutputError(f"output folder {outdir} is not writable: {refused.strerror}",
                             hint="give -o a folder this user can write to")
    with open(outdir / LOCK_NAME, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BadOutputError(f"another vidparse batch is writing {outdir}",
                                 hint="wait for it to end, or give this one another -o folder") from None
        yield
