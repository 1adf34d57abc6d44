from pathlib import Path

import cv2
import numpy as np
import pytest

from vidparse.model_store import resolve_model
from vidparse.stages.parsers.bodypix import (
    STRIDE,
    TILE,
    BodyPixParser,
    Options,
    _argmax_planes,
    _bands,
    _interpolation_matrix,
    _sample_positions,
    upsample,
)


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
    [(samples, cells, weights)] = _bands(_sample_positions(33, 33, 33, 3), 3)
    assert (samples, cells) == (slice(0, 33), slice(0, 3))
    assert weights[0].tolist() == [1, 0, 0] and weights[16].tolist() == [0, 1, 0] and weights[32].tolist() == [0, 0, 1]
    assert np.allclose(weights.sum(1), 1)


def test_upsampling_to_another_size_samples_the_same_surface() -> None:
    """Logits upsampled straight to half the image's size equal the full-size upsampling at the same points."""
    logits = np.random.default_rng(1).normal(size=(2, 5, 4)).astype(np.float32)
    full = upsample(logits, (65, 49), (61, 41))
    half = upsample(logits, (65, 49), (61, 41), (31, 21))
    assert half.shape == (2, 31, 21)
    assert np.allclose(half, full[:, ::2, ::2], atol=1e-5)


def test_upsampling_in_tiles_equals_the_whole_product() -> None:
    """Tiles over several runs a side give the separable product of the whole interpolation matrices."""
    logits = np.random.default_rng(2).normal(size=(3, 38, 21)).astype(np.float32)
    padded, image = (593, 321), (590, 310)
    rows = _interpolation_matrix(_sample_positions(590, 590, 593, 38), 38)
    columns = _interpolation_matrix(_sample_positions(310, 310, 321, 21), 21)
    assert np.allclose(upsample(logits, padded, image), rows @ logits @ columns.T, atol=1e-5)


def test_a_wide_image_reads_a_few_logit_cells_per_tile() -> None:
    """The work per pixel does not grow with the image's side: a 30000-pixel-wide panorama took 101 s when each
    pixel summed over all its row's 1876 logit cells."""
    bands = _bands(_sample_positions(30000, 30000, 30001, 1876), 1876)
    assert len(bands) == -(-30000 // TILE)
    assert max(cells.stop - cells.start for _, cells, _ in bands) <= TILE // STRIDE + 2


def test_argmax_planes_matches_numpy() -> None:
    planes = np.random.default_rng(0).normal(size=(24, 40, 30)).astype(np.float32)
    assert np.array_equal(_argmax_planes(planes), planes.argmax(axis=0))
