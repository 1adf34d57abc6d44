"""Soak test for live input: `vidparse run` on a looping RTSP stream for a long time, recording latency and memory.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/live_soak.py --minutes 10 --markdown /tmp/soak.md  # pasted into docs/live.md

Starts the test RTSP server (tests/rtsp_server.py, system python3 + GStreamer) on 127.0.0.1, runs vidparse with
one worker (parsing is slower than the 25 fps stream, so the drop policy is exercised), samples the process tree's
memory every few seconds and reads per-frame latency from --stats. Prints a table per minute.
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

from vidparse.pipeline.memory import MB, tree_pss_bytes  # noqa: E402
from vidparse.pipeline.stats import percentile  # noqa: E402


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vidparse-soak-"))
    clip = make_h264_clip(args.shared / "data" / "video" / "vtest.avi", scratch / "clip.mp4")
    server = RtspServer(clip).start()
    stats_path = scratch / "stats.jsonl"
    command = [sys.executable, "-m", "vidparse", "run", server.url, "-o", str(scratch / "live.mp4"), "--workers", "1",
               "--stats", str(stats_path), "--config", str(REPO / "tests" / "fast.yaml")]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started = time.monotonic()
    samples: list[tuple[float, float, float]] = []  # seconds, tree PSS MB, main RSS MB
    try:
        while time.monotonic() - started < args.minutes * 60 and process.poll() is None:
            samples.append((time.monotonic() - started, tree_pss_bytes(process.pid) / MB, rss_mb(process.pid)))
            time.sleep(5)
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
        server.stop()
    records = [json.loads(line) for line in stats_path.read_text().splitlines()]
    first_wall = records[0]["time_s"] if records else 0
    rows = []
    for minute in range(int(args.minutes + 0.999)):
        in_minute = [r["latency_ms"] for r in records if minute * 60 <= r["time_s"] - first_wall < (minute + 1) * 60]
        memory = [s for s in samples if minute * 60 <= s[0] < (minute + 1) * 60]
        if not in_minute or not memory:
            continue
        rows.append((minute + 1, len(in_minute), percentile(in_minute, 50), percentile(in_minute, 95),
                     memory[-1][1], memory[-1][2]))
    after_first = next((s for s in samples if s[0] >= 60), samples[0])
    end = samples[-1]
    lines = [
        f"machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}; "
        f"`{' '.join(['vidparse', 'run', 'rtsp://127.0.0.1:PORT/live', '--workers', '1', '--config', 'tests/fast.yaml'])}` "
        f"for {args.minutes:g} min on a 25 fps 768x576 RTSP loop of vtest",
        "",
        "| minute | frames written | latency p50 ms | latency p95 ms | tree PSS MB (end of minute) | main RSS MB |",
        "|---|---|---|---|---|---|",
        *[f"| {m} | {n} | {p50:.0f} | {p95:.0f} | {pss:.0f} | {rss:.0f} |" for m, n, p50, p95, pss, rss in rows],
        "",
        f"memory after the first minute: tree PSS {after_first[1]:.0f} MB, main RSS {after_first[2]:.0f} MB; at the end: "
        f"tree PSS {end[1]:.0f} MB ({(end[1] / after_first[1] - 1) * 100:+.1f}%), main RSS {end[2]:.0f} MB "
        f"({(end[2] / after_first[2] - 1) * 100:+.1f}%)",
        f"frames written {len(records)}; all latencies p50 {percentile([r['latency_ms'] for r in records], 50):.0f} ms, "
        f"p95 {percentile([r['latency_ms'] for r in records], 95):.0f} ms",
    ]
    summary = [line for line in stderr.splitlines() if "dropped" in line or "latency" in line]
    lines += ["", "vidparse's own summary:", "", *[f"    {line}" for line in summary]]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
