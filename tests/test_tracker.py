"""Person tracking: ids survive a missed detection and a crossing; each labelled pixel belongs to one track."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from vidparse.stages.labels import load_label_set
from vidparse.stages.motion import FrameMotion
from vidparse.stages.temporal import TemporalOptions
from vidparse.stages.track_labels import OrderedLabels, TrackLabels
from vidparse.stages.tracker import ByteTracker, TrackingOptions
from vidparse.stages.types import FrameResult, PersonStats

OPTIONS = TrackingOptions(enabled=True, max_missed=3, match_iou=0.2, high_score=0.6)
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


def test_a_weak_detection_on_a_bridged_person_continues_its_track() -> None:
    tracker = ByteTracker(OPTIONS)
    for i in range(4):
        tracker.update(np.array([person(10 + 8 * i)], np.float32), np.array([0.9], np.float32))
    tracker.update(np.zeros((0, 4), np.float32), np.zeros(0, np.float32))  # missed: bridged at x = 42
    tracked = tracker.update(np.array([person(50)], np.float32), np.array([0.45], np.float32))
    # The person again, weakly seen where the track predicted it: the same person, not a second one on top.
    assert [(t.track_id, t.detection) for t in tracked] == [(1, 0)]


def labelled_frame(x: int, present: bool = True) -> tuple[np.ndarray, FrameResult]:
    """A 200 x 300 label map with one person at x: part 2 above, part 14 below; its box in the result."""
    labels = np.zeros((200, 300), np.uint8)
    persons = []
    if present:
        labels[50:100, x:x + 40] = 2
        labels[100:150, x:x + 40] = 14
        persons = [PersonStats(box=(x, 50, x + 40, 150), score=0.9, part_pixels={})]
    return labels, FrameResult(seq=0, persons=persons)


def test_a_detected_persons_labels_are_written_as_parsed_and_take_its_track_id() -> None:
    stage = TrackLabels(OPTIONS, load_label_set("bodypix"), margin=0.1)
    stage.open()
    for i in range(4):
        stage.process(*labelled_frame(20 + 6 * i))
    labels, result = labelled_frame(44)
    labels[100:150, 44:84] = 15  # the other leg's label this frame: written as it is, not held back by the past
    labels[0:10, 0:10] = 3  # labelled, but outside every person's area: nobody's, so not written
    tracked = stage.process(labels, result)
    assert not tracked.labels[0:10, 0:10].any()
    assert (tracked.labels[10:] == labels[10:]).all()
    assert not tracked.instances[0:10, 0:10].any()
    assert (tracked.instances[50:150, 44:84] == 1).all() and (tracked.instances != 0).sum() == 40 * 100
    [person] = tracked.result.persons
    assert person.track_id == 1 and not person.bridged
    assert sum(person.part_pixels.values()) == 40 * 100


def test_a_missed_person_keeps_its_id_at_the_predicted_box() -> None:
    stage = TrackLabels(OPTIONS, load_label_set("bodypix"), margin=0.1)
    stage.open()
    frames = [stage.process(*labelled_frame(20 + 6 * i, present=i != 4)) for i in range(6)]
    [person] = frames[4].result.persons
    assert person.track_id == 1 and person.bridged
    assert 40 < person.box[0] < 46  # last seen at x = 38, walking 6 px per frame: predicted on
    assert not frames[4].labels.any()  # nothing is drawn for it: the temporal vote carries labels over misses
    assert [p.track_id for f in frames for p in f.result.persons] == [1] * 6


def test_a_pixel_two_persons_share_goes_to_the_nearer() -> None:
    stage = TrackLabels(OPTIONS, load_label_set("bodypix"), margin=0.0)
    stage.open()
    labels = np.zeros((200, 300), np.uint8)
    labels[40:160, 50:150] = 2
    far, near = (60.0, 40.0, 120.0, 120.0), (90.0, 60.0, 150.0, 160.0)  # the near one's box reaches lower
    result = FrameResult(seq=0, persons=[PersonStats(box=near, score=0.9, part_pixels={}),
                                         PersonStats(box=far, score=0.9, part_pixels={})])
    tracked = stage.process(labels, result)
    ids = {p.box: p.track_id for p in tracked.result.persons}
    assert tracked.instances[100, 100] == ids[near]  # in both boxes
    assert tracked.instances[50, 70] == ids[far]  # in the far one's alone
    assert tracked.instances[45, 55] == tracked.labels[45, 55] == 0  # labelled, in neither: not written


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
    motion = FrameMotion("ultrafast", 1.0)
    for i, x in enumerate(positions):
        labels, result = labelled_frame(x, present=i < 5)
        if i >= 5:  # what the temporal vote would carry over the misses: the labels moved with the pixels
            labels = labelled_frame(x)[0]
        flow = motion.next(textured_frame(x, texture))
        tracked = stage.process(labels, result, None if flow is None else flow.backward)
    [person] = tracked.result.persons
    assert person.bridged and person.track_id == 1
    # The box turned back with the pixels (x = 48); without the flow it would have walked on past x = 90.
    assert abs(person.box[0] - 48) < 8, person.box




def test_without_tracking_the_persons_parts_are_counted_on_the_voted_labels() -> None:
    """--no-tracking with the vote: the statistics describe what is written, not the parse the vote replaced."""
    label_set = load_label_set("bodypix")
    ordered = OrderedLabels(label_set, TemporalOptions(window=5), None, 0.1)
    ordered.open()
    image = np.zeros((100, 130, 3), np.uint8)
    box = (20.0, 10.0, 60.0, 90.0)
    parse = np.zeros((100, 130), np.uint8)
    parse[20:80, 30:50] = 3
    for seq, labels in enumerate((parse, parse, np.zeros_like(parse))):  # the last parse misses the person
        person = PersonStats(box=box, score=0.9, part_pixels={label_set.names[3]: int((labels == 3).sum())} if
                             labels.any() else {})
        frame = ordered.process(labels, image, FrameResult(seq, [person]), ordered.measure(image, labels, seq))
    written = frame.labels[10:90, 20:60]
    assert written.any(), "the vote carries the person over the missed parse"
    counts = np.bincount(written.ravel(), minlength=len(label_set))
    assert frame.result.persons[0].part_pixels == {label_set.names[c]: int(counts[c]) for c in np.nonzero(counts)[0]
                                                   if c != 0}
