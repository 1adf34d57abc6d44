"""The batch driver: plans each input into segments, hands them to an engine (local or Ray), retries failed
segments, joins each input's segments into ``OUTDIR/<name>.mp4`` and records every input in the manifest."""

from __future__ import annotations

import contextlib
import logging
import shutil
import time
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

from vidparse.batch.join import join_segments
from vidparse.batch.manifest import Manifest, Record, config_hash, input_identity, input_key
from vidparse.batch.plan import UNBOUNDED, Segment, plan_segments, read_packets, splits_videos
from vidparse.batch.progress import BatchProgress
from vidparse.batch.segment import MASKS_NAME, VIDEO_NAME, SegmentResult, SegmentTask, code_fingerprint, receive
from vidparse.config import Config
from vidparse.errors import BadInputError, BadOutputError, ConfigError, ModelError, VidparseError
from vidparse.jobs import output_names
from vidparse.names import unique_names
from vidparse.stages.source import InputKind, StreamInfo, input_kind, probe, warn_if_ended_early

log = logging.getLogger(__name__)

PARTS_NAME = ".parts"  # OUTDIR/.parts/<name>/<segment>-<attempt>/: segment outputs until the join


class Engine(Protocol):
    cpus_per_task: int

    def submit(self, task: SegmentTask) -> Future[SegmentResult]: ...

    def cancel(self, future: Future[SegmentResult]) -> None: ...


def one_line(error: BaseException) -> str:
    """A failure as one line: vidparse's own message, or the exception's first line (a Ray error's cause)."""
    error = getattr(error, "cause", None) or error
    if isinstance(error, VidparseError):
        return error.message
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def worth_retrying(error: BaseException, input_url: str) -> bool:
    """Whether another run of a failed segment may succeed: not after a model or configuration error, nor after a
    local file's damage, which every run meets again (a Ray error's cause decides)."""
    cause = getattr(error, "cause", None) or error
    if isinstance(cause, (ModelError, ConfigError)):
        return False
    return not (isinstance(cause, BadInputError) and input_kind(input_url) is InputKind.FILE)


@dataclass
class Job:
    input: str
    name: str
    segments: list[Segment]
    info: StreamInfo
    hidden: int  # the packets its edit list hides (`Packets.hidden`)
    record: Record
    earlier_outputs: list[str] = field(default_factory=list)  # what an earlier run of this input recorded
    folders: dict[int, Path] = field(default_factory=dict)
    tries: dict[int, int] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    first_pts: int | None = None  # of its first frame (segment 0's)
    last_pts: int | None = None  # of its last decoded frame (the final segment's)

    def take(self, segment: Segment, result: SegmentResult) -> None:
        """Keep a finished segment's folder, count its frames, and where the file's frames start or end."""
        self.folders[segment.number] = receive(result)
        self.record.frames += result.frames
        if segment.number == 0:
            self.first_pts = result.first_pts
        if segment.final:
            self.last_pts = result.last_pts


def known_frames(segments: list[Segment]) -> int:
    """The frames of ``segments`` that progress can count (not those running to an unknown end)."""
    return sum(segment.frames for segment in segments if segment.end != UNBOUNDED)


def in_given_order(records: list[Record], inputs: list[str]) -> list[Record]:
    """``records`` (in the order their inputs ended) in the order the inputs were given; the records of what named
    no input (a list that cannot be read, a pattern that finds nothing) first, as they were found."""
    given = {input_key(url): index for index, url in enumerate(inputs)}
    return sorted(records, key=lambda record: given.get(record.input, -1))


