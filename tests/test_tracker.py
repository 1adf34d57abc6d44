"""Person tracking: ids survive a missed detection and a crossing; labels follow their track."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from vidparse.stages.labels import load_label_set
from vidparse.stages.track_labels import PersonLabels, TrackLabels, resample
from vidparse.stages.tracker import ByteTracker, TrackingOptions
from vidparse.stages.types import FrameResult, PersonStats

OPTIONS = TrackingOptions(enabled=True, max_missed=3, match_iou=0.2, high_score=0.6, smoothing=0.6, crop_height=64)
FLOW = replace(OPTIONS, flow_noise=0.02)  # boxes moved by the optical flow of their pixels


def person(x: float, y: float = 100.0, width: float = 40.0, height: float = 100.0) -> list[float]:
    return [x, y, x + width, y + height]


def run(tracker: ByteTracker, frames: list[list[list[float]]], scores: float = 0.9) -> list[dict[int, tuple]]:
    """Per frame: detection index (or -track_id when bridged) -> (track id, box)."""
    out = []
    for boxes in frames:
        array = np.array(boxes, np.float32).reshape(-1, 4)
        tracked = tracker.update(array, np.full(len(array), scores, np.float32))
        out.append({(t.detection if not t.bridged else -t.track_id): (t.track_id, t.box) for t in tracked})
    return out


def test_a_dropped_detection_is_bridged_at_the_predicted_box_and_keeps_its_id() -> None:
    frames = [[person(10 + 8 * i)] for i in range(10)]
    frames[5] = []  # the detector missed the person once
    result = run(ByteTracker(OPTIONS), frames)
    ids = {track_id for frame in result for track_id, _ in frame.values()}
    assert ids == {1}
    bridged_id, bridged_box = result[5][-1]
    assert bridged_id == 1
    # Predicted where the person walked to (x = 50), not left where it was last seen (x = 42).
    assert abs(bridged_box[0] - 50) < 3, bridged_box
    assert all(0 in frame for i, frame in enumerate(result) if i != 5)


def test_a_track_ends_after_max_missed_frames() -> None:
    frames = [[person(10)]] * 3 + [[]] * 4 + [[person(10)]]
    result = run(ByteTracker(OPTIONS), frames)
    assert [len(frame) for frame in result] == [1, 1, 1, 1, 1, 1, 0, 1]
    assert result[-1][0][0] == 2  # a new person: the old id is not reused


def test_two_persons_crossing_keep_their_ids() -> None:
    # A walks right, B walks left at the same height; they overlap fully mid-way, and the detector sees only one
    # box while they overlap most.
    frames = []
    for i in range(21):
        a, b = person(20 + 10 * i, 100), person(220 - 10 * i, 104)
        frames.append([a] if 9 <= i <= 11 else [a, b])
    result = run(ByteTracker(OPTIONS), frames)
    first = {index: track_id for index, (track_id, _) in result[0].items()}
    last = {index: track_id for index, (track_id, _) in result[-1].items()}
    assert first == last == {0: 1, 1: 2}  # A (box 0) is still track 1, B (box 1) still track 2
    for frame in result[12:]:
        assert frame[0][0] == 1 and frame[1][0] == 2


def test_weak_detections_only_continue_tracks() -> None:
    tracker = ByteTracker(OPTIONS)
    strong = np.array([person(10)], np.float32)
    tracker.update(strong, np.array([0.9], np.float32))
    # A weak box on the track and a weak box elsewhere: the first continues track 1, the second starts track 2.
    boxes = np.array([person(300), person(12)], np.float32)
    tracked = tracker.update(boxes, np.array([0.55, 0.55], np.float32))
    assert {t.detection: t.track_id for t in tracked} == {1: 1, 0: 2}


def labelled_frame(x: int, present: bool = True) -> tuple[np.ndarray, FrameResult]:
    """A 200 x 300 label map with one person at x: part 2 above, part 14 below; its box in the result."""
    labels = np.zeros((200, 300), np.uint8)
    persons = []
    if present:
        labels[50:100, x:x + 40] = 2
        labels[100:150, x:x + 40] = 14
        persons = [PersonStats(box=(x, 50, x + 40, 150), score=0.9, part_pixels={})]
    return labels, FrameResult(seq=0, persons=persons)


def test_a_bridged_person_keeps_its_labels_at_the_predicted_box() -> None:
    stage = TrackLabels(OPTIONS, load_label_set("bodypix"), margin=0.1)
    stage.open()
    frames = [stage.process(*labelled_frame(20 + 6 * i, present=i != 4)) for i in range(6)]
    bridged = frames[4]
    [person] = bridged.result.persons
    assert person.track_id == 1 and person.bridged
    # Last seen at x = 38, walking 6 px per frame: predicted on (the velocity estimate still lags a little).
    assert 40 < person.box[0] < 46
    ys, xs = np.nonzero(bridged.labels)
    assert 40 <= xs.min() <= 46 and abs(ys.min() - 50) <= 2
    assert set(np.unique(bridged.labels)) == {0, 2, 14}
    assert set(np.unique(bridged.instances)) == {0, 1}
    assert ((bridged.labels != 0) == (bridged.instances == 1)).all()
    assert sum(person.part_pixels.values()) == np.count_nonzero(bridged.labels)
    assert [p.track_id for f in frames for p in f.result.persons] == [1] * 6


def test_labels_are_smoothed_in_the_persons_own_coordinates() -> None:
    stage = TrackLabels(OPTIONS, load_label_set("bodypix"), margin=0.1)
    stage.open()
    for i in range(4):
        stage.process(*labelled_frame(20 + 6 * i))
    labels, result = labelled_frame(44)
    labels[100:150, 44:84] = 15  # one frame of the other leg's label: outvoted by the track's past
    tracked = stage.process(labels, result)
    # Only a sliver at the edge, where the track's box still lags the walk, takes the new label.
    assert np.count_nonzero(tracked.labels == 15) < 0.1 * np.count_nonzero(tracked.labels == 14)


def test_a_bridged_person_predicted_out_of_the_frame_is_not_drawn() -> None:
    stage = TrackLabels(OPTIONS, load_label_set("bodypix"), margin=0.1)
    stage.open()
    for i in range(4):
        stage.process(*labelled_frame(200 + 25 * i))  # walking out on the right, 25 px per frame
    for _ in range(3):
        tracked = stage.process(*labelled_frame(0, present=False))
    assert not tracked.labels.any() and not tracked.instances.any()


def test_a_bridged_box_moves_with_the_measured_motion_not_the_old_velocity() -> None:
    walked, held = ByteTracker(FLOW), ByteTracker(FLOW)
    for i in range(6):  # walking right 8 px per frame
        box = np.array([person(10 + 8 * i)], np.float32)
        [seen] = walked.update(box, np.array([0.9], np.float32))
        held.update(box, np.array([0.9], np.float32))
    nobody = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
    for _ in range(3):  # missed by the detector; the flow says the person stopped
        [kept] = walked.update(*nobody)
        [stopped] = held.update(*nobody, motion={1: np.zeros(2)})
    assert kept.box[0] > seen.box[0] + 18  # constant velocity: walked on
    assert abs(stopped.box[0] - seen.box[0]) < 1, (seen.box, stopped.box)  # measured: stayed where last seen


def textured_frame(x: int, texture: np.ndarray) -> np.ndarray:
    """A 200 x 300 grey image with a textured 40 x 100 'person' at x (something optical flow can follow)."""
    image = np.full((200, 300, 3), 90, np.uint8)
    image[50:150, x:x + 40] = texture
    return image


def test_a_bridged_person_follows_its_pixels_motion() -> None:
    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (100, 40, 3), np.uint8), (5, 5), 0)
    positions = [40 + 8 * i for i in range(5)] + [64, 56, 48]  # walks right, then turns back unseen
    stage = TrackLabels(replace(FLOW, max_missed=5), load_label_set("bodypix"), margin=0.1)
    stage.open()
    for i, x in enumerate(positions):
        labels, result = labelled_frame(x, present=i < 5)
        tracked = stage.process(labels, result, textured_frame(x, texture))
    [person] = tracked.result.persons
    assert person.bridged and person.track_id == 1
    # The box turned back with the pixels (x = 48); without the flow it would have walked on past x = 90.
    assert abs(person.box[0] - 48) < 8, person.box


def test_resample_takes_the_nearest_source_pixel_and_zero_outside() -> None:
    source = np.arange(1, 17, dtype=np.uint8).reshape(4, 4)
    doubled = resample(source, np.array([0.0, 0.0, 4.0, 4.0]), (8, 8))
    assert (doubled == np.kron(source, np.ones((2, 2), np.uint8))).all()
    shifted = resample(source, np.array([-1.0, 2.0, 3.0, 6.0]), (4, 4))  # one column left of it, two rows below
    assert (shifted[:2, 1:] == source[2:, :3]).all()
    assert not shifted[:, 0].any() and not shifted[2:].any()
    assert (resample(source, np.array([0.0, 0.0, 4.0, 4.0]), (2, 2)) == source[1::2, 1::2]).all()


def test_person_labels_keep_the_strongest_part_of_every_cell() -> None:
    """The running strongest part equals an argmax over the shares after every observation."""
    rng = np.random.default_rng(7)
    classes = 5
    person_labels = PersonLabels(classes, (12, 6))
    area = np.array([0.0, 0.0, 6.0, 12.0])
    for _ in range(40):
        observed = rng.choice(classes, size=(12, 6), p=[0.4, 0.3, 0.1, 0.1, 0.1]).astype(np.uint8)
        person_labels.observe(observed, area, smoothing=0.7)
        shares = person_labels.shares
        expected = np.where(shares[..., 0] < shares.sum(axis=2) / 2, shares[..., 1:].argmax(axis=2) + 1, 0)
        assert (person_labels.labels() == expected).all()


def person_of_height(height: int) -> tuple[np.ndarray, FrameResult]:
    """A 300 x 300 label map with one person ``height`` pixels tall at (50, 20): part 2 above, part 14 below."""
    labels = np.zeros((300, 300), np.uint8)
    width = height // 3
    labels[20:20 + height // 2, 50:50 + width] = 2
    labels[20 + height // 2:20 + height, 50:50 + width] = 14
    return labels, FrameResult(seq=0, persons=[PersonStats(box=(50, 20, 50 + width, 20 + height), score=0.9,
                                                                part_pixels={})])


def test_a_persons_grid_is_no_finer_than_its_pixels_and_grows_with_it() -> None:
    stage = TrackLabels(replace(OPTIONS, crop_height=128), load_label_set("bodypix"), margin=0.1)
    stage.open()
    grid_heights = []
    for height in range(40, 301, 8):  # walking towards the camera
        tracked = stage.process(*person_of_height(height))
        assert [person.track_id for person in tracked.result.persons] == [1]
        grid_heights.append(stage.shapes[1].shape[0])
    assert grid_heights[0] == 48  # its area: 40 px and a 10% margin above and below
    assert 128 / 1.25 < grid_heights[-1] <= 128  # never taller than crop_height
    changes = [(before, after) for before, after in zip(grid_heights, grid_heights[1:]) if after != before]
    # A finer grid only once the person has outgrown the old one by 25%.
    assert changes and all(after > 1.25 * before for before, after in changes), changes
    assert len(changes) <= 5


def test_a_finer_grid_keeps_the_persons_labels() -> None:
    person_labels = PersonLabels(5, (4, 2))
    area = np.array([0.0, 0.0, 2.0, 4.0])
    person_labels.observe(np.array([[1, 2], [3, 3], [0, 4], [4, 4]], np.uint8), area, smoothing=0.5)
    person_labels.observe(np.array([[1, 1], [3, 0], [0, 4], [2, 4]], np.uint8), area, smoothing=0.5)
    finer = person_labels.resized((8, 4))
    assert (finer.labels() == np.kron(person_labels.labels(), np.ones((2, 2), np.uint8))).all()
    # It goes on from the same shares: the next observation weighs as much against them as on the old grid.
    update = np.array([[2, 2], [2, 2], [2, 2], [2, 2]], np.uint8)
    person_labels.observe(update, area, smoothing=0.5)
    finer.observe(np.kron(update, np.ones((2, 2), np.uint8)), area * 2, smoothing=0.5)
    assert (finer.labels() == np.kron(person_labels.labels(), np.ones((2, 2), np.uint8))).all()
