"""Jobs: a video (uploaded, an allowed file, or a URL) parsed by the service's engine into an MP4, masks and
per-frame statistics, with progress, fps and ETA."""

from __future__ import annotations

import logging
import secrets
import shutil
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidparse.config import Config
from vidparse.jobs import StreamSpec
from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.stats import RunStats
from vidparse.service.engine import EngineHost
from vidparse.service.errors import ApiError, not_found
from vidparse.service.metrics import Metrics, StreamMetrics

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
RESULT = "result.mp4"
STATS = "stats.jsonl"
MASKS = "masks"
END_STATES = {"ok": "done", "failed": "failed", "cancelled": "cancelled", "interrupted": "interrupted"}  # by StreamEnd


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
    total: int | None = None  # frames the input holds (None: unknown, or live)
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    first_frame_at: float | None = None
    last_frame_at: float | None = None
    engine: Engine | None = None
    stream: int | None = None

    @property
    def result_path(self) -> Path:
        return self.directory / RESULT

    def describe(self) -> dict[str, Any]:
        fps = None
        if self.first_frame_at is not None and self.last_frame_at and self.frames > 1:
            running = self.last_frame_at - self.first_frame_at
            fps = round((self.frames - 1) / running, 2) if running > 0 else None
        progress = None if not self.total else round(min(1.0, self.frames / self.total), 4)
        eta = None
        if self.state == "running" and fps and self.total:
            eta = round(max(0, self.total - self.frames) / fps, 1)
        finished = self.state in ("done", "cancelled", "interrupted") and self.result_path.exists()
        return {"id": self.id, "state": self.state, "source": self.source, "frames": self.frames, "total": self.total,
                "progress": 1.0 if self.state == "done" else progress, "fps": fps, "eta_s": eta, "error": self.error,
                "result": f"/v1/jobs/{self.id}/result" if finished else None}


class JobManager:
    def __init__(self, config: Config, engines: EngineHost, data_dir: Path, metrics: Metrics) -> None:
        self.config = config
        self.engines = engines
        self.directory = data_dir / "jobs"
        self.metrics = metrics
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        metrics.track_jobs(self.count)

    def count(self, state: str) -> int:
        with self._lock:
            return sum(job.state == state for job in self._jobs.values())

    def reserve(self, source: str) -> Job:
        """A job directory for an input still to be placed there; 429 past the limit of active jobs."""
        with self._lock:
            active = sum(job.state in ACTIVE for job in self._jobs.values())
            limit = self.config.serve.max_jobs
            if active >= limit:
                raise ApiError(429, f"{limit} job(s) already queued or running", "wait for one to finish, or cancel "
                               "one with DELETE /v1/jobs/{id}", headers={"Retry-After": "5"})
            ident = new_id()
            job = Job(ident, source, self.directory / ident)
            job.directory.mkdir(parents=True)
            self._jobs[job.id] = job
        return job

    def forget(self, job: Job) -> None:
        """A reserved job whose input was refused."""
        with self._lock:
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.directory, ignore_errors=True)

    def start(self, job: Job, input_url: str, max_frames: int | None) -> None:
        spec = StreamSpec(self.config, input_url, job.result_path, masks_dir=job.directory / MASKS,
                          stats_path=job.directory / STATS, max_frames=max_frames)

        def opened(info: Any) -> None:
            frames = info.frames or None
            job.total = min(filter(None, (frames, max_frames)), default=None)
            job.state = "running"

        # One series for all jobs, but each job its own counter state: its statistics start from zero.
        metrics = StreamMetrics(self.metrics, "jobs", live=False)
        job.engine, job.stream = self.engines.add(spec, [lambda written, stats: self._frame(job, stats, metrics)],
                                                  on_open=opened, on_end=lambda end: self._ended(job, end))

    def _frame(self, job: Job, stats: RunStats, metrics: StreamMetrics) -> None:
        now = time.monotonic()
        job.first_frame_at = job.first_frame_at or now
        job.last_frame_at = now
        job.frames = stats.frames
        metrics.frame(stats)

    def _ended(self, job: Job, end: StreamEnd) -> None:
        job.state, job.error = END_STATES[end.state], end.message
        log.info("job %s %s after %d frames", job.id, job.state, job.frames)

    def get(self, job_id: str) -> Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise not_found("job", job_id)
        return job

    def delete(self, job_id: str) -> Job:
        """Cancel an active job (its output so far stays playable); a finished one is removed with its files."""
        job = self.get(job_id)
        if job.state in ACTIVE:
            if job.engine is not None and job.stream is not None:
                self.engines.remove(job.engine, job.stream)
            return job
        with self._lock:
            self._jobs.pop(job.id, None)
        shutil.rmtree(job.directory, ignore_errors=True)
        return job

    def finished_file(self, job_id: str, name: str) -> Path:
        """A finished job's output; 409 while it runs."""
        job = self.get(job_id)
        if job.state in ACTIVE:
            raise ApiError(409, f"job {job.id} is {job.state}", f"poll GET /v1/jobs/{job.id} until its state is done")
        if name == "masks.zip":
            return self._masks_zip(job)
        path = job.directory / name
        if not path.exists():
            raise ApiError(404, f"job {job.id} has no {name}", "the job ended before writing a frame")
        return path

    def _masks_zip(self, job: Job) -> Path:
        target = job.directory / "masks.zip"
        if not target.exists():
            partial = target.with_suffix(".part")
            with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:  # PNGs are compressed already
                for png in sorted((job.directory / MASKS).glob("*.png")):
                    archive.write(png, png.name)
            partial.replace(target)
        return target
