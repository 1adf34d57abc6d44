"""Keyframe mode: labels carried by DIS optical flow between parsed frames, on real frames and the real models."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from vidparse.config import load_config
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.keyframes import KeyframeOptions, KeyframeParser, track_boxes
from vidparse.stages.options import TemporalOptions
from vidparse.stages.motion import warp_labels

FAST = Path(__file__).with_name("fast.yaml")
CUT_SHARE = TemporalOptions().cut_share


def test_warping_moves_labels_along_the_backward_flow() -> None:
    labels = np.zeros((40, 60), np.uint8)
    labels[10:20, 10:30] = 3
    flow = np.zeros((40, 60, 2), np.float32)
    flow[..., 0], flow[..., 1] = -5, -2  # every pixel came from 5 px to the left and 2 px up: things moved +5, +2
    warped = warp_labels(labels, flow)
    expected = np.zeros_like(labels)
    expected[12:22, 15:35] = 3
    assert np.array_equal(warped, expected)


def test_boxes_follow_their_person_pixels_not_the_background() -> None:
    labels = np.zeros((100, 100), np.uint8)
    labels[30:60, 40:50] = 1
    flow = np.zeros((100, 100, 2), np.float32)
    flow[30:60, 40:50] = (-4, 0)  # only the person moved, 4 px right; most of the box is still background
    moved = track_boxes(np.array([[30, 20, 70, 70]], np.float32), flow, labels)
    assert moved.tolist() == [[34, 20, 74, 70]]
    edge = track_boxes(np.array([[90, 0, 100, 10]], np.float32), np.full((100, 100, 2), -20, np.float32), labels)
    assert edge.max() <= 100, "boxes stay inside the frame"


@pytest.fixture(scope="module")
def person_parser(shared: Path):
    config = load_config(FAST, {})
    parser = build_person_parser(config, ResolvedModels.for_config(config), threads=1)
    parser.open()
    yield parser
    parser.close()


def shifted(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), image.shape[1::-1], borderMode=cv2.BORDER_REPLICATE)


def test_a_moved_frame_gets_the_keyframe_labels_moved_with_it(person_parser, vtest_frame: np.ndarray) -> None:
    stage = KeyframeParser(person_parser, KeyframeOptions(parse_every=3, flow_preset="fast"), CUT_SHARE)
    stage.open()
    key_labels, key_result = stage.process(vtest_frame, seq=0, group=0)
    labels, result = stage.process(shifted(vtest_frame, 6, 3), seq=1, group=0)
    assert key_result.carried_from is None and result.carried_from == 0
    assert result.timings.keys() == {"propagate"}, "carried frames are neither detected nor parsed"
    expected = shifted(key_labels, 6, 3)
    inner = (slice(20, -20), slice(20, -20))  # the replicated border has no flow to follow
    person = (expected[inner] != 0) | (labels[inner] != 0)
    agreement = (expected[inner] == labels[inner])[person].mean()
    assert agreement > 0.9, f"only {agreement:.0%} of person pixels carried to the right place"
    assert len(result.persons) == len(key_result.persons) > 0
    for before, after in zip(key_result.persons, result.persons):
        assert np.allclose(np.subtract(after.box, before.box), (6, 3, 6, 3), atol=1.5)
        if sum(before.part_pixels.values()) > 200:
            assert sum(after.part_pixels.values()) > 100, "the carried person keeps its parts"


def test_a_frame_without_an_earlier_frame_of_its_group_is_parsed(person_parser, vtest_frame: np.ndarray) -> None:
    stage = KeyframeParser(person_parser, KeyframeOptions(parse_every=3, flow_preset="ultrafast"), CUT_SHARE)
    stage.open()
    direct, _ = person_parser.process(vtest_frame, seq=4)
    stage.process(vtest_frame, seq=0, group=0)
    labels, result = stage.process(vtest_frame, seq=4, group=1)  # frames 3-5, nothing of it seen: a restart
    assert result.carried_from is None and "parse" in result.timings
    assert np.array_equal(labels, direct)
    _, after = stage.process(vtest_frame, seq=5, group=1)
    assert after.carried_from == 4
    stage.process(vtest_frame, seq=6, group=2)
    _, across_a_gap = stage.process(shifted(vtest_frame, 2, 0), seq=8, group=2)  # frame 7 was not sent here
    assert across_a_gap.carried_from == 6, "a gap inside the group is bridged by one larger flow step"


def test_what_is_carried_is_kept_per_stream(person_parser, vtest_frame: np.ndarray) -> None:
    """One worker parses frames of two streams: stream 1's frames are never carried from stream 0's."""
    stage = KeyframeParser(person_parser, KeyframeOptions(parse_every=3, flow_preset="ultrafast"), CUT_SHARE)
    stage.open()
    stage.process(vtest_frame, seq=0, stream=0, group=0)
    _, other = stage.process(vtest_frame, seq=1, stream=1, group=0)  # stream 1 joined late: its first frame
    assert other.carried_from is None, "a stream's first frame is parsed, not carried from another stream"
    _, own = stage.process(vtest_frame, seq=1, stream=0, group=0)
    assert own.carried_from == 0, "stream 0 still carries from its own keyframe"
    stage.forget(0)
    _, forgotten = stage.process(vtest_frame, seq=2, stream=0, group=0)
    assert forgotten.carried_from is None


def test_across_drops_one_frame_in_k_is_parsed(person_parser, vtest_frame: np.ndarray) -> None:
    """Live: frames dropped while a worker parses leave gaps; the next frames are still carried, not parsed."""
    stage = KeyframeParser(person_parser, KeyframeOptions(parse_every=3, flow_preset="ultrafast"),
                           CUT_SHARE)  # no groups
    stage.open()
    sources = [stage.process(vtest_frame, seq)[1].carried_from for seq in (0, 5, 6, 7, 8, 9, 10, 40)]
    assert sources == [None, 0, 0, None, 7, 7, None, None], "parse, carry twice, parse...; too far back: parse"


def test_parse_every_3_through_the_pipeline(clip: Path, tmp_path: Path) -> None:
    """Keyframes are parsed exactly as without keyframe mode; the frames between are carried from their group's
    keyframe, whichever of the two workers had it."""
    runs = {}
    for every in (1, 3):
        out = tmp_path / f"k{every}"
        out.mkdir()
        result = run_cli("run", str(clip), "-o", str(out / "out.mp4"), "--config", str(FAST), "--workers", "2",
                         "--parse-every", str(every), "--masks", str(out / "masks"), "--stats", str(out / "s.jsonl"))
        assert result.returncode == 0, result.stderr
        runs[every] = out
    records = [json.loads(line) for line in (runs[3] / "s.jsonl").read_text().splitlines()]
    assert [r["carried_from"] for r in records] == [None if s % 3 == 0 else s - s % 3 for s in range(12)]
    for seq in range(12):
        exact = np.array(Image.open(runs[1] / "masks" / f"{seq:06d}.png"))
        carried = np.array(Image.open(runs[3] / "masks" / f"{seq:06d}.png"))
        if seq % 3 == 0:
            assert np.array_equal(exact, carried), f"keyframe {seq} differs from the direct parse"
        else:
            union = ((exact != 0) | (carried != 0)).sum()
            overlap = ((exact != 0) & (carried != 0)).sum() / union
            assert overlap > 0.5, f"frame {seq}: the carried persons are not where the parse found them"


def test_photos_of_a_folder_are_each_parsed_whatever_parse_every_says(shared: Path, tmp_path: Path) -> None:
    """Photos (not a pattern's frames) are each their own picture: --parse-every carries nothing from one to the
    next; the second photo's labels are those of a run on it alone. Cut detection is off: it would parse these two
    photos of different people anyway, not two of one scene."""
    config = tmp_path / "no_cuts.yaml"
    config.write_text(FAST.read_text().replace("temporal:\n", "temporal:\n  cut_share: 1.0\n"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("0002.jpg", "0011.jpg"):  # two people, photos of one size (flow carries between frames of one)
        (folder / name).write_bytes((shared / "data" / "ccp" / "images" / name).read_bytes())
    both = run_cli("run", str(folder), "-o", f"{tmp_path / 'both'}/", "--config", str(config), "--parse-every", "2",
                   "--masks", str(tmp_path / "both_masks"), "--stats", str(tmp_path / "both.jsonl"))
    assert both.returncode == 0, both.stderr
    alone = run_cli("run", str(folder / "0011.jpg"), "-o", str(tmp_path / "alone.jpg"), "--config", str(config),
                    "--masks", str(tmp_path / "alone"))
    assert alone.returncode == 0, alone.stderr
    records = [json.loads(line) for line in (tmp_path / "both.jsonl").read_text().splitlines()]
    assert [r["carried_from"] for r in records] == [None, None]
    assert np.array_equal(np.array(Image.open(tmp_path / "both_masks" / "0011.png")),
                          np.array(Image.open(tmp_path / "alone" / "0011.png")))


def test_a_cut_is_parsed_not_carried(person_parser, vtest_frame: np.ndarray, shared: Path) -> None:
    """After a cut the carried people are not there: the new frame contradicts most of their pixels and is parsed
    (and what follows is carried from it), unless cut detection is off."""
    other_scene = cv2.resize(cv2.imread(str(shared / "data" / "cihp" / "images" / "0002190.jpg")),
                             vtest_frame.shape[1::-1])
    stage = KeyframeParser(person_parser, KeyframeOptions(parse_every=10, flow_preset="ultrafast"), CUT_SHARE)
    stage.open()
    stage.process(vtest_frame, seq=0, group=0)
    _, moved = stage.process(shifted(vtest_frame, 4, 2), seq=1, group=0)
    assert moved.carried_from == 0, "people who move are no cut"
    labels, cut = stage.process(other_scene, seq=2, group=0)
    assert cut.carried_from is None and np.array_equal(labels, person_parser.process(other_scene, seq=2)[0])
    _, after = stage.process(other_scene, seq=3, group=0)
    assert after.carried_from == 2
    never = KeyframeParser(person_parser, KeyframeOptions(parse_every=10, flow_preset="ultrafast"), 1.0)
    never.open()
    never.process(vtest_frame, seq=0, group=0)
    assert never.process(other_scene, seq=1, group=0)[1].carried_from == 0
