"""Live streams: one engine session per camera, no video written; the newest annotated frame is JPEG-encoded
once in the stream's writer thread and handed to every viewer (MJPEG preview, snapshot). Viewers wait on an event
the writer thread sets; ``serve.max_viewers`` of them at most per stream."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from vidparse.config import Config
from vidparse.jobs import StreamSpec
from vidparse.pipeline.ends import StreamEnd
from vidparse.pipeline.engine import Engine
from vidparse.pipeline.stats import RunStats
from vidparse.pipeline.writer import Written
from vidparse.service.engine import EngineHost
from vidparse.service.errors import ApiError, not_found
from vidparse.service.inputs import InputPolicy
from vidparse.service.job_manager import URL_FAILURE, failure, new_id
from vidparse.service.metrics import Metrics, StreamMetrics
from vidparse.service.photos import jpeg
from vidparse.stages.source import without_credentials

log = logging.getLogger(__name__)

FPS_WINDOW_S = 10.0


class Viewers:
    """The MJPEG viewers of one stream, each an asyncio event that the stream's writer thread sets for a new
    frame and that its end sets too."""

    def __init__(self) -> None:
        self._events: dict[asyncio.Event, asyncio.AbstractEventLoop] = {}
        self._lock = threading.Lock()

    def join(self, limit: int) -> asyncio.Event:
        """A new viewer's event; 429 past ``limit`` viewers."""
        with self._lock:
            if len(self._events) >= limit:
                raise ApiError(429, f"{limit} viewer(s) already watch this stream", "close a preview, use the "
                               "snapshot, or raise serve.max_viewers", headers={"Retry-After": "5"})
            event = asyncio.Event()
            self._events[event] = asyncio.get_running_loop()
        return event

    def leave(self, event: asyncio.Event) -> None:
        with self._lock:
            self._events.pop(event, None)

    def wake(self) -> None:
        with self._lock:
            waiting = list(self._events.items())
        for event, loop in waiting:
            with contextlib.suppress(RuntimeError):  # the server's loop closed: nobody waits any more
                loop.call_soon_threadsafe(event.set)


@dataclass
class LiveStream:
    id: str
    name: str
    url: str
    metrics: StreamMetrics
    state: str = "connecting"
    stats: RunStats | None = None
    jpeg: bytes | None = None  # the newest annotated frame
    version: int = 0  # counts frames: a viewer sends a part when it changes
    frame_times: deque[float] = field(default_factory=lambda: deque(maxlen=512))  # when frames were written
    engine: Engine | None = None
    stream: int | None = None
    error: str | None = None  # why a failed stream ended
    failed_attempts: int = 0  # connection attempts failed in a row since the last frame
    viewers: Viewers = field(default_factory=Viewers)

    @property
    def active(self) -> bool:
        return self.state in ("connecting", "live", "reconnecting")

    def describe(self) -> dict[str, Any]:
        now = time.monotonic()
        recent = sum(now - t <= FPS_WINDOW_S for t in self.frame_times)
        fps = recent / min(FPS_WINDOW_S, now - self.frame_times[0]) if recent > 1 else 0.0
        stats = self.stats
        p50 = stats.latency_percentile(50) if stats else None
        p95 = stats.latency_percentile(95) if stats else None
        return {"id": self.id, "name": self.name, "url": without_credentials(self.url), "state": self.state,
                "frames": self.version,
                "fps": round(fps, 2), "latency_p50_ms": None if p50 is None else round(p50 * 1000),
                "latency_p95_ms": None if p95 is None else round(p95 * 1000),
                "dropped": stats.dropped_frames if stats else 0, "reconnects": stats.reconnects if stats else 0,
                "failed_attempts": self.failed_attempts, "error": self.error,
                "preview": f"/v1/streams/{self.id}/preview.mjpg", "snapshot": f"/v1/streams/{self.id}/snapshot.jpg"}


class StreamManager:
    def __init__(self, config: Config, engines: EngineHost, metrics: Metrics, inputs: InputPolicy) -> None:
        self.config = config
        self.engines = engines
        self.metrics = metrics
        self.inputs = inputs
        self._streams: dict[str, LiveStream] = {}
        self._lock = threading.Lock()

    def add(self, url: str, name: str) -> LiveStream:
        """Start a stream of ``url`` (checked by the caller); 429 past ``serve.max_streams`` active ones (failed
        streams, still listed, do not count)."""
        with self._lock:
            limit = self.config.serve.max_streams
            if sum(live.active for live in self._streams.values()) >= limit:
                raise ApiError(429, f"{limit} live stream(s) already running", "remove one with DELETE "
                               "/v1/streams/{id}, or raise serve.max_streams", headers={"Retry-After": "5"})
            ident = new_id()
            live = LiveStream(ident, name or ident[:8], url, StreamMetrics(self.metrics, ident, live=True))
            self._streams[ident] = live
        spec = StreamSpec(self.config, url, None, limits=self.inputs.url_limits())
        try:
            live.engine, live.stream = self.engines.add(
                spec, [lambda written, stats: self._frame(live, written, stats)], on_open=lambda info: None,
                on_end=lambda end: self._ended(live, end), on_connecting=lambda stats: self._connecting(live, stats))
        except BaseException:
            with self._lock:
                self._streams.pop(ident, None)
            raise
        return live

    def _frame(self, live: LiveStream, written: Written, stats: RunStats) -> None:
        live.jpeg = jpeg(written.annotated, self.config.serve.preview_quality)
        live.stats = stats
        live.version += 1
        live.frame_times.append(time.monotonic())
        live.failed_attempts = 0
        if live.state in ("connecting", "reconnecting"):
            live.state = "live"
        live.metrics.frame(stats)
        live.viewers.wake()

    @staticmethod
    def _connecting(live: LiveStream, stats: RunStats) -> None:
        """A failed attempt to connect: a stream that was live is reconnecting (its camera is down or frozen)."""
        assert stats.connecting is not None
        live.failed_attempts = stats.connecting[0]
        if live.state == "live":
            live.state = "reconnecting"

    def _ended(self, live: LiveStream, end: StreamEnd) -> None:
        """A failed stream stays listed with a general error (the server log says why); one that ended otherwise
        (removed, the server stopping, its input at an end) is gone."""
        live.state = "failed" if end.state == "failed" else "stopped"
        if live.state == "failed":
            live.error = URL_FAILURE
            log.warning("stream %s failed: %s", live.id, failure(end))
        live.metrics.remove()
        with self._lock:
            if live.state == "stopped":
                self._streams.pop(live.id, None)
        live.viewers.wake()
        log.info("stream %s (%s) %s", live.id, without_credentials(live.url), live.state)

    def list(self) -> list[LiveStream]:
        with self._lock:
            return list(self._streams.values())

    def get(self, ident: str) -> LiveStream:
        with self._lock:
            live = self._streams.get(ident)
        if live is None:
            raise not_found("stream", ident)
        return live

    def remove(self, ident: str) -> LiveStream:
        """Stop the stream; its id is gone at once (viewers' previews end)."""
        live = self.get(ident)
        with self._lock:
            self._streams.pop(ident, None)
        if live.active:
            live.state = "stopping"
            if live.engine is not None and live.stream is not None:
                self.engines.remove(live.engine, live.stream)
        live.viewers.wake()
        return live
