"""What a stream's run did: counts, times and recent latencies."""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field

LATENCY_WINDOW = 1000
SERIAL_THREADS = ("hub", "motion", "compose", "emit")


def percentile(values: Iterable[float], q: float) -> float | None:
    """The value below which ``q`` percent of ``values`` lie (nearest rank); None when there are none."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))] if ordered else None


@dataclass
class RunStats:
    frames: int = 0
    skipped_packets: int = 0
    wall_s: float = 0.0
    startup_s: float = 0.0  # from start to the first frame written: processes, model loading, first parse
    interrupted: bool = False
    worker_restarts: int = 0
    retried_frames: int = 0
    unparsed_frames: list[int] = field(default_factory=list)  # written without labels after failing twice
    dropped_frames: int = 0  # live policy: waiting frames dropped so the newest could be parsed
    source_restarts: int = 0
    reconnects: int = 0  # live: reconnects to the stream, over every source process (a watchdog restart counts one)
    connecting: tuple[int, str] | None = None  # live, while it cannot connect: failed attempts in a row, the last why
    stage_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # Busy time of the threads every frame of the stream passes one at a time: the engine's hub (shared by its
    # streams: its time while this one ran), the stream's motion, compose and emit threads.
    serial_s: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    recent_latency_s: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_WINDOW))

    def latency_percentile(self, q: float) -> float | None:
        """Capture-to-written latency over the last LATENCY_WINDOW frames."""
        return percentile(self.recent_latency_s, q)

    def serial_ms(self) -> dict[str, float]:
        """Each serial thread's busy time per frame written (ms)."""
        return {name: seconds / max(1, self.frames) * 1000 for name, seconds in self.serial_s.items()}

    @property
    def serial_ceiling_fps(self) -> float | None:
        """The most frames per second the serial threads allow, however many workers parse: 1 / the busiest one's
        time per frame (None before a frame was written)."""
        return serial_ceiling(self.frames, self.serial_s)

    @property
    def degraded(self) -> bool:
        return bool(self.unparsed_frames) or self.worker_restarts > 0 or self.retried_frames > 0

    @property
    def fps(self) -> float:
        """Frames per second over the whole run, start-up included."""
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    @property
    def steady_fps(self) -> float:
        """Frames per second after the first frame was written: the rate a long video runs at."""
        running = self.wall_s - self.startup_s
        return (self.frames - 1) / running if self.frames > 1 and running > 0 else self.fps


def serial_ceiling(frames: int, busy_s: dict[str, float]) -> float | None:
    """``frames`` over the busiest serial thread's busy seconds (``busy_s``, by thread) while they were written:
    the fps those threads allow; None without frames or busy time."""
    busiest = max(busy_s.values(), default=0.0)
    return frames / busiest if frames and busiest > 0 else None
