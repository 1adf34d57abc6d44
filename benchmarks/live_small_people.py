"""Live latency with and without the small-people pass (issue 31: live streams keep their latency bound).

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/live_small_people.py --seconds 60 --rounds 2

Starts the test RTSP server (tests/rtsp_server.py, system python3 + GStreamer) on 127.0.0.1 looping vtest scaled to
1280x720 at 25 fps (wide enough for the tiles and the zoomed look), then runs `vidparse run` on it with the defaults
with the scan added (`detector.scan_below: 60`, the crowd preset's) and with the pass off (`detector.tiles: 0`,
`detector.zoom_below: 0`, `detector.scan_below: 0`, `parsers.cihp-net.wide_frame_width: 0`), alternating, each for
``--seconds``, and prints a table from each run's own summary. Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from rtsp import RtspServer, make_h264_clip  # noqa: E402
from run_summary import summary_rows  # noqa: E402

SIZE = (1280, 720)
ROWS = {"throughput (after start-up)": "fps", "latency p50 / p95 (capture to written, last 1000)": "latency p50 / p95",
        "frames dropped (live policy)": "dropped", "persons (all frames / most in one)": "persons (all / most)",
        "detect (busy, per frame)": "detect", "parse (busy, per frame)": "parse"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vidparse-live-small-"))
    clip = make_h264_clip(args.shared / "data" / "video" / "vtest.avi", scratch / "wide.mp4", frames=250, size=SIZE)
    off = scratch / "off.yaml"
    off.write_text("detector:\n  tiles: 0\n  zoom_below: 0\n  scan_below: 0\nparsers:\n  cihp-net:\n    wide_frame_width: 0\n")
    scan = scratch / "scan.yaml"
    scan.write_text("detector:\n  scan_below: 60\n")  # the crowd preset's scan (docs/crowds.md, "The scan")
    settings = {"on (defaults)": [], "on + scan": ["--config", str(scan)], "off": ["--config", str(off)]}
    print(f"load average before: {os.getloadavg()}", flush=True)
    rows = []
    server = RtspServer(clip).start()
    try:
        for round_ in range(args.rounds):
            for name, extra in settings.items():
                command = [sys.executable, "-m", "vidparse", "run", server.url, "-o", str(scratch / "out.mp4"), *extra]
                process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                           env={**os.environ, "COLUMNS": "200"})
                time.sleep(args.seconds)
                process.send_signal(signal.SIGINT)
                _, stderr = process.communicate(timeout=120)
                summary = summary_rows(stderr)
                rows.append((round_ + 1, name, {short: summary[row] for row, short in ROWS.items() if row in summary}))
    finally:
        server.stop()
    print(f"load average after: {os.getloadavg()}")
    print(f"\n{args.seconds:g} s each of `vidparse run` on a 25 fps {SIZE[0]}x{SIZE[1]} RTSP loop of vtest\n")
    columns = list(ROWS.values())
    print("| round | small-people pass | " + " | ".join(columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for round_, name, values in rows:
        print(f"| {round_} | {name} | " + " | ".join(values.get(column, "-") for column in columns) + " |")


if __name__ == "__main__":
    main()
