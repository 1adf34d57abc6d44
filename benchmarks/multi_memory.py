"""Memory of many streams on one worker pool: what an extra stream costs, against what an extra worker costs.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/multi_memory.py --markdown /tmp/multi_memory.md  # pasted into docs/multi.md

Runs `vidparse run CLIP x K -o OUTDIR/ --workers N --max-frames F` for K = 1, 2, 3 streams on N workers (and one
run with N + 1 workers and one stream), and samples the peak PSS of the whole process tree (shared pages, the
frame slots included, counted once; `vidparse.pipeline.memory.PeakMemory`). An extra stream adds a source process,
its frame slots and its output (encoder, writer thread); an extra worker adds a process with its own copy of the
models. The clip is vtest (768x576): one frame slot holds the frame and its labels, 768 x 576 x 4 bytes.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from vidparse.config import Config  # noqa: E402
from vidparse.pipeline.memory import MB, PeakMemory  # noqa: E402

SLOT_MB = 768 * 576 * 4 / MB


def peak_mb(clip: Path, streams: int, workers: int, frames: int, model: str, scratch: Path) -> float:
    out = scratch / f"k{streams}_n{workers}"
    copies = []
    for index in range(streams):  # one file per stream, so each has its own name and output
        copies.append(scratch / f"clip{index}{clip.suffix}")
        shutil.copy(clip, copies[-1])
    command = [sys.executable, "-m", "vidparse", "run", *map(str, copies), "-o", str(out if streams > 1 else
               out.with_suffix(".mp4")), "--workers", str(workers), "--max-frames", str(frames), "--model", model]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with PeakMemory(process.pid, interval_s=0.1) as memory:
        _, stderr = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"vidparse exited with {process.returncode}:\n{stderr}")
    return memory.peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--frames", type=int, default=12, help="frames per stream")
    parser.add_argument("--model", default=Config().model)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--markdown", type=Path, help="append the table to this file")
    args = parser.parse_args()
    clip = args.shared / "data" / "video" / "vtest.avi"
    slots = Config().queue_size + 2 * args.workers
    rows = ["| streams | workers | peak tree PSS MB | more than the row above |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="vidparse-multi-memory-") as scratch:
        peaks: list[float] = []
        for streams in (1, 2, 3):
            peaks.append(peak_mb(clip, streams, args.workers, args.frames, args.model, Path(scratch)))
            growth = f"{peaks[-1] - peaks[-2]:+.0f}" if len(peaks) > 1 else ""
            rows.append(f"| {streams} | {args.workers} | {peaks[-1]:.0f} | {growth} |")
        one_stream = peaks[0]
        more_workers = peak_mb(clip, 1, args.workers + 1, args.frames, args.model, Path(scratch))
        rows.append(f"| 1 | {args.workers + 1} | {more_workers:.0f} | {more_workers - one_stream:+.0f} (vs. 1 stream, "
                    f"{args.workers} workers) |")
    text = (f"machine: {platform.machine()}, Python {platform.python_version()}; model {args.model}, "
            f"{args.frames} frames of vtest (768x576) per stream; a stream's frame pool: {slots} slots x "
            f"{SLOT_MB:.2f} MB = {slots * SLOT_MB:.0f} MB\n\n" + "\n".join(rows) + "\n")
    print(text)
    if args.markdown:
        with args.markdown.open("a") as markdown:
            markdown.write("\n" + text)


if __name__ == "__main__":
    main()
