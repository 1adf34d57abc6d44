"""`vidparse bench`: the real pipeline per worker count, with speed-up and efficiency against the fewest workers."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import run_cli

FAST = Path(__file__).with_name("fast.yaml")


def test_bench_reports_each_worker_count_with_its_scaling(clip: Path, tmp_path: Path) -> None:
    table = tmp_path / "bench.md"
    result = run_cli("bench", str(clip), "--frames", "8", "--workers", "1,2", "--threads", "1", "--config", str(FAST),
                     "--markdown", str(table))
    assert result.returncode == 0, result.stderr
    rows = re.findall(r"^\| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+)x \| (\d+)% \| (\d+) \|", table.read_text(), re.M)
    assert [(w, t) for w, t, *_ in rows] == [("1", "1"), ("2", "1")]
    (_, _, fps1, speedup1, eff1, ceiling1), (_, _, fps2, speedup2, eff2, ceiling2) = rows
    # the serial threads (hub, motion, compose, emit) allow more than what one stream of BodyPix crops reached
    assert float(ceiling1) > float(fps1) and float(ceiling2) > float(fps2)
    assert "hub ms | motion ms | compose ms | emit ms" in table.read_text()
    assert (speedup1, eff1) == ("1.00", "100")
    assert abs(float(speedup2) - float(fps2) / float(fps1)) < 0.02
    assert abs(int(eff2) - 100 * float(speedup2) / 2) <= 1
