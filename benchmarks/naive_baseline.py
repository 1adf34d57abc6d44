"""Naive baseline versus vidparse: wall-clock frames per second for the same job on the same first N frames.

The naive baseline is what the project's seed service did, in one process: decode with cv2.VideoCapture, hand
the whole frame to BodyPix (the project's own model wrapper, onnxruntime's default threads), paint the masks
with a per-class Python loop (alpha 0.6) and write with cv2.VideoWriter (mp4v). It is timed from before model
loading to after ``writer.release()``.

Each ``--vidparse`` value is a ``vidparse run --config`` value (a YAML file or a preset name such as ``fast``;
``default`` means no --config), optionally followed by more ``vidparse run`` options for that run only
(``--vidparse "fast --parse-every 2"``), run as a real subprocess and timed around it, so interpreter start, imports and
model loading count against vidparse (they are mostly outside the naive timing: a conservative comparison).

Without ``--vidparse`` it runs BodyPix with the default settings (``default --model bodypix``) and the default
model (``default``). With ``--eval SHARED`` it also scores each vidparse run's --config and --model with
``vidparse eval`` on SHARED/data/{cihp,ccp} (coarse mIoU), so speed and quality come from the same settings.

Every output is decoded with PyAV and must hold exactly N frames at the source size; any mismatch is shown in
the table and makes the script exit 1. The load average (``os.getloadavg``) before and after is printed: on a
shared machine it says how far to trust the numbers. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/naive_baseline.py ../shared/data/video/vtest.avi \\
        --frames 200 [--vidparse "default --model bodypix" --vidparse fast] [--vidparse-args "--workers 2"] \\
        [--eval ../shared] [--markdown /tmp/naive.md] [--keep DIR]
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

log = logging.getLogger("naive_baseline")
ALPHA = 0.6
NAIVE = "naive"
DEFAULT = "default"
DEFAULT_RUNS = ["default --model bodypix", DEFAULT]
COLUMNS = ("run", "frames", "size", "wall s", "fps", "x naive")
EVAL_SETS = ("cihp", "ccp")


@dataclass
class Source:
    width: int
    height: int
    fps: float


@dataclass
class Run:
    name: str
    output: Path
    wall_s: float
    frames: int = 0
    width: int = 0
    height: int = 0
    miou: dict[str, float] | None = None  # coarse mIoU (%) per eval set, with --eval

    @property
    def fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def matches(self, frames: int, source: Source) -> bool:
        return self.frames == frames and (self.width, self.height) == (source.width, source.height)


def probe_source(video: Path) -> Source:
    capture = cv2.VideoCapture(str(video))
    try:
        if not capture.isOpened():
            raise SystemExit(f"cannot open {video}")
        return Source(int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)),
                      capture.get(cv2.CAP_PROP_FPS) or 25.0)
    finally:
        capture.release()


def paint_naive(image: np.ndarray, labels: np.ndarray, colors: np.ndarray, classes: int) -> np.ndarray:
    """The seed service's compositing: one boolean mask and one fancy-indexed blend per class."""
    out = image.copy()
    for class_id in range(1, classes):
        mask = labels == class_id
        out[mask] = (image[mask] * (1 - ALPHA) + colors[class_id] * ALPHA).astype(np.uint8)
    return out


def run_naive(video: Path, output: Path, frames: int, source: Source) -> Run:
    """Decode, parse the whole frame, paint and encode, one frame after the other in this process."""
    from vidparse.model_store import resolve_model
    from vidparse.stages.labels import load_label_set
    from vidparse.stages.parsers.bodypix import BodyPixParser, Options

    start = time.perf_counter()
    parser = BodyPixParser(resolve_model("bodypix"), Options(), None)
    parser.open()
    label_set = load_label_set("bodypix")
    capture = cv2.VideoCapture(str(video))
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*"mp4v"), source.fps, (source.width, source.height))
    if not writer.isOpened():
        raise SystemExit(f"cv2.VideoWriter cannot write {output}")
    for _ in range(frames):
        ok, image = capture.read()
        if not ok:
            break
        labels = parser.parse([image])[0]
        writer.write(paint_naive(image, labels, label_set.colors, len(label_set.names)))
    capture.release()
    writer.release()
    return Run(NAIVE, output, time.perf_counter() - start)


def vidparse_command(video: Path, output: Path, frames: int, run: str, extra: Sequence[str]) -> list[str]:
    """``run`` is a --config value (or 'default'), then options for this run only."""
    config, *options = shlex.split(run)
    command = [sys.executable, "-m", "vidparse", "run", str(video), "-o", str(output), "--max-frames", str(frames)]
    if config != DEFAULT:
        command += ["--config", config]
    return command + options + list(extra)


