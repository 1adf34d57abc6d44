"""`vidparse run` with tracking: track ids in --stats, 16-bit instance PNGs, ids on the overlay."""

from __future__ import annotations

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import VTEST, run_cli
from vidparse.errors import ConfigError
from vidparse.runs import Source, check_outputs_apart


def test_stats_and_instance_pngs_carry_the_same_track_ids(clip: Path, tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    Image.new("P", (4, 4)).save(tmp_path / "masks" / "000099.png")  # an earlier, longer run's frame
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--max-frames", "6", "--workers", "1",
                     "--masks", str(tmp_path / "masks"), "--stats", str(tmp_path / "stats.jsonl"),
                     "--instances", str(tmp_path / "ids"), "--track-ids")
    assert result.returncode == 0, result.stderr
    assert "already holds 1 frame PNGs from frame 99 on" in " ".join(result.stderr.split()), result.stderr
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert len(records) == 6
    ids_per_frame = []
    for record in records:
        instances = cv2.imread(str(tmp_path / "ids" / f"{record['seq']:06d}.png"), cv2.IMREAD_UNCHANGED)
        labels = np.array(Image.open(tmp_path / "masks" / f"{record['seq']:06d}.png"))
        assert instances.dtype == np.uint16 and instances.shape == labels.shape
        assert ((instances != 0) == (labels != 0)).all(), "every labelled pixel belongs to one track"
        ids = [person["track_id"] for person in record["persons"]]
        assert all(isinstance(i, int) and i > 0 for i in ids) and len(set(ids)) == len(ids)
        for person in record["persons"]:
            assert sum(person["parts"].values()) == int((instances == person["track_id"]).sum())
        assert set(np.unique(instances)) - {0} <= set(ids)
        ids_per_frame.append(set(ids))
    # vtest's walkers stay in view over these frames: most ids of the first frame are still there at the end.
    assert len(ids_per_frame[0] & ids_per_frame[-1]) >= len(ids_per_frame[0]) - 1 >= 1


def shots_clip(target: Path, shots: list[range]) -> Path:
    """vtest's frames of each range one after the other (FFV1): a cut, or a jump in time, between the ranges."""
    with av.open(str(VTEST)) as source, av.open(str(target), "w") as output:
        stream = output.add_stream("ffv1", rate=10)
        stream.width, stream.height, stream.pix_fmt = 768, 576, "yuv420p"
        wanted = {index for shot in shots for index in shot}
        for index, frame in enumerate(source.decode(video=0)):
            if index in wanted:
                output.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), "rgb24")))
            if index >= max(wanted):
                break
        output.mux(stream.encode(None))
    return target


def test_a_cut_starts_the_vote_afresh_and_ends_every_track(shared: Path, tmp_path: Path) -> None:
    video = shots_clip(tmp_path / "shots.mkv", [range(0, 8), range(600, 606)])
    result = run_cli("run", str(video), "-o", str(tmp_path / "o.mp4"), "--workers", "2",
                     "--stats", str(tmp_path / "stats.jsonl"))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [record["seq"] for record in records if record["cut"]] == [8], "the jump from frame 7 to 600, only"
    ids = [{person["track_id"] for person in record["persons"]} for record in records]
    assert all(before & after for before, after in zip(ids[:7], ids[1:8])), "vtest's walkers keep their ids"
    assert min(ids[8]) > max(max(earlier) for earlier in ids[:8]), "no id crosses the cut"
    assert not any(person["bridged"] for person in records[8]["persons"]), "nobody of the shot before is drawn"


def test_instances_and_track_ids_need_tracking(clip: Path, tmp_path: Path) -> None:
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--no-tracking", "--instances", str(tmp_path))
    assert result.returncode == 2
    assert "--instances needs tracking" in result.stderr and "Traceback" not in result.stderr
    photo = tmp_path / "photo.png"
    Image.new("RGB", (64, 48)).save(photo)
    result = run_cli("run", str(photo), "-o", str(tmp_path / "out.png"), "--instances", str(tmp_path / "ids"))
    assert result.returncode == 2 and "photos are each their own picture" in result.stderr, result.stderr
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--no-tracking", "--track-ids")
    assert result.returncode == 2 and not (tmp_path / "o.mp4").exists()
    assert "track ids (--track-ids, tracking.draw_ids) need tracking" in result.stderr, result.stderr


def test_label_pngs_may_share_the_overlays_folder_not_a_single_photos_file(shared: Path, tmp_path: Path) -> None:
    photo = shared / "data" / "cihp" / "images" / "0002190.jpg"
    check_outputs_apart(Source(str(photo.parent), tmp_path / "out", masks=tmp_path / "out"))
    with pytest.raises(ConfigError, match="-o and --masks name the same path"):
        check_outputs_apart(Source(str(photo), tmp_path / "out.png", masks=tmp_path / "out.png"))


@pytest.mark.parametrize("flags", [["--masks", "same", "--instances", "same"], ["--stats", "o.mp4"],
                                   ["--masks", "o.mp4"], ["--instances", "o.mp4"]])
def test_two_outputs_on_one_path_are_refused_before_the_run(clip: Path, tmp_path: Path, flags: list[str]) -> None:
    paths = [str(tmp_path / flag) if not flag.startswith("-") else flag for flag in flags]
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--max-frames", "2", *paths)
    assert result.returncode == 2, result.stderr
    assert "name the same path" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "same").exists()
