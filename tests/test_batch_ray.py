"""`vidparse batch --engine ray` on a real two-node Ray cluster on 127.0.0.1 (1 CPU each): 4 short clips and a
long one cut into 3 segments, given by relative paths from another folder than the nodes', the second node's raylet
killed mid-batch, outputs gathered to the driver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batch_media import BATCH_CONFIG, LONG_FRAMES, SHORT_FRAMES, BatchClips, Reference, assert_matches_reference
from batch_media import frame_times
from ray_cluster import RayCluster

BATCH_TIMEOUT_S = 600
KILL_WAIT_S = 300


@pytest.fixture
def cluster() -> Iterator[RayCluster]:
    cluster = RayCluster()
    try:
        yield cluster.start(nodes=2)
    finally:
        cluster.stop()


def batch(cluster: RayCluster, clips: BatchClips, outdir: Path, relative: bool = False) -> subprocess.Popen:
    """The batch of the clips; ``relative``: run from the clips' folder with paths relative to it (the nodes started
    in another folder)."""
    inputs = [str(clips.long), *map(str, clips.short)]
    if relative:
        inputs, outdir = [os.path.relpath(p, clips.folder) for p in inputs], Path(os.path.relpath(outdir, clips.folder))
    return subprocess.Popen([sys.executable, "-m", "vidparse", "batch", *inputs, "-o", str(outdir), "--engine", "ray",
                             "--ray-address", cluster.address, "--gather", "--masks", "--config", str(BATCH_CONFIG)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"}, cwd=clips.folder if relative else None)


@pytest.mark.slow
def test_ray_batch_survives_a_dead_node_and_equals_run(cluster: RayCluster, batch_clips: BatchClips,
                                                       batch_reference: Reference, tmp_path: Path) -> None:
    too_big = subprocess.run([sys.executable, "-m", "vidparse", "batch", str(batch_clips.short[0]), "-o",
                              str(tmp_path / "never"), "--engine", "ray", "--ray-address", cluster.address,
                              "--cpus-per-task", "2", "--config", str(BATCH_CONFIG)],
                             capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert too_big.returncode == 2 and "--cpus-per-task 2 is more than any node" in too_big.stderr, too_big.stderr
    assert "hint: --cpus-per-task 1" in too_big.stderr, "refused at once: Ray would wait for such a node for ever"
    process = batch(cluster, batch_clips, tmp_path, relative=True)
    deadline = time.monotonic() + KILL_WAIT_S
    while not cluster.running_task_on(1) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the batch ended before the second node ran a segment"
    assert cluster.running_task_on(1), "the second node never ran a segment"
    cluster.kill_raylet(1)  # mid-segment: Ray reruns the lost task on the head
    stdout, stderr = process.communicate(timeout=BATCH_TIMEOUT_S)
    assert process.returncode == 0, stderr

    records = {Path(r["input"]).name: r for r in map(json.loads, (tmp_path / "manifest.jsonl").read_text().splitlines())}
    assert {name: r["state"] for name, r in records.items()} == {p.name: "done" for p in
                                                                 [batch_clips.long, *batch_clips.short]}
    assert records["long.mp4"]["segments"] == 3 and records["long.mp4"]["frames"] == LONG_FRAMES
    assert_matches_reference(tmp_path, batch_reference)  # every frame once, `vidparse run`'s masks and timestamps
    for clip in batch_clips.short:
        assert len(frame_times(tmp_path / clip.name)) == SHORT_FRAMES
        assert len(list((tmp_path / f"{clip.stem}_masks").iterdir())) == SHORT_FRAMES

    again = batch(cluster, batch_clips, tmp_path)  # absolute paths now: the same inputs
    _, stderr = again.communicate(timeout=BATCH_TIMEOUT_S)
    assert again.returncode == 0, stderr
    assert "0 done, 0 failed, 5 skipped" in stderr
