"""Metrics of persons over time: presence flicker, consecutive-frame agreement, ID switches against MOT truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidparse.config import Config
from vidparse.errors import BadInputError
from vidparse.evaluation.runs import VideoMode, video_rows
from vidparse.evaluation.tracking import AgreementMeter, IdSwitchMeter, PresenceMeter, read_mot
from vidparse.stages.labels import load_label_set
from vidparse.stages.options import TemporalOptions, TrackingOptions
from vidparse.stages.types import FrameResult, PersonStats


def box(x: float) -> np.ndarray:
    return np.array([x, 10, x + 20, 60], np.float32)


def test_presence_flicker_counts_a_person_missing_for_up_to_three_frames() -> None:
    meter = PresenceMeter()
    # Person A is missed in frames 2 and 6-7 (two flickers); person B leaves for 5 frames (not a flicker).
    for frame in range(12):
        boxes = []
        if frame not in (2, 6, 7):
            boxes.append(box(10 + frame))
        if frame < 3 or frame > 7:
            boxes.append(box(200))
        meter.update(np.array(boxes, np.float32).reshape(-1, 4))
    assert meter.flickers == 2
    assert meter.person_frames == 9 + 7


def test_agreement_of_consecutive_label_maps() -> None:
    meter = AgreementMeter(classes=4)
    first = np.array([[0, 1, 1, 2]], np.uint8)
    second = np.array([[0, 1, 2, 2]], np.uint8)
    meter.update(first)
    meter.update(second)
    assert meter.person_iou == 1.0  # the same pixels are person
    assert meter.part_miou == pytest.approx((1 / 2 + 1 / 2) / 2)  # parts 1 and 2 each agree on one of two pixels
    meter.update(np.zeros((1, 4), np.uint8))
    assert meter.person_iou == pytest.approx(3 / 6)


def test_id_switches_on_a_synthetic_mot_sequence(tmp_path: Path) -> None:
    truth_file = tmp_path / "gt.txt"
    # Two persons in MOT format (frames from 1), x,y,w,h; one row with confidence 0 is ignored.
    rows = [f"{f},{pid},{x + f},10,20,50,1,1,1" for f in range(1, 7) for pid, x in ((1, 0), (2, 100))]
    truth_file.write_text("\n".join(rows + ["3,9,400,10,20,50,0,1,1"]) + "\n")
    truth = read_mot(truth_file)
    assert sorted(truth) == list(range(6)) and len(truth[2]) == 2
    meter = IdSwitchMeter(truth)
    for seq in range(6):
        a, b = box(seq + 1), box(100 + seq + 1)
        # The tracker swaps the two ids at frame 3 and keeps them swapped: one switch per person.
        ids = (7, 8) if seq < 3 else (8, 7)
        meter.update(seq, [(ids[0], a), (ids[1], b)])
    assert (meter.switches, meter.matched, meter.truth_boxes) == (2, 12, 12)


def test_a_mode_that_tracks_nobody_counts_no_id_switches() -> None:
    """A tracked mode with tracking off in the config (`video_rows`' caller chose both) has no track ids to count:
    its ID switches are n/a, neither a failure nor switches counted between persons without ids."""
    image = np.zeros((80, 120, 3), np.uint8)
    parse = np.zeros((80, 120), np.uint8)
    parse[10:60, 1:21] = 1
    frames = [(image, parse, FrameResult(seq, [PersonStats(tuple(box(seq + 1)), 0.9, {})])) for seq in range(2)]
    truth = {seq: [(1, box(seq + 1))] for seq in range(2)}
    [row] = video_rows(frames, load_label_set("bodypix"), Config(tracking=TrackingOptions(enabled=False)),
                       [VideoMode(TemporalOptions(window=1), tracked=True)], truth)
    assert row.id_switches is None


def test_a_mot_file_saved_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" and Windows Notepad start the file with a BOM: line 1 is still a MOT row."""
    truth_file = tmp_path / "gt.txt"
    truth_file.write_bytes("1,1,10,10,20,50,1\n2,1,12,10,20,50,1\n".encode("utf-8-sig"))
    assert sorted(read_mot(truth_file)) == [0, 1]


def test_a_damaged_mot_file_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "gt.txt"
    bad.write_text("1,1,10,10,20,50\nframe,id,x\n")
    with pytest.raises(BadInputError, match="line 2 is not a MOT row"):
        read_mot(bad)
    with pytest.raises(BadInputError, match="cannot read ground truth"):
        read_mot(tmp_path / "missing.txt")
    for row in ("1,1,nan,10,20,50", "1.5,1,10,10,20,50", "1,1,10,10,-5,50", "0,1,10,10,20,50"):
        bad.write_text(f"1,1,10,10,20,50\n{row}\n")
        with pytest.raises(BadInputError, match="line 2 is not a MOT row"):
            read_mot(bad)
    bad.write_text("1,1,10,10,20,50\n1,1,40,10,20,50\n")
    with pytest.raises(BadInputError, match="line 2: person 1 is in frame 1 twice"):
        read_mot(bad)
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(BadInputError, match="is not text"):
        read_mot(bad)
