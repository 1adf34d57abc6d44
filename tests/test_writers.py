import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidparse.errors import BadOutputError
from vidparse.stages.labels import load_label_set
from vidparse.stages.types import FrameResult, PersonStats
from vidparse.stages.writers import InstanceWriter, MaskWriter, StatsWriter


def test_masks_are_lossless_palette_pngs(tmp_path: Path) -> None:
    label_set = load_label_set("cihp")
    labels = np.random.default_rng(0).integers(0, 20, (48, 64), dtype=np.uint8)
    writer = MaskWriter(tmp_path / "masks", label_set)
    writer.open()
    writer.write(7, labels)
    image = Image.open(tmp_path / "masks" / "000007.png")
    assert image.mode == "P"
    assert np.array_equal(np.array(image), labels)
    palette = np.array(image.getpalette()[:60]).reshape(20, 3)
    assert np.array_equal(palette, label_set.colors[:, ::-1])  # RGB in the PNG


def test_stats_are_one_json_object_per_frame(tmp_path: Path) -> None:
    writer = StatsWriter(tmp_path / "new" / "stats.jsonl")
    writer.open()  # makes its folder, as --masks does
    person = PersonStats(box=(1.0, 2.0, 30.0, 80.0), score=0.91, part_pixels={"face": 40, "pants": 300}, track_id=7)
    writer.write(FrameResult(seq=0, persons=[person], timings={"parse": 0.25}), pts=0, seconds=0.0)
    writer.write(FrameResult(seq=1), pts=1, seconds=0.1)
    writer.close()
    lines = [json.loads(line) for line in (tmp_path / "new" / "stats.jsonl").read_text().splitlines()]
    assert lines[0]["persons"][0] == {"box": [1.0, 2.0, 30.0, 80.0], "score": 0.91, "parts": {"face": 40, "pants": 300},
                                      "track_id": 7, "bridged": False}
    assert lines[0]["timings_ms"] == {"parse": 250.0}
    assert (lines[1]["seq"], lines[1]["pts"], lines[1]["time_s"], lines[1]["persons"]) == (1, 1, 0.1, [])


def test_a_stats_file_removed_with_its_folder_during_the_run_is_an_error(tmp_path: Path) -> None:
    """Its lines went to a file no one can open: the run ended 'ok' (exit 0), 'stats in ...' naming it."""
    writer = StatsWriter(tmp_path / "stats" / "stats.jsonl")
    writer.open()
    writer.write(FrameResult(seq=0), pts=0, seconds=0.0)
    shutil.rmtree(tmp_path / "stats")
    with pytest.raises(BadOutputError, match=r"writing .*stats.jsonl failed: it was removed during the run"):
        writer.close()


def test_an_instances_folder_removed_during_the_run_is_said_to_be_gone(tmp_path: Path) -> None:
    """OpenCV gives no reason: the error said the PNG encoder refused the frame."""
    writer = InstanceWriter(tmp_path / "instances")
    writer.open()
    writer.write(0, np.ones((8, 8), np.uint16))
    shutil.rmtree(tmp_path / "instances")
    with pytest.raises(BadOutputError, match=r"000001.png failed: No such file or directory"):
        writer.write(1, np.ones((8, 8), np.uint16))
