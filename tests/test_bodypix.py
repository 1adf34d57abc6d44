from pathlib import Path

import cv2
import numpy as np
import pytest

from vidparse.model_store import resolve_model
from vidparse.stages.parsers.bodypix import BodyPixParser, Options, _argmax_planes, _upsampling_matrix, upsample


@pytest.fixture(scope="module")
def bodypix() -> BodyPixParser:
    parser = BodyPixParser(resolve_model("bodypix"), Options(), 1)
    parser.open()
    return parser


def person_iou(labels: np.ndarray, truth: np.ndarray) -> float:
    a, b = labels > 0, truth > 0
    return (a & b).sum() / (a | b).sum()


def test_single_person_photos_match_ground_truth_person(bodypix: BodyPixParser, shared: Path) -> None:
    images = sorted((shared / "data" / "ccp" / "images").glob("*.jpg"))[:4]
    scores = []
    for path in images:
        image = cv2.imread(str(path))
        labels = bodypix.parse([image])[0]
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
        scores.append(person_iou(labels, cv2.imread(str(path).replace("images", "labels")[:-3] + "png", 0)))
    assert np.mean(scores) > 0.7, scores


def test_parts_land_where_a_body_has_them(bodypix: BodyPixParser, shared: Path) -> None:
    image = cv2.imread(str(shared / "data" / "ccp" / "images" / "0003.jpg"))
    labels = bodypix.parse([image])[0]
    names = bodypix.label_set.names
    rows = {name: np.nonzero(labels == names.index(name))[0] for name in ("left_face", "torso_front", "left_foot")}
    assert all(len(r) > 50 for r in rows.values()), {k: len(v) for k, v in rows.items()}
    assert rows["left_face"].mean() < rows["torso_front"].mean() < rows["left_foot"].mean()


def test_any_crop_size_gives_a_label_map_of_that_size(bodypix: BodyPixParser, vtest_frame: np.ndarray) -> None:
    crops = [vtest_frame[150:236, 580:630], vtest_frame[:100, :37], vtest_frame]
    for crop, labels in zip(crops, bodypix.parse(crops)):
        assert labels.shape == crop.shape[:2]
        assert labels.max() < len(bodypix.label_set)


def test_upsampling_maps_corners_onto_corners() -> None:
    weights = _upsampling_matrix(33, 33, 33, 3)
    assert weights[0].tolist() == [1, 0, 0] and weights[16].tolist() == [0, 1, 0] and weights[32].tolist() == [0, 0, 1]
    assert np.allclose(weights.sum(1), 1)


def test_upsampling_to_another_size_samples_the_same_surface() -> None:
    """Logits upsampled straight to half the image's size equal the full-size upsampling at the same points."""
    logits = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
    full = upsample(logits, (65, 49), (61, 41))
    half = upsample(logits, (65, 49), (61, 41), (31, 21))
    assert half.shape == (2, 31, 21)
    assert np.allclose(half, full[:, ::2, ::2], atol=1e-5)


def test_argmax_planes_matches_numpy() -> None:
    planes = np.random.default_rng(0).normal(size=(24, 40, 30)).astype(np.float32)
    assert np.array_equal(_argmax_planes(planes), planes.argmax(axis=0))
