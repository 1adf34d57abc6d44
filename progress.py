"""Terminal reporting for long runs: a live progress bar and the end-of-run summary."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vidparse.pipeline.stats import SERIAL_THREADS, RunStats
from vidparse.pipeline.writer import Written

if TYPE_CHECKING:
    from vidparse.runs import RunOutcome

STAGE_ORDER = ("decode", "detect", "parse", "propagate", "compose", "encode")


@dataclass
class _Seen:
    """What one stream's frames showed, for its summary."""

    persons_total: int = 0
    persons_max: int = 0
    frames_with_persons: int = 0
    live: bool = False
    photos: bool = False


class RunReporter:
    """Feeds a rich progress display from the run's callbacks, one line per stream, and counts what was seen."""

    def __init__(self, console: Console, descriptions: Sequence[str]) -> None:
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[fps]:.1f} fps"),
            TextColumn("{task.fields[persons]} persons"),
            TextColumn("{task.fields[latency]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        # a stream's line shows once it opens or tries to connect: one that fails its checks shows only its error
        self.tasks = [self.progress.add_task(escape(d), total=None, fps=0.0, persons=0, latency="", visible=False)
                      for d in descriptions]  # names as typed: "clip [final]" is no markup
        self.seen = [_Seen() for _ in descriptions]
        self._showing = threading.Lock()  # streams open in the hub thread; the first starts the display

    def __enter__(self) -> RunReporter:
        return self

    def __exit__(self, *exc: Any) -> None:
        with self._showing:
            if self.progress.live.is_started:
                self.progress.stop()

    def _show(self, index: int) -> None:
        with self._showing:
            self.progress.update(self.tasks[index], visible=True)
            if not self.progress.live.is_started:
                self.progress.start()

    def on_open(self, index: int, info: Any) -> None:
        self.seen[index].live = info.live
        self.seen[index].photos = info.codec == "image"
        self.progress.update(self.tasks[index], total=info.frames or None)
        self._show(index)

    def on_connecting(self, index: int, stats: RunStats) -> None:
        """A live input cannot connect: the line says how many attempts failed and why (until a frame comes)."""
        if stats.connecting is not None:
            attempt, reason = stats.connecting
            self.progress.update(self.tasks[index], latency=f"connecting: attempt {attempt} failed ({reason})")
            self._show(index)

    def limit(self, index: int, frames: int | None) -> None:
        task = self.progress.tasks[index]
        if frames and (task.total is None or frames < task.total):
            self.progress.update(self.tasks[index], total=frames)

    def on_frame(self, written: Written, stats: RunStats | None = None) -> None:
        seen = self.seen[written.stream]
        count = len(written.result.persons)
        seen.persons_total += count
        seen.persons_max = max(seen.persons_max, count)
        seen.frames_with_persons += count > 0
        task = self.progress.tasks[written.stream]
        fps = (task.completed + 1) / task.elapsed if task.elapsed else 0.0
        latency = ""
        if seen.live and stats is not None and (p50 := stats.latency_percentile(50)) is not None:
            latency = f"latency {p50 * 1000:.0f} ms" + (f", {stats.dropped_frames} dropped" if stats.dropped_frames else "")
        self.progress.update(self.tasks[written.stream], advance=1, fps=fps, persons=count, latency=latency)

    def streams_table(self, outcome: RunOutcome) -> Table:
        """A row per stream: how it ended, frames, fps after start-up, persons (all frames / most in one), live
        latency p50 and dropped frames, worker restarts; where any stream had them, source restarts (the watchdog)
        and undecodable packets skipped."""
        table = Table(title="vidparse run", title_justify="left")
        source_restarts = any(stream.stats.source_restarts for stream in outcome.streams)
        skipped = any(stream.stats.skipped_packets for stream in outcome.streams)
        columns = ("stream", "status", "frames", "fps", "persons", "p50 ms", "dropped", "restarts",
                   *(["source restarts"] if source_restarts else []), *(["skipped"] if skipped else []))
        for column in columns:  # a name too long for the terminal folds: cut, several would read alike
            table.add_column(column, justify="left" if column in ("stream", "status") else "right",
                             overflow="fold" if column == "stream" else "ellipsis")
        for index, stream in enumerate(outcome.streams):
            stats, seen = stream.stats, self.seen[index]
            p50 = stats.latency_percentile(50) if seen.live else None
            color = {"ok": "green", "failed": "red"}.get(stream.status, "yellow")
            cells = [escape(stream.name), f"[{color}]{stream.status}", str(stats.frames), f"{stats.steady_fps:.2f}",
                     f"{seen.persons_total}/{seen.persons_max}", "" if p50 is None else f"{p50 * 1000:.0f}",
                     str(stats.dropped_frames), str(stats.worker_restarts)]
            if source_restarts:
                cells.append(str(stats.source_restarts))
            if skipped:
                cells.append(str(stats.skipped_packets))
            table.add_row(*cells)
        if skipped:
            table.caption = "skipped: a folder's unreadable photos, a video's undecodable packets"
        return table

    def summary(self, stats: RunStats, index: int = 0) -> Table:
        """One stream's summary table (what a run of one input prints)."""
        seen = self.seen[index]
        table = Table(title="vidparse run", show_header=False, title_justify="left")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("frames", f"{stats.frames}")
        table.add_row("wall time", f"{stats.wall_s:.1f} s")
        table.add_row("throughput (after start-up)", f"{stats.steady_fps:.2f} fps")
        table.add_row("start-up (processes, models, first frame)", f"{stats.startup_s:.1f} s")
        table.add_row("persons (all frames / most in one)", f"{seen.persons_total} / {seen.persons_max}")
        table.add_row("frames with persons", f"{seen.frames_with_persons}")
        p50, p95 = stats.latency_percentile(50), stats.latency_percentile(95)
        if seen.live and p50 is not None and p95 is not None:
            table.add_row("latency p50 / p95 (capture to written, last 1000)",
                          f"{p50 * 1000:.0f} / {p95 * 1000:.0f} ms")
        if stats.dropped_frames:
            table.add_row("frames dropped (live policy)", f"{stats.dropped_frames}")
        if stats.source_restarts:
            table.add_row("[yellow]source restarts (watchdog)", f"[yellow]{stats.source_restarts}")
        if stats.skipped_packets:
            table.add_row("unreadable photos skipped" if seen.photos else "undecodable packets skipped",
                          f"{stats.skipped_packets}")
        for stage in sorted(stats.stage_s, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else 99):
            per_frame = stats.stage_s[stage] / max(1, stats.frames) * 1000
            # a camera's frame is read when it comes: the wait for it is in the decode's time, not busy
            label = ("decode, with the wait for the camera (per frame)" if stage == "decode" and seen.live
                     else f"{stage} (busy, per frame)")
            table.add_row(label, f"{per_frame:.1f} ms")
        if (ceiling := stats.serial_ceiling_fps) is not None:
            serial = stats.serial_ms()
            table.add_row(f"{' / '.join(SERIAL_THREADS)} threads (busy, per frame)",
                          " / ".join(f"{serial.get(name, 0.0):.1f}" for name in SERIAL_THREADS) + " ms")
            table.add_row("serial ceiling (1 / the busiest thread: more workers cannot go faster)", f"{ceiling:.0f} fps")
        if stats.degraded:
            table.add_row("[yellow]worker restarts / frames retried", f"[yellow]{stats.worker_restarts} / {stats.retried_frames}")
            unparsed = ", ".join(map(str, stats.unparsed_frames[:10])) + (" …" if len(stats.unparsed_frames) > 10 else "")
            table.add_row("[yellow]frames written without labels", f"[yellow]{len(stats.unparsed_frames)} {unparsed}")
        if stats.interrupted:
            table.add_row("[yellow]stopped early", "[yellow]interrupted")
        return table
