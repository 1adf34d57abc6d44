"""Batch progress (files done and failed, frames per second over every node, ETA) and the summary table."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from vidparse.batch.manifest import Record


class BatchProgress:
    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[status]}"), console=console)
        self._task = self._progress.add_task("frames", total=0, status="")
        self._started = time.monotonic()
        self.frames = self.total = self.done = self.failed = self.skipped = 0

    def __enter__(self) -> BatchProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    @property
    def fps(self) -> float:
        return self.frames / max(time.monotonic() - self._started, 1e-9)

    def planned(self, frames: int) -> None:
        self.total += frames
        self._update()

    def segment_done(self, frames: int) -> None:
        self.frames += frames
        self._update()

    def dropped(self, frames: int) -> None:
        """Frames of a failed input that will never come."""
        self.total -= frames
        self._update()

    def finished(self, record: Record) -> None:
        self.done += record.state == "done"
        self.failed += record.state == "failed"
        if record.state == "failed":
            self.console.print(f"[bold red]failed:[/] {escape(record.error or '')}", highlight=False, soft_wrap=True)
        self._update()

    def _update(self) -> None:
        fps = self.fps
        eta = f"{(self.total - self.frames) / fps:.0f} s" if fps > 0 else "?"
        self._progress.update(self._task, total=self.total, completed=self.frames,
                              status=f"files {self.done} done, {self.failed} failed, {self.skipped} skipped · "
                                     f"{fps:.1f} fps in all · ETA {eta}")


def _shown(path: str) -> str:
    """An input or output path as short as it can be said from here (the manifest holds them absolute)."""
    return os.path.relpath(path) if Path(path).is_absolute() and Path(path).is_relative_to(Path.cwd()) else path


def summary_table(records: list[Record], skipped: list[Record]) -> Table:
    table = Table(title="vidparse batch")
    for column in ("input", "state", "frames", "segments", "attempts", "fps", "seconds", "output or error"):
        table.add_column(column, justify="left" if column in ("input", "state", "output or error") else "right")
    for record in records + skipped:
        state = "skipped (done)" if record in skipped else record.state
        table.add_row(escape(_shown(record.input)), state, str(record.frames), str(record.segments),
                      str(record.attempts), f"{record.fps:.2f}", f"{record.seconds:.1f}",
                      escape(record.error or ", ".join(map(_shown, record.outputs))),
                      style="red" if record.state == "failed" else None)
    return table
