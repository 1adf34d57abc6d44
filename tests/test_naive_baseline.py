"""benchmarks/naive_baseline.py as a user runs it: a real process, the real model, real clips cut from vtest."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import VTEST, cut_clip, probe_video, run_cli
from vidparse.model_store import resolve_model
from vidparse.stages.parsers.bodypix import BodyPixParser, Options

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "naive_baseline.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], check=False, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "COLUMNS": "200"})


def table_row(stdout: str, name: str) -> list[str]:
    """The cells of the rich table row whose first cell is ``name``."""
    for line in stdout.splitlines():
        cells = [c.strip() for c in re.split(r"[│|]", line)[1:-1]]
        if cells and cells[0] == name:
            return cells
    raise AssertionError(f"no row '{name}' in:\n{stdout}")


@pytest.mark.slow
def test_naive_and_default_write_the_same_frames(clip: Path, tmp_path: Path) -> None:
    keep, report = tmp_path / "out", tmp_path / "naive.md"
    result = run_script(str(clip), "--frames", "8", "--vidparse", "default --parse-every 2", "--vidparse-args",
                        "--workers 1", "--keep", str(keep), "--markdown", str(report))
    assert result.returncode == 0, result.stdout + result.stderr
    outputs = {"naive": keep / "naive.mp4", "default --parse-every 2": keep / "vidparse-0-default.mp4"}
    for path in outputs.values():
        facts = probe_video(path)
        assert (facts.frames, facts.width, facts.height) == (8, 768, 576)
    for name in outputs:
        row = table_row(result.stdout, name)
        assert row[1:3] == ["8", "768x576"]
        assert float(row[4]) > 0
    assert table_row(result.stdout, "naive")[5] == "1.00x"
    text = report.read_text()
    assert "--vidparse-args '--workers 1'" in text and "machine: " in text and "| default --parse-every 2 | 8 | 768x576 |" in text


def test_fewer_frames_than_asked_is_a_mismatch(shared: Path, tmp_path: Path) -> None:
    """A 3-frame clip asked for 4: every run writes 3 frames, so the equal-output check fails."""
    short = cut_clip(VTEST, tmp_path / "vtest3.avi", 3)
    result = run_script(str(short), "--frames", "4", "--vidparse", "default", "--vidparse-args", "--workers 1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert table_row(result.stdout, "naive (MISMATCH)")[1] == "3"
    assert table_row(result.stdout, "default (MISMATCH)")[1] == "3"


def test_failed_vidparse_run_exits_with_its_code(shared: Path, tmp_path: Path) -> None:
    short = cut_clip(VTEST, tmp_path / "vtest2.avi", 2)
    result = run_script(str(short), "--frames", "2", "--vidparse", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2, result.stdout + result.stderr  # vidparse's exit code for a user error
    assert "does not exist" in result.stderr and "failed with exit code 2" in result.stderr


def test_whole_frame_config_gives_the_naive_labels_exactly(clip: Path, tmp_path: Path) -> None:
    """docs/tuning.md compares speed at equal output: benchmarks/configs/whole-frame.yaml must label every pixel as
    the naive baseline does (its whole frame, decoded by cv2, to BodyPix with default options)."""
    frames = 4
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--max-frames", str(frames), "--workers", "1",
                     "--config", str(REPO / "benchmarks" / "configs" / "whole-frame.yaml"), "--masks", str(tmp_path))
    assert result.returncode == 0, result.stderr
    parser = BodyPixParser(resolve_model("bodypix"), Options(), None)
    parser.open()
    capture = cv2.VideoCapture(str(clip))
    for seq in range(frames):
        ok, image = capture.read()
        assert ok
        naive = parser.parse([image])[0]
        ours = np.array(Image.open(tmp_path / f"{seq:06d}.png"))
        assert len(np.unique(naive)) > 5, "a frame with people in it"
        assert np.array_equal(ours, naive), f"frame {seq}: {(ours != naive).mean():.2%} of the pixels differ"
    capture.release()
