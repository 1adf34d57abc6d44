"""Recorded parses: made once, replayed through the real engine by a parser that costs nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vidparse.config import load_config
from vidparse.errors import BadInputError
from vidparse.evaluation.replay import ReplaySpec, load_recording, record
from vidparse.jobs import ResolvedModels, StreamSpec, build_engine, stream_settings
from vidparse.pipeline.runner import Runner

FAST = Path(__file__).with_name("fast.yaml")  # labels as parsed: no vote, no tracking


def test_replayed_parses_come_out_of_the_real_engine_as_recorded(clip: Path, tmp_path: Path) -> None:
    config = load_config(FAST, {"workers": 2})
    recording = record(config, ResolvedModels.for_config(config), str(clip), 4, tmp_path / "parses.npz")
    assert len(recording) == 4 and recording.labels.shape == (4, 576, 768) and recording.labels.any()
    assert [len(r.persons) for r in load_recording(tmp_path / "parses.npz").results] == \
        [len(r.persons) for r in recording.results]
    spec = StreamSpec(config, str(clip), tmp_path / "o.mp4", masks_dir=tmp_path / "masks", max_frames=8,
                      stats_path=tmp_path / "stats.jsonl")
    stats = Runner(build_engine(config, [spec], parser=ReplaySpec(tmp_path / "parses.npz")), spec,
                   stream_settings(config, str(clip))).run()
    assert stats.frames == 8 and "parse" not in stats.stage_s  # the workers parsed nothing
    for seq in range(8):  # a clip longer than the recording repeats it
        with Image.open(tmp_path / "masks" / f"{seq:06d}.png") as mask:
            assert np.array_equal(np.array(mask), recording.labels[seq % 4]), seq


def test_a_damaged_recording_is_one_clear_error(tmp_path: Path) -> None:
    damaged = tmp_path / "parses.npz"
    damaged.write_bytes(b"not a recording")
    with pytest.raises(BadInputError, match="cannot read the recorded parses") as caught:
        load_recording(damaged)
    assert "record them again" in caught.value.hint