class BatchDriver:
    def __init__(self, config: Config, outdir: Path, engine: Engine, progress: BatchProgress, masks: bool = False,
                 gather: bool = False) -> None:
        self.config = config
        self.outdir = outdir.absolute()  # what the manifest records holds from any folder, and Ray nodes find
        self.engine = engine
        self.progress = progress
        self.masks = masks
        self.gather = gather
        self.manifest = Manifest(outdir)
        self.digest = config_hash(config)
        self.records: list[Record] = []
        self.skipped: list[Record] = []
        self._running: dict[Future[SegmentResult], tuple[Job, Segment]] = {}
        self.interrupted = False  # Ctrl-C or SIGTERM: running segments cancelled, unfinished inputs not recorded

    def output(self, name: str) -> Path:
        return self.outdir / f"{name}.mp4"

    def masks_dir(self, name: str) -> Path:
        return self.outdir / f"{name}_masks"

    def run(self, inputs: list[str], problems: list[Record]) -> list[Record]:
        """Every input ends done, failed or skipped; a failure of one never stops the others."""
        for record in problems:
            self._finish(record)
        previous = self.manifest.load()
        for url, name in zip(inputs, self._names(inputs, previous)):
            if self.interrupted:
                break
            earlier = previous.get(input_key(url))
            if earlier is not None and earlier.skips(self.digest, self.masks):
                self.skipped.append(earlier)
                self.progress.skipped += 1
                continue
            job = self._plan(url, name, earlier.outputs if earlier is not None else [])
            if job is not None:
                for segment in job.segments:
                    self._submit(job, segment)
        self._drain()
        if self.interrupted:  # what cancelled segments wrote: a rerun starts those inputs afresh
            shutil.rmtree(self.outdir / PARTS_NAME, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):  # each input's folder went after its join; a failed one's stays
                (self.outdir / PARTS_NAME).rmdir()
        return in_given_order(self.records, inputs)

    @staticmethod
    def _names(inputs: list[str], previous: dict[str, Record]) -> list[str]:
        """Each input's output name: the one its record gave it (a rerun in another order, or with other inputs,
        keeps it), else `output_names`' rule, never a name that a recorded input holds."""
        recorded = {key: Path(record.outputs[0]).stem for key, record in previous.items() if record.outputs}
        new = [url for url in inputs if input_key(url) not in recorded]
        fresh = dict(zip(new, unique_names([*recorded.values(), *output_names(new)])[len(recorded):]))
        return [recorded.get(input_key(url)) or fresh[url] for url in inputs]

    def cancel(self) -> None:
        """Stop the batch (a signal handler may call this): cancel every segment; the inputs they belong to get no
        record, so a rerun does them."""
        self.interrupted = True
        for future in list(self._running):
            self._cancel(future)

    def _cancel(self, future: Future[SegmentResult]) -> None:
        self.engine.cancel(future)

    def _plan(self, url: str, name: str, earlier_outputs: list[str]) -> Job | None:
        size, mtime = input_identity(url) or (None, None)
        record = Record(input=input_key(url), state="failed", config_hash=self.digest, size=size, mtime_ns=mtime)
        try:
            if "://" not in url and self.output(name).resolve() == Path(url).resolve():
                raise BadOutputError(f"the output of {url} would overwrite it",
                                     hint="give an output folder (-o) other than the input's folder")
            if input_kind(url).always_live:
                raise BadInputError(f"{url} is a live input: a batch parses recorded files",
                                    hint=f"parse a camera with: vidparse run {url} -o out.mp4")
            # a file over HTTP that cannot be fetched fails now, as a missing file does, instead of retrying forever
            info = probe(url, replace(self.config.live, reconnect_attempts=0))
            settings = self.config.batch
            seconds = settings.segment_seconds if splits_videos(self.config) else 0
            packets = read_packets(url)
            segments = plan_segments(packets, seconds, settings.warmup_frames, info.frames)
        except VidparseError as exc:
            record.error = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            self._finish(record)
            return None
        record.segments = len(segments)
        job = Job(url, name, segments, info, packets.hidden if packets else 0, record, earlier_outputs)
        shutil.rmtree(self._parts(job), ignore_errors=True)  # what a killed batch left
        self.progress.planned(known_frames(segments))
        return job

    def _parts(self, job: Job) -> Path:
        return self.outdir / PARTS_NAME / job.name

    def _submit(self, job: Job, segment: Segment) -> None:
        task = SegmentTask(self.config, input_key(job.input), segment, self._parts(job), masks=self.masks,
                           gather=self.gather, cpus=self.engine.cpus_per_task, code=code_fingerprint())
        job.tries[segment.number] = job.tries.get(segment.number, 0) + 1
        job.record.attempts += 1
        self._running[self.engine.submit(task)] = (job, segment)

    def _drain(self) -> None:
        while self._running:
            finished, _ = wait(list(self._running), return_when=FIRST_COMPLETED)
            for future in finished:
                job, segment = self._running.pop(future)
                if self.interrupted:
                    continue
                if job.record.error:  # the input failed already: its cancelled segments' folders go now
                    self._tidy(job)
                    continue
                try:
                    result = future.result()
                except Exception as exc:  # noqa: BLE001  (any failure of a task: a retry, then a record)
                    self._segment_failed(job, segment, exc)
                    continue
                job.take(segment, result)
                self.progress.segment_done(result.frames)
                if len(job.folders) == len(job.segments):
                    # as `vidparse run` judges the file, from the frames all its segments wrote
                    warn_if_ended_early(job.input, job.info, job.record.frames, job.last_pts, job.hidden,
                                        job.first_pts)
                    self._join(job)

    def _segment_failed(self, job: Job, segment: Segment, error: BaseException) -> None:
        reason = one_line(error)
        if job.tries[segment.number] <= self.config.batch.retries and worth_retrying(error, job.input):
            log.warning("segment %d of %s failed (%s); retrying", segment.number, job.input, reason)
            self._submit(job, segment)
            return
        tries = job.tries[segment.number]
        job.record.error = (f"{job.input}: segment {segment.number} failed"
                            f"{f' {tries} times' if tries > 1 else ''}: {reason}")
        self.progress.dropped(known_frames([s for s in job.segments if s.number not in job.folders]))
        for future, (other, _) in list(self._running.items()):
            if other is job:  # the input has failed: its other segments are not worth finishing
                self._cancel(future)
        self._close(job)

    def _join(self, job: Job) -> None:
        output = self.output(job.name)
        folders = [job.folders[s.number] for s in job.segments]
        try:
            join_segments([(folder / VIDEO_NAME, s.offset) for folder, s in zip(folders, job.segments)], output,
                          job.input if job.info.has_audio else None,
                          Fraction(job.first_pts or 0) * job.info.time_base)
            job.record.outputs = [str(output)]
            job.record.video_size = output.stat().st_size
            if self.masks:
                job.record.outputs.append(str(self._move_masks(job, folders)))
            elif str(self.masks_dir(job.name)) in job.earlier_outputs:  # an earlier run's labels of another video
                shutil.rmtree(self.masks_dir(job.name), ignore_errors=True)
            job.record.state = "done"
        except VidparseError as exc:
            job.record.error = exc.message
        self._close(job)

    def _move_masks(self, job: Job, folders: list[Path]) -> Path:
        target = self.masks_dir(job.name)
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for folder in folders:
            for path in (folder / MASKS_NAME).iterdir():
                path.replace(target / path.name)
        return target

    def _close(self, job: Job) -> None:
        job.record.seconds = time.monotonic() - job.started
        job.record.fps = job.record.frames / job.record.seconds if job.record.seconds else 0.0
        self._tidy(job)
        self._finish(job.record)

    def _tidy(self, job: Job) -> None:
        """Remove the input's segment folders once none of its segments runs (one still running would make them
        again)."""
        if not any(other is job for other, _ in self._running.values()):
            shutil.rmtree(self._parts(job), ignore_errors=True)

    def _finish(self, record: Record) -> None:
        self.manifest.append(record)
        self.records.append(record)
        self.progress.finished(record)
