"""`vidparse batch` on a Ray cluster of 1 node against 2 nodes (1 CPU each) on this machine, and the CPU time per
frame that docs/scale.md's cost model starts from.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/batch_nodes.py --markdown docs/batch_nodes.md

Cuts ``--clips`` clips of ``--frames`` frames from vtest (H.264, ``--size``), starts a real Ray cluster on 127.0.0.1
(tests/ray_cluster.py), runs the batch on 1 node, adds a second node and runs it again into a new folder. Then it
runs the same batch with ``--engine local`` and ``--model`` to measure CPU seconds per frame: user + system time of
every process of the batch (getrusage of the reaped children: decode, detect, parse, compose, encode, join).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from ray_cluster import RayCluster  # noqa: E402

VTEST = Path(os.environ.get("VIDPARSE_SHARED", REPO.parent / "shared")) / "data" / "video" / "vtest.avi"


def make_clips(folder: Path, clips: int, frames: int, size: str) -> list[Path]:
    paths = []
    for i in range(clips):
        path = folder / f"clip{i}.mp4"
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-ss", str(i * frames / 10), "-i", str(VTEST),
                        "-frames:v", str(frames), "-vf", f"scale={size}", "-c:v", "libx264", "-an", str(path)],
                       check=True)
        paths.append(path)
    return paths


def batch(clips: list[Path], outdir: Path, *options: str) -> tuple[float, float]:
    """Wall seconds and CPU seconds (every reaped child process) of one `vidparse batch`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "vidparse", "batch", *map(str, clips), "-o", str(outdir), *options],
                   check=True, stdout=subprocess.DEVNULL)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4)
    parser.add_argument("--frames", type=int, default=30)
    parser.add_argument("--size", default="384:288")
    parser.add_argument("--config", default="fast", help="config of the 1-vs-2-node runs")
    parser.add_argument("--model", default="cihp-lite", help="model of the CPU-per-frame run (local engine)")
    parser.add_argument("--cpu-frames", type=int, default=40, help="frames per clip of the CPU-per-frame run")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="batch-nodes-") as scratch:
        folder = Path(scratch)
        clips = make_clips(folder, args.clips, args.frames, args.size)
        total = args.clips * args.frames
        rows = []
        cluster = RayCluster()
        try:
            cluster.start(nodes=1)
            for nodes in (1, 2):
                if nodes == 2:
                    cluster.add_node()
                wall, _ = batch(clips, folder / f"ray{nodes}", "--engine", "ray", "--ray-address", cluster.address,
                                "--config", args.config)
                rows.append((nodes, wall, total / wall))
                print(f"{nodes} node(s): {wall:.1f} s, {total / wall:.2f} fps", flush=True)
        finally:
            cluster.stop()
        (folder / "cpu").mkdir()
        cpu_clips = make_clips(folder / "cpu", 2, args.cpu_frames, "768:576")
        cpu_wall, cpu = batch(cpu_clips, folder / "local", "--model", args.model)
        cpu_frames = 2 * args.cpu_frames
        print(f"local, {args.model}, 768x576: {cpu / cpu_frames:.3f} CPU s per frame ({cpu_wall:.1f} s wall)")

    lines = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs "
             f"(timings are indicative)", "",
             f"`vidparse batch --engine ray --config {args.config}`: {args.clips} clips x {args.frames} frames of "
             f"vtest at {args.size.replace(':', 'x')}, one Ray task per clip, 1 CPU per node", "",
             "| nodes | CPUs | wall s | fps | speed-up |", "|---|---|---|---|---|"]
    for nodes, wall, fps in rows:
        lines.append(f"| {nodes} | {nodes} | {wall:.1f} | {fps:.2f} | {fps / rows[0][2]:.2f}x |")
    lines += ["", f"CPU time per frame, `vidparse batch --engine local --model {args.model}`, 2 clips x "
                  f"{args.cpu_frames} frames of vtest at 768x576: **{cpu / cpu_frames:.3f} CPU s per frame** "
                  f"(user + system of every process, start-ups included; {cpu_wall:.1f} s wall)"]
    print("\n".join(lines))
    if args.markdown:
        args.markdown.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
