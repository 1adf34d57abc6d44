"""Fairness: three live streams on one pool of workers, each should get about a third of the parsed frames.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/fairness.py --seconds 60 --markdown /tmp/fairness.md  # pasted into docs/multi.md

Starts three test RTSP servers (tests/rtsp_server.py, system python3 + GStreamer) on 127.0.0.1, each looping
vtest at 25 fps, and runs one `vidparse run URL1 URL2 URL3 -o OUTDIR/ --workers 2 --config tests/fast.yaml
--stats STATSDIR/`: parsing is slower than the three cameras together, so every stream drops frames and the
scheduler decides who gets a worker. Once every stream has written a frame, it counts the frames each stream
writes in the next ``--seconds`` (one stats line per parsed frame; the stats files are buffered, so the window's
start is known to within a few frames), then stops the run with Ctrl-C (SIGINT).
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from rtsp import RtspServer, make_h264_clip  # noqa: E402

from vidparse.pipeline.stats import percentile  # noqa: E402

STREAMS = 3


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def milliseconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--markdown", type=Path, help="append the table to this file")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vidparse-fairness-"))
    clip = make_h264_clip(args.shared / "data" / "video" / "vtest.avi", scratch / "clip.mp4")
    servers = [RtspServer(clip, path=f"cam{i}").start() for i in range(STREAMS)]
    stats = scratch / "stats"
    command = [sys.executable, "-m", "vidparse", "run", *(s.url for s in servers), "-o", str(scratch / "out"),
               "--workers", str(args.workers), "--config", str(REPO / "tests" / "fast.yaml"), "--stats", str(stats)]
    names = [f"127.0.0.1_{s.port}_cam{i}" for i, s in enumerate(servers)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while not all(lines(stats / f"{name}.jsonl") for name in names):
            if process.poll() is not None:
                raise SystemExit(f"vidparse ended early:\n{process.stderr.read()}")
            time.sleep(0.5)
        before = [len(lines(stats / f"{name}.jsonl")) for name in names]
        time.sleep(args.seconds)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        after = [lines(stats / f"{name}.jsonl") for name in names]  # complete now (the frames in flight too)
    finally:
        if process.poll() is None:
            process.kill()
        for server in servers:
            server.stop()
    counts = [len(records) - start for records, start in zip(after, before)]
    total = sum(counts)
    rows = ["| stream | frames parsed in the window | share | latency p50 ms | latency p95 ms |", "|---|---|---|---|---|"]
    for index, (records, start, count) in enumerate(zip(after, before, counts)):
        latencies = [r["latency_ms"] for r in records[start:] if r.get("latency_ms") is not None]
        p50, p95 = (percentile(latencies, q) for q in (50, 95))
        rows.append(f"| cam{index} | {count} | {count / total:.1%} | {milliseconds(p50)} | {milliseconds(p95)} |")
    rows.append(f"| all | {total} ({total / args.seconds:.2f} fps) | 100% | | |")
    machine = f"{platform.machine()}, Python {platform.python_version()}"
    text = (f"machine: {machine}; {STREAMS} RTSP streams at 25 fps, {args.workers} workers, "
            f"{args.seconds:g} s window after every stream's first frame\n\n" + "\n".join(rows) + "\n")
    print(text)
    if process.returncode not in (0, 130):
        print(f"vidparse exited with {process.returncode}:\n{stderr}")
    if args.markdown:
        with args.markdown.open("a") as markdown:
            markdown.write("\n" + text)


if __name__ == "__main__":
    main()
