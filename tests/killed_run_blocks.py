"""A killed run's frame slots left in /dev/shm, removed by the next run. Not collected with the suite: test_faults.py
runs this file with pytest in a /dev/shm of its own, because every run sweeps /dev/shm."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import VTEST, cut_clip, run_cli, wait_for_stats
from vidparse.pipeline.slots import STALE_AFTER_S, SharedSlots, SlotLayout

FAST = str(Path(__file__).with_name("fast.yaml"))


def blocks_mapped_by(pid: int) -> set[str]:
    """Names of the vidparse shared-memory blocks process ``pid`` has mapped."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return set(re.findall(r"/dev/shm/(vidparse_\w+)", maps))


def test_the_frames_block_of_a_killed_run_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """SIGKILL to a run's whole process group (as the out-of-memory killer or a lost Ray node leave it) leaves its
    frame slots in /dev/shm, which is memory; the next run removes them, and only them."""
    clip40 = cut_clip(VTEST, tmp_path / "vtest40.avi", 40)
    stats = tmp_path / "stats.jsonl"
    killed = subprocess.Popen([sys.executable, "-m", "vidparse", "run", str(clip40), "-o", str(tmp_path / "k.mp4"),
                               "--workers", "1", "--stats", str(stats), "--config", FAST],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_for_stats(stats, 3)
    (block,) = blocks_mapped_by(killed.pid)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-g", str(killed.pid)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "the killed run's processes did not end"
        time.sleep(0.1)
    assert (Path("/dev/shm") / block).exists(), "nothing was left behind: the test shows nothing"

    live = SharedSlots(SlotLayout((("input", (4,), "uint8"),)), 2)  # a block in use: never removed
    try:
        time.sleep(max(0.0, (Path("/dev/shm") / block).stat().st_ctime + STALE_AFTER_S + 0.5 - time.time()))
        result = run_cli("run", str(clip40), "-o", str(tmp_path / "next.mp4"), "--max-frames", "2", "--config", FAST)
        assert result.returncode == 0, result.stderr
        assert "shared-memory block(s) left by killed runs" in result.stderr and block in result.stderr
        assert not (Path("/dev/shm") / block).exists()
        assert (Path("/dev/shm") / live.handle.name).exists()
    finally:
        live.close()
    assert not (Path("/dev/shm") / live.handle.name).exists()
