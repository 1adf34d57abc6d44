"""Terminal reporting for long runs: a live progress bar and the end-of-run summary."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from vidparse.pipeline.stats import RunStats
from vidparse.pipeline.writer import Written

STAGE_ORDER = ("decode", "detect", "parse", "propagate", "compose", "encode")


class RunReporter:
    """Feeds a rich progress bar from the runner's callbacks and counts what was seen."""

    def __init__(self, console: Console, description: str) -> None:
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
        self.task = self.progress.add_task(description, total=None, fps=0.0, persons=0, latency="")
        self.persons_total = 0
        self.persons_max = 0
        self.frames_with_persons = 0
        self.live = False

    def __enter__(self) -> RunReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.stop()

    def on_open(self, info: Any) -> None:
        self.live = info.live
        self.progress.update(self.task, total=info.frames or None)

    def limit(self, frames: int | None) -> None:
        task = self.progress.tasks[0]
        if frames and (task.total is None or frames < task.total):
            self.progress.update(self.task, total=frames)

    def on_frame(self, written: Written, stats: RunStats | None = None) -> None:
        count = len(written.result.persons)
        self.persons_total += count
        self.persons_max = max(self.persons_max, count)
        self.frames_with_persons += count > 0
        task = self.progress.tasks[0]
        fps = (task.completed + 1) / task.elapsed if task.elapsed else 0.0
        latency = ""
        if self.live and stats is not None and (p50 := stats.latency_percentile(50)) is not None:
            latency = f"latency {p50 * 1000:.0f} ms" + (f", {stats.dropped_frames} dropped" if stats.dropped_frames else "")
        self.progress.update(self.task, advance=1, fps=fps, persons=count, latency=latency)

    def summary(self, stats: RunStats) -> Table:
        table = Table(title="vidparse run", show_header=False, title_justify="left")
        table.add_column("what")
        table.add_column("value", justify="right")
        table.add_row("frames", f"{stats.frames}")
        table.add_row("wall time", f"{stats.wall_s:.1f} s")
        table.add_row("throughput (after start-up)", f"{stats.steady_fps:.2f} fps")
        table.add_row("start-up (processes, models, first frame)", f"{stats.startup_s:.1f} s")
        table.add_row("persons (all frames / most in one)", f"{self.persons_total} / {self.persons_max}")
        table.add_row("frames with persons", f"{self.frames_with_persons}")
        if self.live and stats.recent_latency_s:
            table.add_row("latency p50 / p95 (capture to written, last 1000)",
                          f"{stats.latency_percentile(50) * 1000:.0f} / {stats.latency_percentile(95) * 1000:.0f} ms")
        if stats.dropped_frames:
            table.add_row("frames dropped (live policy)", f"{stats.dropped_frames}")
        if stats.source_restarts:
            table.add_row("[yellow]source restarts (watchdog)", f"[yellow]{stats.source_restarts}")
        if stats.skipped_packets:
            table.add_row("undecodable packets skipped", f"{stats.skipped_packets}")
        for stage in sorted(stats.stage_s, key=lambda s: STAGE_ORDER.index(s) if s in STAGE_ORDER else 99):
            per_frame = stats.stage_s[stage] / max(1, stats.frames) * 1000
            table.add_row(f"{stage} (busy, per frame)", f"{per_frame:.1f} ms")
        if stats.degraded:
            table.add_row("[yellow]worker restarts / frames retried", f"[yellow]{stats.worker_restarts} / {stats.retried_frames}")
            unparsed = ", ".join(map(str, stats.unparsed_frames[:10])) + (" …" if len(stats.unparsed_frames) > 10 else "")
            table.add_row("[yellow]frames written without labels", f"[yellow]{len(stats.unparsed_frames)} {unparsed}")
        if stats.interrupted:
            table.add_row("[yellow]stopped early", "[yellow]Ctrl-C")
        return table
