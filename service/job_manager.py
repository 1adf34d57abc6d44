"""Jobs: a video (uploaded, an allowed file, or a URL) parsed by the service's engine into an MP4, masks and
per-frame statistics, with progress, fps and ETA. Finished jobs expire after ``serve.job_ttl_s``, and the oldest
go first while the data dir holds more than ``serve.max_data_mb``. Each job's folder keeps its record (``job.json``,
written when it starts and when it ends), from which a server started again on the same data dir finds it."""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal

from pydantic import TypeAdapter

from vidparse.config import Config
from vidparse.jobs import StreamSpec
from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.stats import RunStats
from vidparse.service.engine import EngineHost
from vidparse.service.errors import ApiError, not_found
from vidparse.service.inputs import InputPolicy
from vidparse.service.metrics import Metrics, StreamMetrics
from vidparse.service.uploads import MB
from vidparse.stages.source import without_credentials

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
RESULT = "result.mp4"
STATS = "stats.jsonl"
MASKS = "masks"
RECORD = "job.json"
END_STATES = {"ok": "done", "failed": "failed", "cancelled": "cancelled", "interrupted": "interrupted"}  # by StreamEnd


# What a caller is told when a URL's job or stream fails, whatever happened (refused, timed out, a 401, not a
# video): nothing about which hosts and ports answer. The server log has the reason.
URL_FAILURE = "the URL could not be read; the server log says why"

# The error of a job whose record an earlier server left saying it was queued or running (killed, not stopped)
STOPPED = "the server stopped while the job ran (its MP4, if it has one, plays up to its last written second)"


def failure(end: StreamEnd) -> str:
    """Why a stream failed (its own error, or what ended the engine), without credentials."""
    return without_credentials(end.message or "")


def new_id() -> str:
    """Unguessable: a job's or stream's id is what lets a client see it."""
    return secrets.token_hex(12)


@dataclass
class Job:
    id: str
    source: str  # "upload" or the path or URL asked for
    directory: Path
    state: str = "queued"
    frames: int = 0
    dropped: int = 0  # frames a live input's drop policy let go to keep up (counted by max_frames too)
    total: int | None = None  # frames the input holds (None: unknown, or live)
    error: str | None = None
    created_at: float = field(default_factory=time.time)  # wall clock
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    ended_at: float | None = None  # monotonic
    engine: Engine | None = None
    stream: int | None = None
    downloads: int = 0  # responses sending its files; a deleted job's files go when the last one ends
    removed: bool = False
    cancel_asked: bool = False  # a DELETE came while it was active: "cancelling" until it ends

    @property
    def result_path(self) -> Path:
        return self.directory / RESULT

    def describe(self) -> dict[str, Any]:
        fps = None
        if self.first_frame_at is not None and self.last_frame_at and self.frames > 1:
            running = self.last_frame_at - self.first_frame_at
            fps = round((self.frames - 1) / running, 2) if running > 0 else None
        progress = None if not self.total else round(min(1.0, self.frames / self.total), 4)
        state = "cancelling" if self.cancel_asked and self.state in ACTIVE else self.state
        eta = None
        if state == "running" and fps and self.total:  # a cancelling job stops before its end
            eta = round(max(0, self.total - self.frames) / fps, 1)
        finished = self.state in ("done", "cancelled", "interrupted") and self.result_path.exists()
        return {"id": self.id, "state": state, "source": without_credentials(self.source), "frames": self.frames,
                "dropped": self.dropped, "total": self.total,
                "progress": 1.0 if self.state == "done" else progress, "fps": fps, "eta_s": eta, "error": self.error,
                "result": f"/v1/jobs/{self.id}/result" if finished else None}


@dataclass
class JobRecord:
    """What a job's folder keeps of it (``job.json``), for a server started again on the same data dir. Times are
    wall clock: the monotonic clock starts again with the machine."""
    id: str
    source: str  # without credentials: the record is only shown
    state: Literal["queued", "running", "done", "failed", "cancelled", "interrupted"]
    frames: int
    dropped: int
    total: int | None
    error: str | None
    created_at: float
    ended_at: float | None
    # recorded at the first frame and at the end (its fps); a killed job's last frame is its stats' last write
    first_frame_at: float | None = None
    last_frame_at: float | None = None


