"""`vidparse run` options and fault reports that had no test: each shown, end to end, to do what it says."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import VTEST, cut_clip, probe_video, run_cli

FAST = str(Path(__file__).with_name("fast.yaml"))
DEGRADED = 8


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clip20(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_clip(VTEST, tmp_path_factory.mktemp("clips") / "vtest20.avi", 20)


@pytest.mark.slow
def test_policy_drop_drops_frames_of_a_file_that_block_writes_in_full(clip20: Path, tmp_path: Path) -> None:
    """A file decodes far faster than one worker parses: `drop` keeps only the newest waiting frame, `block`
    (what `auto` picks for files) makes the source wait and loses nothing."""
    written = {}
    for policy in ("block", "drop"):
        stats = tmp_path / f"{policy}.jsonl"
        result = run_cli("run", str(clip20), "-o", str(tmp_path / f"{policy}.mp4"), "--workers", "1", "--policy",
                         policy, "--stats", str(stats), "--config", FAST)
        assert result.returncode == 0, result.stderr
        seqs = [r["seq"] for r in records(stats)]
        assert probe_video(tmp_path / f"{policy}.mp4").frames == len(seqs)
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
        written[policy] = (seqs, result.stderr.replace("\n", " "))
    seqs, summary = written["block"]
    assert seqs == list(range(20)) and "frames dropped" not in summary
    seqs, summary = written["drop"]
    assert len(seqs) < 20, "frames were dropped"
    dropped = re.search(r"frames dropped \(live policy\)\W*(\d+)", summary)
    assert dropped and int(dropped.group(1)) == 20 - len(seqs), summary


SLOT_PROBE = """
import sys
from vidparse.pipeline import session
from vidparse.cli import main

class Counted(session.SharedSlots):
    def __init__(self, layout, count):
        print(f"SLOTS {count}", file=sys.stderr, flush=True)
        super().__init__(layout, count)

session.SharedSlots = Counted
sys.argv = ["vidparse", *sys.argv[1:]]
main()
"""


@pytest.mark.parametrize("queue_size, workers", [(None, 1), (30, 2)])
def test_queue_size_sets_the_frame_slots_of_a_run(queue_size: int | None, workers: int, clip: Path,
                                                  tmp_path: Path) -> None:
    """The run's shared frame slots, counted where they are allocated: the frames allowed to wait (--queue-size,
    8 by default) plus two handed to each worker."""
    extra = ["--queue-size", str(queue_size)] if queue_size else []
    result = subprocess.run([sys.executable, "-c", SLOT_PROBE, "run", str(clip), "-o", str(tmp_path / "o.mp4"),
                             "--workers", str(workers), "--max-frames", "2", "--config", FAST, *extra],
                            capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 0, result.stderr
    slots = [line for line in result.stderr.splitlines() if line.startswith("SLOTS ")]
    assert slots == [f"SLOTS {(queue_size or 8) + 2 * workers}"]
    assert probe_video(tmp_path / "o.mp4").frames == 2


def test_a_frame_that_fails_twice_is_written_unparsed_and_marked_in_stats(clip: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.jsonl"
    result = subprocess.run([sys.executable, str(Path(__file__).with_name("faulty_run.py")), "parse-bug", "run",
                             str(clip), "-o", str(tmp_path / "o.mp4"), "--workers", "1", "--stats", str(stats),
                             "--config", FAST], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == DEGRADED, result.stderr
    assert "ValueError: injected parse fault" in result.stderr and "Traceback" not in result.stderr
    assert [(r["seq"], r["status"]) for r in records(stats)] == [
        (seq, "unparsed" if seq == 2 else "ok") for seq in range(12)]
    assert probe_video(tmp_path / "o.mp4").frames == 12, "the unparsed frame is written too"
    assert "frames written without labels" in result.stderr and "degraded run" in result.stderr
