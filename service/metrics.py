"""Prometheus metrics of one server (its own registry): frames, drops, latency and worker restarts per stream,
jobs by state, photos."""

from __future__ import annotations

import functools
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from vidparse.pipeline.stats import RunStats

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
JOB_STATES = ("queued", "running", "done", "failed", "cancelled", "interrupted")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        labels = ("stream",)
        self.frames = Counter("vidparse_frames_parsed", "Frames parsed and written", labels, registry=self.registry)
        self.dropped = Counter("vidparse_frames_dropped", "Frames dropped by the live policy", labels,
                               registry=self.registry)
        self.restarts = Counter("vidparse_worker_restarts", "Worker processes replaced while the stream ran", labels,
                                registry=self.registry)
        self.latency = Histogram("vidparse_frame_latency_seconds", "Capture to written, live streams", labels,
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.jobs = Gauge("vidparse_jobs", "Jobs by state", ("state",), registry=self.registry)
        self.photos = Histogram("vidparse_photo_seconds", "Photo parse time", buckets=LATENCY_BUCKETS,
                                registry=self.registry)

    def track_jobs(self, count: Callable[[str], int]) -> None:
        for state in JOB_STATES:
            self.jobs.labels(state).set_function(functools.partial(count, state))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class StreamMetrics:
    """A stream's series: fed from its writer thread with the stream's running statistics."""

    def __init__(self, metrics: Metrics, name: str, live: bool) -> None:
        self.metrics = metrics
        self.name = name
        self.live = live
        self._dropped = 0
        self._restarts = 0

    def frame(self, stats: RunStats) -> None:
        m, name = self.metrics, self.name
        m.frames.labels(name).inc()
        if stats.dropped_frames > self._dropped:
            m.dropped.labels(name).inc(stats.dropped_frames - self._dropped)
            self._dropped = stats.dropped_frames
        if stats.worker_restarts > self._restarts:
            m.restarts.labels(name).inc(stats.worker_restarts - self._restarts)
            self._restarts = stats.worker_restarts
        if self.live and stats.recent_latency_s:
            m.latency.labels(name).observe(stats.recent_latency_s[-1])

    def remove(self) -> None:
        """A removed stream's series go away (their ids never come back)."""
        for metric in (self.metrics.frames, self.metrics.dropped, self.metrics.restarts, self.metrics.latency):
            try:
                metric.remove(self.name)
            except KeyError:
                pass