RECORDS = TypeAdapter(JobRecord)


def write_record(job: Job, state: str, ended_at: float | None) -> None:
    """The job's record as of ``state``, replacing the last one whole."""
    record = JobRecord(job.id, without_credentials(job.source), state,  # type: ignore[arg-type]  # a job state
                       job.frames, job.dropped, job.total, job.error, job.created_at, ended_at,
                       wall_of(job.first_frame_at), wall_of(job.last_frame_at))
    with written_whole(job.directory / RECORD, "w") as file:
        json.dump(asdict(record), file)


def read_record(folder: Path) -> JobRecord | None:
    """The record of the job in ``folder``; None when it has none, or one that cannot be read (logged)."""
    try:
        record = RECORDS.validate_json((folder / RECORD).read_bytes(), strict=True)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        log.warning("job folder %s: its record cannot be read (%s)", folder.name,
                    exc if isinstance(exc, OSError) else "not a job record")
        return None
    if record.id != folder.name:
        log.warning("job folder %s: its record names job %s", folder.name, record.id)
        return None
    return record


def monotonic_of(wall: float | None) -> float | None:
    """A past wall-clock time on the monotonic clock (a time to come, from a clock set back since: now; None:
    none)."""
    return None if wall is None else time.monotonic() - max(0.0, time.time() - wall)


def wall_of(moment: float | None) -> float | None:
    """A past monotonic time on the wall clock (None: none)."""
    return None if moment is None else time.time() - (time.monotonic() - moment)


