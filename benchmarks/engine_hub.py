"""The engine before and after a change, back to back: `vidparse run` fps and the hub thread's busy share.

The older engine is a git revision, unpacked into a scratch folder and put first on PYTHONPATH for its runs; the
newer one is this checkout. Runs alternate (before, after, before, after...) so load on a shared machine hits both
alike. Each run is a real `vidparse run` subprocess started through this script's ``--probe`` mode, which times
every `multiprocess.connection.wait` call per thread: the hub thread is the one that waits most (the main thread
before the split, ``vidparse-hub`` after), and its busy share is 1 - (time waiting / time from its first wait to
its last). fps is the run's steady rate (after the first frame), from the run's own summary. CPU s/frame is the
CPU time of the run's process and its children (workers, source), start-up included, per frame written: on a
loaded machine it says whether a change costs more work where fps only says how much CPU the run was given. Usage,
from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/engine_hub.py ../shared/data/video/vtest.avi \\
        --before 3852d77 --frames 300 --repeat 1 -- --config fast --workers 2
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "ENGINE-HUB "


def probe(argv: list[str]) -> None:
    """Run `vidparse` with ``argv`` in this process, timing waits per thread; print one JSON line at exit."""
    import multiprocess.connection

    from vidparse import cli, progress

    waits: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0])  # first, last, waited, calls
    original_wait = multiprocess.connection.wait

    def timed_wait(*args, **kwargs):
        started = time.perf_counter()
        try:
            return original_wait(*args, **kwargs)
        finally:
            ended = time.perf_counter()
            record = waits[threading.current_thread().name]
            record[0] = record[0] or started
            record[1] = ended
            record[2] += ended - started
            record[3] += 1

    multiprocess.connection.wait = timed_wait
    summaries = []
    original_summary = progress.RunReporter.summary

    def summary(self, stats):
        summaries.append(stats)
        return original_summary(self, stats)

    progress.RunReporter.summary = summary

    def report() -> None:
        name, (first, last, waited, _) = max(waits.items(), key=lambda item: item[1][3])
        stats = summaries[0]
        cpu_s = sum(usage.ru_utime + usage.ru_stime for usage in (resource.getrusage(resource.RUSAGE_SELF),
                                                                  resource.getrusage(resource.RUSAGE_CHILDREN)))
        print(RESULT_PREFIX + json.dumps({"hub_thread": name, "busy_share": 1 - waited / (last - first),
                                          "fps": stats.steady_fps, "frames": stats.frames,
                                          "cpu_s_per_frame": cpu_s / max(1, stats.frames)}), flush=True)

    atexit.register(report)
    sys.argv = ["vidparse", *argv]
    cli.main()


def unpack(revision: str, folder: Path) -> Path:
    """The package at ``revision`` as ``folder/vidparse`` (the repository root is the package)."""
    target = folder / "vidparse"
    target.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return folder


def measure(pythonpath: str | None, video: str, frames: int, run_args: list[str], scratch: Path) -> dict:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    else:
        env.pop("PYTHONPATH", None)
    command = [sys.executable, str(Path(__file__).resolve()), "--probe", "run", video, "-o", str(scratch / "out.mp4"),
               "--max-frames", str(frames), *run_args]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"run failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1][len(RESULT_PREFIX):])


def main() -> None:
    if sys.argv[1:2] == ["--probe"]:
        probe(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video")
    parser.add_argument("--before", required=True, help="git revision of the older engine")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1, help="before/after pairs")
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.run_args = argv[split + 1:]  # more `vidparse run` options, after --
    rows = []
    with tempfile.TemporaryDirectory(prefix="vidparse-engine-hub-") as scratch:
        before = str(unpack(args.before, Path(scratch) / "before"))
        for pair in range(args.repeat):
            for label, path in (("before", before), ("after", None)):
                result = measure(path, args.video, args.frames, args.run_args, Path(scratch))
                rows.append((label, pair, result))
                print(f"{label} #{pair + 1}: {result['fps']:.2f} fps, hub thread {result['hub_thread']} busy "
                      f"{result['busy_share']:.0%}, {result['cpu_s_per_frame']:.3f} CPU s/frame", file=sys.stderr,
                      flush=True)
    print(f"`{' '.join(args.run_args)}`, first {args.frames} frames of `{Path(args.video).name}`, before = "
          f"`{args.before}`\n")
    print("| engine | run | fps (steady) | hub thread busy | CPU s/frame |\n|---|---|---|---|---|")
    for label, pair, result in rows:
        print(f"| {label} | {pair + 1} | {result['fps']:.2f} | {result['busy_share']:.0%} | "
              f"{result['cpu_s_per_frame']:.3f} |")


if __name__ == "__main__":
    main()