def run_vidparse(command: list[str], name: str, output: Path) -> Run:
    """The real CLI in a fresh process; exits with its code (after its stderr) if it fails."""
    log.debug("%s", shlex.join(command))
    start = time.perf_counter()
    result = subprocess.run(command, check=False, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        log.error("vidparse run '%s' failed with exit code %d", name, result.returncode)
        raise SystemExit(result.returncode)
    return Run(name, output, wall_s)


def eval_command(run: str, shared: Path, dataset: str, report: Path) -> list[str]:
    """``vidparse eval`` of one data set with a run's --config and --model (its other options are run-only)."""
    config, *options = shlex.split(run)
    command = [sys.executable, "-m", "vidparse", "eval", str(shared / "data" / dataset / "images"),
               str(shared / "data" / dataset / "labels"), "--label-set", dataset, "--json", str(report)]
    if config != DEFAULT:
        command += ["--config", config]
    if "--model" in options:
        command += ["--model", options[options.index("--model") + 1]]
    return command


def run_eval(run: Run, shared: Path, work: Path) -> None:
    run.miou = {}
    for dataset in EVAL_SETS:
        report = work / f"{run.output.stem}-{dataset}.json"
        command = eval_command(run.name, shared, dataset, report)
        log.debug("%s", shlex.join(command))
        result = subprocess.run(command, check=False, capture_output=True, text=True)
        if result.returncode != 0:
            sys.stderr.write(result.stderr)
            raise SystemExit(result.returncode)
        run.miou[dataset] = 100 * json.loads(report.read_text())["miou"]


def count_output(run: Run) -> None:
    """Decode the output with PyAV (what a player sees): frames, width and height."""
    try:
        with av.open(str(run.output)) as container:
            stream = container.streams.video[0]
            run.width, run.height = stream.width, stream.height
            run.frames = sum(1 for _ in container.decode(stream))
    except (av.FFmpegError, IndexError) as exc:
        log.error("cannot decode %s: %s", run.output, exc)


def output_name(index: int, config: str) -> str:
    return f"vidparse-{index}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', Path(shlex.split(config)[0]).stem)}.mp4"


def columns(runs: list[Run]) -> tuple[str, ...]:
    scored = any(run.miou for run in runs)
    return COLUMNS + (tuple(f"{d.upper()} mIoU" for d in EVAL_SETS) if scored else ())


def rows(runs: list[Run], frames: int, source: Source) -> list[tuple[str, ...]]:
    naive_fps = runs[0].fps
    scored = any(run.miou for run in runs)
    table = []
    for run in runs:
        ok = run.matches(frames, source)
        row = (run.name if ok else f"{run.name} (MISMATCH)", str(run.frames), f"{run.width}x{run.height}",
               f"{run.wall_s:.1f}", f"{run.fps:.2f}", f"{run.fps / naive_fps:.2f}x" if naive_fps > 0 else "n/a")
        if scored:
            row += tuple(f"{run.miou[d]:.1f}" if run.miou else "" for d in EVAL_SETS)
        table.append(row)
    return table


def print_table(table: list[tuple[str, ...]], header: tuple[str, ...], title: str, machine: str) -> None:
    rich_table = Table(title=title)
    for column in header:
        rich_table.add_column(column, justify="left" if column == "run" else "right")
    for row in table:
        rich_table.add_row(*row)
    console = Console()
    console.print(rich_table)
    console.print(f"machine: {machine}", soft_wrap=True)


def markdown(table: list[tuple[str, ...]], header: tuple[str, ...], title: str, command: str, machine: str) -> str:
    lines = [f"# {title}", "", f"`{command}`", "", f"machine: {machine}", "",
             f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}", "",
             "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", type=Path)
    parser.add_argument("--frames", type=int, default=300, help="first N frames, the same for every run")
    parser.add_argument("--vidparse", action="append", metavar="CONFIG",
                        help="a `vidparse run --config` value or 'default', then options for this run only "
                             f"(repeatable; default: {' and '.join(repr(r) for r in DEFAULT_RUNS)})")
    parser.add_argument("--vidparse-args", default="", help="extra `vidparse run` arguments for every vidparse run")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown here (overwritten)")
    parser.add_argument("--keep", type=Path, help="write the outputs here instead of a temporary folder")
    parser.add_argument("--eval", type=Path, metavar="SHARED",
                        help="also score each vidparse run's settings with `vidparse eval` on SHARED/data/cihp and ccp")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be >= 1")
    args.vidparse = args.vidparse or DEFAULT_RUNS
    return args


def benchmark(args: argparse.Namespace, work: Path, source: Source) -> list[Run]:
    log.info("naive: %d frames of %s", args.frames, args.video.name)
    runs = [run_naive(args.video, work / "naive.mp4", args.frames, source)]
    extra = shlex.split(args.vidparse_args)
    for index, config in enumerate(args.vidparse):
        output = work / output_name(index, config)
        log.info("vidparse %s: %d frames", config, args.frames)
        runs.append(run_vidparse(vidparse_command(args.video, output, args.frames, config, extra), config, output))
    for run in runs:
        count_output(run)
    if args.eval:
        for run in runs[1:]:
            log.info("vidparse eval %s", run.name)
            run_eval(run, args.eval, work)
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s",
                        handlers=[RichHandler(console=Console(stderr=True), show_path=False)], force=True)
    source = probe_source(args.video)
    load_before = os.getloadavg()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        runs = benchmark(args, args.keep, source)
    else:
        with tempfile.TemporaryDirectory(prefix="naive-baseline-") as tmp:
            runs = benchmark(args, Path(tmp), source)

    from vidparse.bench import machine_description

    load = ", ".join(f"{value:.1f}" for value in (*load_before, *os.getloadavg()))
    machine = f"{machine_description()}; load average (1, 5, 15 min) before and after: {load}"
    title = f"Naive baseline vs vidparse: first {args.frames} frames of {args.video.name}"
    table, header = rows(runs, args.frames, source), columns(runs)
    print_table(table, header, title, machine)
    if args.markdown:
        script = os.path.relpath(__file__) if not os.path.relpath(__file__).startswith("..") else __file__
        args.markdown.write_text(markdown(table, header, title, shlex.join(["python", script, *argv]), machine))
    bad = [run.name for run in runs if not run.matches(args.frames, source)]
    if bad:
        log.error("outputs not %d frames at %dx%d: %s", args.frames, source.width, source.height, ", ".join(bad))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
