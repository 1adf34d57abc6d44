"""Media for the `vidparse batch` tests: a long clip that splits into 3 segments, 4 short clips, and what
`vidparse run` makes of the long one (the reference its batch output must equal)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, VTEST, run_cli

BATCH_CONFIG = REPO / "tests" / "batch.yaml"
LONG_FRAMES = 36  # 3.6 s at 10 fps, a keyframe every 12 frames: cut into 3 segments of 1.2 s
SHORT_FRAMES = 5


def encode(target: Path, frames: int, start_s: float, size: str, keyint: int) -> Path:
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-ss", str(start_s), "-i", str(VTEST), "-frames:v",
                    str(frames), "-vf", f"scale={size}", "-c:v", "libx264", "-g", str(keyint), "-keyint_min",
                    str(keyint), "-sc_threshold", "0", "-an", str(target)], check=True, timeout=120)
    return target


@dataclass
class BatchClips:
    folder: Path
    long: Path
    short: list[Path]


@dataclass
class Reference:
    """`vidparse run` on the long clip: its masks (frame name -> labels) and frame timestamps."""

    masks: dict[str, np.ndarray]
    pts: list[tuple[int, str]]


def read_masks(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: np.array(Image.open(path)) for path in sorted(folder.iterdir())}


def frame_times(video: Path) -> list[tuple[int, str]]:
    """(pts, time base) of every frame a player decodes."""
    with av.open(str(video)) as container:
        return [(frame.pts, str(frame.time_base)) for frame in container.decode(video=0)]


@pytest.fixture(scope="session")
def batch_clips(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> BatchClips:
    folder = tmp_path_factory.mktemp("batch_inputs")
    long = encode(folder / "long.mp4", LONG_FRAMES, 0, "320:240", 12)
    short = [encode(folder / f"short{i}.mp4", SHORT_FRAMES, 2 + 3 * i, "192:144", 250) for i in range(4)]
    return BatchClips(folder, long, short)


@pytest.fixture(scope="session")
def batch_reference(batch_clips: BatchClips, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    out = tmp_path_factory.mktemp("batch_reference")
    result = run_cli("run", str(batch_clips.long), "-o", str(out / "long.mp4"), "--config", str(BATCH_CONFIG),
                     "--masks", str(out / "masks"))
    assert result.returncode == 0, result.stderr
    return Reference(read_masks(out / "masks"), frame_times(out / "long.mp4"))


def assert_matches_reference(outdir: Path, reference: Reference) -> None:
    """The batch's long output: every frame once, with `vidparse run`'s timestamps and identical masks."""
    assert frame_times(outdir / "long.mp4") == reference.pts
    masks = read_masks(outdir / "long_masks")
    assert list(masks) == list(reference.masks)
    different = [name for name in masks if not np.array_equal(masks[name], reference.masks[name])]
    assert not different, f"masks differ from vidparse run's: {different}"