class JobManager:
    def __init__(self, config: Config, engines: EngineHost, data_dir: Path, metrics: Metrics,
                 inputs: InputPolicy) -> None:
        self.config = config
        self.engines = engines
        self.data_dir = data_dir
        self.directory = data_dir / "jobs"
        self.metrics = metrics
        self.inputs = inputs
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        metrics.track_jobs(self.count)
        self._restore_earlier_jobs()
        self.expire()

    def _restore_earlier_jobs(self) -> None:
        """The jobs an earlier server left in a kept --data-dir come back with their files, as they ended; those its
        record says were queued or running (the server was killed) as interrupted. A folder without a readable
        record (a job reserved but never started, a damaged record) goes: its id would answer 404, its files only
        hold the quota."""
        removed = 0
        for folder in sorted(path for path in self.directory.glob("*") if path.is_dir()):
            record = read_record(folder)
            if record is None:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
            else:
                job = self._restored(folder, record)
                self._jobs[job.id] = job
        if self._jobs or removed:
            log.info("found %d job(s) an earlier server left in %s; removed %d folder(s) without a job record",
                     len(self._jobs), self.directory, removed)

    def _restored(self, folder: Path, record: JobRecord) -> Job:
        killed = record.state in ACTIVE
        ended = time.time() if killed or record.ended_at is None else record.ended_at
        frames = written_lines(folder / STATS) if killed else record.frames  # the record's are its start's: 0
        last_frame_at = last_written(folder / STATS) if killed else record.last_frame_at
        job = Job(record.id, record.source, folder, state="interrupted" if killed else record.state,
                  frames=frames, dropped=record.dropped, total=record.total,
                  error=STOPPED if killed else record.error, created_at=record.created_at, ended_at=monotonic_of(ended),
                  first_frame_at=monotonic_of(record.first_frame_at), last_frame_at=monotonic_of(last_frame_at))
        if killed:  # its TTL counts from now, once: a server killed again does not restart it
            self._record(job, job.state, ended)
        return job

    def count(self, state: str) -> int:
        with self._lock:
            return sum(job.state == state for job in self._jobs.values())

    def make_room(self) -> None:
        """Expire what is due before a new job; 507 while the data dir is still over its quota (it walks the
        folder: call it off the event loop)."""
        self.expire()
        quota_mb = self.config.serve.max_data_mb
        if data_size(self.data_dir) > quota_mb * MB:
            raise ApiError(507, f"the server's data folder holds more than its quota of {quota_mb} MB",
                           "wait for running jobs to end and expire, or delete finished ones")

    def no_room(self) -> ApiError | None:
        """The 429 while ``serve.max_jobs`` jobs are queued or running (the request guard asks before a new job's
        body is read); None while there is room."""
        with self._lock:
            return self._no_room()

    def _no_room(self) -> ApiError | None:
        active = sum(job.state in ACTIVE for job in self._jobs.values())
        limit = self.config.serve.max_jobs
        if active < limit:
            return None
        return ApiError(429, f"{limit} job(s) already queued or running", "wait for one to finish, or cancel one "
                        "with DELETE /v1/jobs/{id}", headers={"Retry-After": "5"})

    def reserve(self, source: str) -> Job:
        """A job directory for an input still to be placed there; 429 past the limit of active jobs."""
        with self._lock:
            if (full := self._no_room()) is not None:
                raise full
            ident = new_id()
            job = Job(ident, source, self.directory / ident)
            job.directory.mkdir(parents=True)
            self._jobs[job.id] = job
        return job

    @contextmanager
    def reserved(self, source: str) -> Iterator[Job]:
        """A job reserved for the block, which places its input and starts it; should the block raise, whatever
        the exception, the job is forgotten (no queued job, no slot taken, no files)."""
        job = self.reserve(source)
        try:
            yield job
        except BaseException:
            self.forget(job)
            raise

    def forget(self, job: Job) -> None:
        """A reserved job that never started."""
        with self._lock:
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.directory, ignore_errors=True)

    def expire(self, now: float | None = None) -> None:
        """Remove finished jobs older than ``serve.job_ttl_s``, then the oldest finished ones while the data dir
        is over ``serve.max_data_mb``."""
        now = time.monotonic() if now is None else now
        with self._lock:
            finished = sorted((job for job in self._jobs.values() if job.ended_at is not None),
                              key=lambda job: job.ended_at or 0.0)
        expired = [job for job in finished if now - (job.ended_at or now) >= self.config.serve.job_ttl_s]
        for job in expired:
            self.remove(job)
        quota = self.config.serve.max_data_mb * MB
        size = data_size(self.data_dir)
        for job in finished[len(expired):]:
            if size <= quota:
                break
            size -= data_size(job.directory)
            self.remove(job)

    def start(self, job: Job, input_url: str, max_frames: int | None) -> None:
        # A URL job gives up after a few reconnects: a dead host fails the job instead of keeping it queued.
        live = self.config.live
        attempts = self.config.serve.job_connect_attempts
        if not 0 <= live.reconnect_attempts <= attempts:
            live = replace(live, reconnect_attempts=attempts)
        spec = StreamSpec(replace(self.config, live=live), input_url, job.result_path, masks_dir=job.directory / MASKS,
                          stats_path=job.directory / STATS, max_frames=max_frames,
                          limits=self.inputs.limits_for(input_url))
        url = "://" in input_url
        self._record(job, job.state, None)  # before the engine has it: the record of its end comes after this one

        def opened(info: Any) -> None:
            frames = info.frames or None
            job.total = min(filter(None, (frames, max_frames)), default=None)
            job.state = "running"
            log.info("job %s running", job.id)

        # One series for all jobs, but each job its own counter state: its statistics start from zero.
        metrics = StreamMetrics(self.metrics, "jobs", live=False)
        job.engine, job.stream = self.engines.add(spec, [lambda written, stats: self._frame(job, stats, metrics)],
                                                  on_open=opened, on_end=lambda end: self._ended(job, end, url))

    def _frame(self, job: Job, stats: RunStats, metrics: StreamMetrics) -> None:
        now = time.monotonic()
        job.last_frame_at = now
        job.frames, job.dropped = stats.frames, stats.dropped_frames
        if job.first_frame_at is None:  # recorded: a server killed from now on still gives the job's fps
            job.first_frame_at = now
            self._record(job, job.state, None)
        metrics.frame(stats)

    def _ended(self, job: Job, end: StreamEnd, url: bool) -> None:
        state = END_STATES[end.state]
        if end.state == "failed":
            reason = failure(end)
            job.error = URL_FAILURE if url else reason
            log.warning("job %s failed: %s", job.id, reason)
        # recorded while it is still active: once ended, it may be deleted or expire, its folder with it
        self._record(job, state, time.time())
        job.state = state
        job.ended_at = time.monotonic()
        log.info("job %s %s after %d frames", job.id, job.state, job.frames)

    @staticmethod
    def _record(job: Job, state: str, ended_at: float | None) -> None:
        try:
            write_record(job, state, ended_at)
        except OSError as exc:  # a full disk: the job goes on; a server started again will not find it
            log.warning("job %s: its record cannot be written: %s", job.id, exc)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise not_found("job", job_id)
        return job

    def delete(self, job_id: str) -> Job:
        """Cancel an active job (its output so far stays playable); a finished one is removed with its files (at
        once for callers; the files once its last download ends)."""
        job = self.get(job_id)
        if job.state in ACTIVE:
            job.cancel_asked = True
            if job.engine is not None and job.stream is not None:
                self.engines.remove(job.engine, job.stream)
            return job
        self.remove(job)
        return job

    def remove(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)
            job.removed = True
            sending = job.downloads
        if not sending:
            shutil.rmtree(job.directory, ignore_errors=True)

    def download(self, job_id: str, name: str) -> tuple[Path, Callable[[], None]]:
        """A finished job's output, and what to call once it is sent (its files stay while it is); 409 while the
        job runs."""
        job = self.get(job_id)
        if job.state in ACTIVE:
            raise ApiError(409, f"job {job.id} is {job.state}", f"poll GET /v1/jobs/{job.id} until its state is done")
        with self._lock:
            if job.removed:
                raise not_found("job", job_id)
            job.downloads += 1
        try:
            wrote_masks = any((job.directory / MASKS).glob("*.png"))
            path = self._masks_zip(job) if name == "masks.zip" and wrote_masks else job.directory / name
            if not path.exists():
                raise ApiError(404, f"job {job.id} has no {name}", "the job ended before writing a frame")
        except BaseException:
            self._sent(job)
            raise
        return path, lambda: self._sent(job)

    def _sent(self, job: Job) -> None:
        with self._lock:
            job.downloads -= 1
            remove = job.removed and not job.downloads
        if remove:
            shutil.rmtree(job.directory, ignore_errors=True)

    @staticmethod
    def _masks_zip(job: Job) -> Path:
        """Zipped when first asked; concurrent first requests each write their own part file, the first done wins."""
        target = job.directory / "masks.zip"
        if not target.exists():
            # PNGs are compressed already: stored
            with written_whole(target, "wb") as file, zipfile.ZipFile(file, "w", zipfile.ZIP_STORED) as archive:
                for png in sorted((job.directory / MASKS).glob("*.png")):
                    archive.write(png, png.name)
        return target


@contextmanager
def written_whole(target: Path, mode: str) -> Iterator[IO[Any]]:
    """A part file of its own beside ``target``, which replaces ``target`` once the block ends without raising:
    readers (and a server started after a crash) see the old file or the new one, never a part."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.stem}-", suffix=".part")
    partial = Path(name)
    try:
        with os.fdopen(handle, mode) as file:
            yield file
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def last_written(path: Path) -> float | None:
    """When the file at ``path`` was last written (wall clock): a killed job's stats, its last whole line's frame
    (lines reach the file in blocks: at most a frame late); None without it."""
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def written_lines(path: Path) -> int:
    """Whole lines in the file at ``path`` (a line per frame written in a job's statistics); 0 without it."""
    try:
        with path.open("rb") as file:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: file.read(1 << 20), b""))
    except OSError:
        return 0


def data_size(folder: Path) -> int:
    """Bytes of the files under ``folder`` (files removed meanwhile count nothing)."""
    total = 0
    for path in folder.rglob("*"):
        with suppress(FileNotFoundError):
            if path.is_file():
                total += path.stat().st_size
    return total
