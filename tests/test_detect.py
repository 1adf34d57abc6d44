from pathlib import Path

import cv2
import numpy as np
import pytest

from vidparse.model_store import resolve_model
from vidparse.stages.detect import DetectorOptions, PersonDetector, non_max_suppression


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x2 - x1) * max(0, y2 - y1)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def detector() -> PersonDetector:
    detector = PersonDetector(resolve_model("fastestdet"), DetectorOptions(score_threshold=0.5, nms_iou=0.45, min_height=16), 1)
    detector.open()
    return detector


def test_finds_the_walkers_in_a_vtest_frame(detector: PersonDetector, vtest_frame: np.ndarray) -> None:
    found = detector.process(vtest_frame)
    assert len(found) >= 5
    assert np.all(found.boxes[:, [0, 2]] <= 768) and np.all(found.boxes[:, [1, 3]] <= 576) and np.all(found.boxes >= 0)
    assert np.all(np.diff(found.scores) <= 0), "most confident first"
    # The woman on the right of frame 100 (checked by eye), x 591..618, y 150..236.
    assert max(iou(box, np.array([591, 150, 618, 236])) for box in found.boxes) > 0.6


def test_a_piece_of_a_person_is_not_a_second_person(shared: Path) -> None:
    """FastestDet also boxes the right half of the woman in CCP photo 0001 (score 0.76, inside her whole box at
    0.90): one person, one box, or her right half is parsed from a crop of half a person."""
    detector = PersonDetector(resolve_model("fastestdet"), DetectorOptions(), 1)
    detector.open()
    found = detector.process(cv2.imread(str(shared / "data" / "ccp" / "images" / "0001.jpg")))
    woman = np.array([144, 33, 390, 802])  # her whole box (checked by eye)
    on_her = [box for box in found.boxes if iou(box, woman) > 0.2]
    assert len(on_her) == 1 and iou(on_her[0], woman) > 0.9


def test_threshold_and_min_height_filter(vtest_frame: np.ndarray) -> None:
    strict = PersonDetector(resolve_model("fastestdet"), DetectorOptions(0.8, 0.45, 16), 1)
    tall_only = PersonDetector(resolve_model("fastestdet"), DetectorOptions(0.5, 0.45, 60), 1)
    strict.open()
    tall_only.open()
    assert np.all(strict.process(vtest_frame).scores > 0.8)
    boxes = tall_only.process(vtest_frame).boxes
    assert len(boxes) >= 1 and np.all(boxes[:, 3] - boxes[:, 1] >= 60)


def test_empty_frame_has_no_person(detector: PersonDetector) -> None:
    assert len(detector.process(np.full((480, 640, 3), 128, np.uint8))) == 0


def test_nms_keeps_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float32)
    scores = np.array([0.6, 0.9, 0.7], np.float32)
    assert non_max_suppression(boxes, scores, 0.5).tolist() == [1, 2]


def test_corrupt_model_is_a_model_error(tmp_path: Path) -> None:
    from vidparse.errors import ModelError

    broken = tmp_path / "FastestDet.onnx"
    broken.write_bytes(resolve_model("fastestdet").read_bytes()[:5000])
    detector = PersonDetector(broken, DetectorOptions(0.5, 0.45, 16), 1)
    with pytest.raises(ModelError, match="cannot load model"):
        detector.open()
