"""cihp-net: the garment-type parser, its shipped weights, training from labelled photos, and its failures."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import psutil
from PIL import Image
import pytest
import torch

from conftest import run_cli
from vidparse.errors import ConfigError, ModelError
from vidparse.evaluation.datasets import Sample, find_samples
from vidparse.model_store import PACKAGED_DIR, resolve_model, sha256_of
from vidparse.stages.labels import FINE_CLASSES, load_label_set
from vidparse.stages.options import ClassOffsets
from vidparse.stages.parsers import cihp_net, upsampling
from vidparse.stages.parsers.multiclass import (CLASSES, MIN_CELL, MulticlassSegmenter, cell_side, fitted_sides, pack,
                                                with_feature_output)
from vidparse.training import dataset, fit
from vidparse.training.card import TrainingRecord, write_card
from vidparse.training.dataset import IGNORED, Example, Extractor, fine_lut
from vidparse.training.run import TrainingJob

CIHP, CCP, BODYPIX = load_label_set("cihp"), load_label_set("ccp"), load_label_set("bodypix")
REFERENCE = Path(__file__).with_name("cihp_net_reference.json")


def fixed_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return (rng.random((cihp_net.FEATURES, cihp_net.NET_HEIGHT, 48), dtype=np.float32),
            rng.random((cihp_net.DETAILS, cihp_net.DETAIL_HEIGHT, 96), dtype=np.float32),
            rng.random((cihp_net.COARSE_CHANNELS, cihp_net.COARSE_HEIGHT, 3), dtype=np.float32))


def reference_of(weights: Path) -> dict:
    """What the network gives on the fixed inputs: recorded once per weights file (tests/cihp_net_reference.json)."""
    net = cihp_net.GarmentNet(weights, threads=1)
    net.open()
    logits = net.logits(*fixed_inputs())
    return {"weights_sha256": sha256_of(weights), "shape": list(logits.shape),
            "class_pixels": np.bincount(logits.argmax(axis=0).ravel(), minlength=len(FINE_CLASSES)).tolist(),
            "logits_at": {f"{c},{y},{x}": float(logits[c, y, x]) for c, y, x in ((0, 0, 0), (4, 128, 40), (13, 255, 95))}}


def test_shipped_weights_reproduce_their_recorded_output() -> None:
    weights = PACKAGED_DIR / "cihp-net.onnx"
    recorded = json.loads(REFERENCE.read_text())
    assert recorded["weights_sha256"] == sha256_of(weights), "weights changed: record them again (see reference_of)"
    assert weights.stat().st_size < 5e6
    now = reference_of(weights)
    assert now["shape"] == recorded["shape"] and now["class_pixels"] == recorded["class_pixels"]
    for key, value in recorded["logits_at"].items():
        assert now["logits_at"][key] == pytest.approx(value, abs=1e-4)


@pytest.mark.parametrize("label_set, name, fine", [
    ("ccp", "blazer", "coat"), ("ccp", "cardigan", "coat"), ("ccp", "cape", "coat"), ("ccp", "suit", "coat"),
    ("ccp", "jacket", "coat"), ("ccp", "romper", "dress"), ("ccp", "dress", "dress"), ("ccp", "jeans", "pants"),
    ("ccp", "leggings", "pants"), ("ccp", "shorts", "pants"), ("ccp", "boots", "shoes"), ("ccp", "heels", "shoes"),
    ("ccp", "sneakers", "shoes"), ("ccp", "t-shirt", "upper"), ("ccp", "skirt", "skirt"), ("ccp", "skin", "skin"),
    ("ccp", "accessories", "ignore"), ("ccp", "necklace", "ignore"), ("ccp", "bag", "background"),
    ("cihp", "upper_clothes", "upper"), ("cihp", "coat", "coat"), ("cihp", "face", "skin"),
    ("cihp", "left_leg", "skin"), ("cihp", "right_shoe", "shoes"), ("cihp", "glove", "gloves"),
])
def test_fine_scheme_maps_garments(label_set: str, name: str, fine: str) -> None:
    assert load_label_set(label_set).groups["fine"][name] == fine


def test_fine_labels_for_training_leave_accessories_out() -> None:
    lut = fine_lut(CCP)
    assert lut[CCP.names.index("romper")] == FINE_CLASSES.index("dress")
    assert lut[CCP.names.index("watch")] == IGNORED


def part(name: str) -> int:
    return BODYPIX.names.index(name) - 1  # the network's part channels have no background


@pytest.mark.parametrize("fine, body_part, face, expected", [
    ("skin", "l_lower_arm_front", False, "left_arm"), ("skin", "right_hand", False, "right_arm"),
    ("skin", "l_upper_leg_back", False, "left_leg"), ("skin", "torso_front", False, "torso_skin"),
    ("skin", "torso_front", True, "face"), ("skin", "left_face", False, "torso_skin"),  # the neck
    ("shoes", "left_foot", False, "left_shoe"), ("shoes", "r_lower_leg_front", False, "right_shoe"),
    ("coat", "torso_front", False, "coat"), ("skirt", "l_upper_leg_front", False, "skirt"),
    ("gloves", "left_hand", False, "glove"), ("background", "torso_front", True, "background"),
])
def test_body_side_comes_from_bodypix(fine: str, body_part: str, face: bool, expected: str) -> None:
    labels = cihp_net.to_cihp(np.array([[FINE_CLASSES.index(fine)]], np.uint8), np.array([[part(body_part)]]),
                              np.array([[face]]))
    assert CIHP.names[labels[0, 0]] == expected


@pytest.mark.parametrize("material, network, expected", [
    ("hair", "hat", "hair"), ("body_skin", "upper", "skin"), ("face_skin", "sunglasses", "skin"),
    ("clothes", "skin", "pants"), ("clothes", "background", "pants"), ("clothes", "coat", "coat"),
    ("background", "hair", "background"), ("background", "skin", "background"), ("background", "shoes", "shoes"),
    ("others", "hair", "hair"), ("others", "hat", "hat"), ("unsure", "skin", "skin"), ("unsure", "hat", "hat"),
])
def test_the_segmenter_says_the_material_and_the_network_the_garment(material: str, network: str,
                                                                     expected: str) -> None:
    """Per pixel: the network's first choice ``network``, pants its best garment; the segmenter's class ``material``."""
    logits = np.zeros((len(FINE_CLASSES), 1, 1), np.float32)
    logits[FINE_CLASSES.index(network)] = 2.0
    logits[FINE_CLASSES.index("pants")] = 1.0 if network != "coat" else 0.5
    seen = cihp_net.UNSURE if material == "unsure" else CLASSES.index(material)
    fine = cihp_net.garment_types(logits, np.array([[seen]], np.uint8))
    assert FINE_CLASSES[fine[0, 0]] == expected
    assert FINE_CLASSES[cihp_net.garment_types(logits, None)[0, 0]] == network


def test_where_the_segmenter_is_unsure_the_network_decides() -> None:
    """Per pixel: the segmenter rates hair 0.9, then hair 0.45 (skin 0.35); the network says hat everywhere."""
    planes = np.full((len(CLASSES), 1, 2), 0.05, np.float32)
    planes[CLASSES.index("hair")] = [[0.9, 0.45]]
    planes[CLASSES.index("body_skin"), 0, 1] = 0.35
    logits = np.zeros((len(FINE_CLASSES), 1, 2), np.float32)
    logits[FINE_CLASSES.index("hat")] = 1.0
    labels = cihp_net.labels_at(logits, np.zeros((1, 2), np.intp), planes, np.zeros((1, 2), bool), materials=True)
    assert [CIHP.names[c] for c in labels[0]] == ["hair", "hat"]


def test_class_offsets_are_one_per_garment_type_and_move_the_choice() -> None:
    """The network rates a pixel of clothes dress 1.0, skirt 0.8: an offset of 0.5 on skirts makes it a skirt."""
    assert [f.name for f in dataclasses.fields(ClassOffsets)] == list(FINE_CLASSES)
    planes = np.full((len(CLASSES), 1, 1), 0.02, np.float32)
    planes[CLASSES.index("clothes")] = 0.9
    logits = np.zeros((len(FINE_CLASSES), 1, 1), np.float32)
    logits[FINE_CLASSES.index("dress")], logits[FINE_CLASSES.index("skirt")] = 1.0, 0.8
    where = (np.zeros((1, 1), np.intp), planes, np.zeros((1, 1), bool))
    neutral = cihp_net.class_offsets(cihp_net.Options(class_offsets=ClassOffsets(**{n: 0.0 for n in FINE_CLASSES})))
    skirts = cihp_net.class_offsets(cihp_net.Options(class_offsets=ClassOffsets(dress=0.0, skirt=0.5)))
    assert not neutral.any() and skirts[FINE_CLASSES.index("skirt")] == 0.5
    assert CIHP.names[cihp_net.labels_at(logits, *where, materials=True, offsets=neutral)[0, 0]] == "dress"
    assert CIHP.names[cihp_net.labels_at(logits, *where, materials=True, offsets=skirts)[0, 0]] == "skirt"


def test_the_segmenters_materials_apply_to_crops_it_saw_at_enough_rows() -> None:
    def outputs(rows: int) -> cihp_net.CropOutputs:
        return cihp_net.CropOutputs(np.zeros((400, 150, 3), np.uint8), np.zeros((25, 26, 10), np.float32),
                                    (401, 145), np.zeros((6, rows, rows * 3 // 8), np.float32),
                                    np.zeros((32, rows // 2, rows * 3 // 16), np.float32),
                                    np.zeros((64, rows // 16, rows * 3 // 128), np.float32))

    options = cihp_net.Options(segmenter_materials_min_rows=128)
    assert cihp_net.materials_apply(options, outputs(128)) and not cihp_net.materials_apply(options, outputs(127))
    assert not cihp_net.materials_apply(replace(options, segmenter_materials=False), outputs(256))


def test_multiclass_cells_keep_the_detail_asked_for() -> None:
    assert cell_side(80, 0.5) == MIN_CELL == 64 and cell_side(150, 0.5) == 75 and cell_side(151, 0.5) == 76
    assert cell_side(200, 1.0) == 200 and cell_side(512, 0.5) == 256


def test_multiclass_cells_grow_while_they_fit_as_few_calls() -> None:
    assert fitted_sides([100] * 4, 0.4) == [100] * 4, "all rows of each: four 100-pixel cells fit one call"
    assert fitted_sides([100] * 10, 0.4) == [64] * 10, "ten cells fit one call only at 64"
    big, small = fitted_sides([200, 60], 0.4)
    assert small == MIN_CELL and 180 <= big <= 256 - MIN_CELL, (big, small)  # side by side on one shelf
    assert len(pack([big, small])) == 1
    assert fitted_sides([300], 0.4) == [256], "a crop alone in its call gets all of it"
    first, second = fitted_sides([300, 300], 0.4)  # 120 at 0.4: two share a call, so they stay side by side
    assert first == second and 120 <= first <= 128, first


def test_multiclass_packs_cells_onto_as_few_calls_as_they_fit() -> None:
    assert pack([64] * 16) == [[(i, 64 * (i // 4), 64 * (i % 4)) for i in range(16)]], "16 small crops: one call"
    assert [len(cells) for cells in pack([64] * 17)] == [16, 1]
    # the biggest first; the 100 fits neither beside the 200 nor below it
    assert pack([64, 200, 100, 64]) == [[(1, 0, 0)], [(2, 0, 0), (0, 0, 100), (3, 0, 164)]]
    assert pack([128, 128, 90, 90, 90, 64]) == [[(0, 0, 0), (1, 0, 128), (2, 128, 0), (3, 128, 90), (5, 128, 180)],
                                                [(4, 0, 0)]]
    rng = np.random.default_rng(0)
    for _ in range(50):
        sides = rng.integers(MIN_CELL, 257, rng.integers(1, 30)).tolist()
        inputs = pack(sides)
        assert sorted(index for cells in inputs for index, _, _ in cells) == list(range(len(sides)))
        for cells in inputs:
            taken = np.zeros((256, 256), np.int32)
            for index, top, left in cells:
                taken[top:top + sides[index], left:left + sides[index]] += 1
            assert taken.max() == 1 and taken.sum() == sum(sides[i] ** 2 for i, _, _ in cells), "inside, no overlap"


@pytest.fixture(scope="module")
def person_crop(shared: Path) -> np.ndarray:
    import cv2

    image = cv2.imread(str(shared / "data" / "ccp-train" / "images" / "0040.jpg"))
    return image[:, max(0, image.shape[1] // 2 - 220):image.shape[1] // 2 + 220]


def test_packed_crops_keep_their_order(person_crop: np.ndarray) -> None:
    import cv2

    small = cv2.resize(person_crop, (50, 100))
    blank = np.zeros_like(small)
    segmenter = MulticlassSegmenter(resolve_model("multiclass"), threads=1)
    segmenter.open()
    first, second = ([s.probabilities for s in segmenter.segment(images)] for images in ([small, blank], [blank, small]))
    # two 1:2 crops of 100 rows share a call, each in a cell of all its rows (100), padded to 3:4
    assert [p.shape for p in first] == [(6, 100, 67)] * 2
    person_share = [1 - p[0].mean() for p in (*first, *second)]
    assert person_share[0] > 1.5 * person_share[1] and person_share[3] > 1.5 * person_share[2], person_share


def test_one_segmenter_call_gives_its_head_features_with_its_classes(person_crop: np.ndarray, shared: Path) -> None:
    """The segmenter's model is edited in memory to also output its head's features and its coarsest pyramid level:
    per crop, 32 channels at about half the probabilities' rows and columns and 64 at a sixteenth, each telling the
    person from the padding; a model without them (the hair segmenter) is refused with a hint."""
    import cv2

    segmenter = MulticlassSegmenter(resolve_model("multiclass"), threads=1, detail=1.0)
    segmenter.open()
    (found,) = segmenter.segment([cv2.resize(person_crop, (128, 256))])
    (channels, rows, columns), (_, full_rows, full_columns) = found.features.shape, found.probabilities.shape
    assert channels == 32 and (rows, columns) == (full_rows // 2, full_columns // 2)
    person = cv2.resize(1 - found.probabilities[0], (columns, rows)) > 0.5
    assert 0.2 < person.mean() < 0.9
    assert np.linalg.norm(found.features[:, person].mean(1) - found.features[:, ~person].mean(1)) > 1.0
    cells = found.coarse
    assert cells.shape[0] == 64  # every cell the crop's window touches: as many as it spans, or one more off the grid
    assert all(-(-full // 16) <= cells_seen <= -(-full // 16) + 1
               for full, cells_seen in zip((full_rows, full_columns), cells.shape[1:]))
    person = cv2.resize(1 - found.probabilities[0], cells.shape[:0:-1], interpolation=cv2.INTER_AREA) > 0.5
    assert 0 < person.sum() < person.size
    assert np.linalg.norm(cells[:, person].mean(1) - cells[:, ~person].mean(1)) > 1.0
    with pytest.raises(ModelError, match="no segmentation head features") as refused:
        with_feature_output((shared / "models" / "mediapipe" / "hair_segmentation.tflite").read_bytes())
    assert "vidparse models pull multiclass" in (refused.value.hint or "")


def test_the_crops_of_wide_frames_are_segmented_finer(person_crop: np.ndarray) -> None:
    """Frames at least `wide_frame_width` wide (cameras over crowds) get `wide_segmenter_detail`: six 120-row crops
    share one call in 85-pixel cells at the ordinary 0.7, and get cells of all their rows (two calls) at 1.0."""
    import cv2

    from vidparse.stages.roi import Crop

    options = cihp_net.Options()
    assert (options.segmenter_detail, options.wide_segmenter_detail, options.wide_frame_width) == (0.7, 1.0, 1280)
    detail = cihp_net.segmenter_detail
    assert detail(options, 1280) == 1.0 and detail(options, 1279) == detail(options, 0) == 0.7
    assert detail(replace(options, wide_frame_width=0), 3840) == 0.7
    frozen = cihp_net.FrozenModels(options, threads=1)
    small = cv2.resize(person_crop, (60, 120))
    crops = [Crop(region=(0, 0, 60, 120), image=small, scale=1.0)] * 6
    frozen.open()
    try:
        rows = {frame_width: {outputs.multiclass.shape[1] for outputs in
                              frozen.analyze(crops, segmenter_detail=detail(options, frame_width))}
                for frame_width in (768, 1280)}
    finally:
        frozen.close()
    assert rows == {768: {85}, 1280: {120}}


def test_a_narrow_crop_is_segmented_padded_to_an_ordinary_photos_shape(person_crop: np.ndarray) -> None:
    import cv2

    segmenter = MulticlassSegmenter(resolve_model("multiclass"), threads=1, detail=1.0)  # one crop per call
    segmenter.open()
    narrow = cv2.resize(person_crop, (128, 384))  # 1:3, as a standing person's crop
    seen = segmenter.segment([narrow])[0].probabilities
    padded = np.zeros((384, 288, 3), np.uint8)  # the same crop padded to 3:4 by hand
    padded[:, 80:208] = narrow
    by_hand = segmenter.segment([padded])[0].probabilities
    assert seen.shape == (6, 256, 114) and by_hand.shape == (6, 256, 256)  # 128 of 288 columns: 114 of the cell's
    window = by_hand[:, :, 71:185]
    assert np.abs(seen - window).mean() < 0.02
    assert seen[0].mean() < by_hand[0].mean()  # the padding cut off was background


def test_guided_upsampling_moves_a_coarse_edge_onto_the_crops_edge() -> None:
    """A plane drawn at a quarter of the crop's rows puts a blurred edge at column 230; the crop's own edge is at 234.
    Guided by the crop, the planes switch at 234, in one step; bilinear keeps the model's blurred edge."""
    guide = np.full((400, 400), 0.2, np.float32)
    guide[:, 234:] = 0.8
    ramp = np.clip((np.arange(100) + 0.5 - 57.5) / 4 + 0.5, 0, 1).astype(np.float32)
    planes = np.stack([np.tile(ramp, (100, 1)), np.tile(1 - ramp, (100, 1))])
    guided = upsampling.upsampled(planes, (400, 400), guide)
    bilinear = upsampling.upsampled(planes, (400, 400))
    for row in (0, 200, 399):
        assert np.argmax(guided[:, row], axis=0).tolist() == [1] * 234 + [0] * 166
        assert np.diff(guided[0, row])[233] > 0.5 and np.abs(np.diff(bilinear[0, row])).max() < 0.1
    assert np.argmax(bilinear[0, 200] > 0.5) == 230
    near = upsampling.upsampled(planes, (140, 140), np.zeros((140, 140), np.float32))  # under GUIDED_FROM: bilinear
    assert np.array_equal(near, upsampling.resized(planes, (140, 140)))


def test_parser_labels_a_person_with_garments(person_crop: np.ndarray) -> None:
    parser = cihp_net.create("cihp-net", cihp_net.Options(), resolve_model("cihp-net"), "cpu", threads=1)
    parser.open()
    (labels,) = parser.parse([person_crop])
    parser.close()
    assert labels.shape == person_crop.shape[:2]
    present = {CIHP.names[c] for c in np.unique(labels)}
    assert {"background", "hair", "face"} <= present
    assert present & {"upper_clothes", "coat", "dress"} and present & {"left_shoe", "right_shoe"}


def test_a_crop_in_a_mirror_gives_the_mirrored_inputs(person_crop: np.ndarray) -> None:
    """The frozen models' outputs for a mirrored photo are about its inputs mirrored: BodyPix's left and right parts
    swapped (without the swap they agree on 38% of the person), the position channels unchanged."""
    from vidparse.stages.roi import Crop

    frozen = cihp_net.FrozenModels(cihp_net.Options(), threads=1)
    frozen.open()
    seen = [cihp_net.features(outputs) for outputs in frozen.analyze(
        [Crop(region=(0, 0, image.shape[1], image.shape[0]), image=image, scale=1.0)
         for image in (person_crop, np.ascontiguousarray(person_crop[:, ::-1]))])]
    frozen.close()
    (context, details, coarse), (in_mirror, details_in_mirror, coarse_in_mirror) = seen
    used = cihp_net.net_width(*person_crop.shape[:2])
    mirrored, mirrored_details, mirrored_coarse = cihp_net.mirrored(context, details, coarse, used)
    person = mirrored[3, :, :used] > 0.5
    parts = cihp_net.PARTS
    assert (mirrored[parts, :, :used].argmax(0) == in_mirror[parts, :, :used].argmax(0))[person].mean() > 0.7
    assert np.abs(mirrored[:4] - in_mirror[:4]).mean() < 0.03 and np.abs(mirrored_details - details_in_mirror).mean() < 0.03
    assert np.array_equal(mirrored[-2:], context[-2:])
    columns = cihp_net.coarse_columns(used)
    assert mirrored_coarse.shape == coarse.shape and np.array_equal(mirrored_coarse[:, :, columns:], coarse[:, :, columns:])
    assert np.abs(mirrored_coarse - coarse_in_mirror).mean() < np.abs(coarse - coarse_in_mirror).mean()
    again = cihp_net.mirrored(mirrored, mirrored_details, mirrored_coarse, used)
    assert all(np.array_equal(a, b) for a, b in zip(again, (context, details, coarse)))


def test_with_the_mirror_a_crop_and_its_mirror_image_get_the_same_labels(person_crop: np.ndarray) -> None:
    """parsers.cihp-net.mirror averages the network's answers for the crop and for its mirror image, so the two get
    the same labels but for the side (left arm and right arm swap places in a mirror) more often than without (the
    network with the segmenter's features already agrees with itself on 94% of this crop, the one before on 89%)."""
    names = CIHP.names
    side_free = np.array([names.index(name.replace("left_", "right_")) for name in names], np.uint8)
    in_mirror = np.ascontiguousarray(person_crop[:, ::-1])
    same = {}
    for mirror in (False, True):
        parser = cihp_net.create("cihp-net", cihp_net.Options(mirror=mirror), resolve_model("cihp-net"), "cpu", 1)
        parser.open()
        labels, labels_in_mirror = parser.parse([person_crop, in_mirror])
        parser.close()
        same[mirror] = (side_free[labels] == side_free[labels_in_mirror[:, ::-1]]).mean()
    assert same[True] > 0.95 and same[True] > same[False], same


def test_a_crop_without_a_person_takes_no_room_from_the_people(person_crop: np.ndarray) -> None:
    """BodyPix looks first: a crop it sees no person in (here a blank wall) is left unlabelled and never reaches the
    segmenter, so the person beside it is parsed exactly as if alone (it would otherwise share a call's cells)."""
    import cv2

    parser = cihp_net.create("cihp-net", cihp_net.Options(), resolve_model("cihp-net"), "cpu", threads=1)
    parser.open()
    # together, a 200-row person and a 150-row wall fit one segmenter call only in cells smaller than their rows
    person = cv2.resize(person_crop, (round(200 * person_crop.shape[1] / person_crop.shape[0]), 200))
    wall = np.full((150, 100, 3), 128, np.uint8)
    (alone,) = parser.parse([person])
    beside, blank = parser.parse([person, wall])
    parser.close()
    assert alone.any() and not blank.any()
    assert np.array_equal(beside, alone)


def test_a_loose_crops_signs_and_grass_stay_background(shared: Path) -> None:
    """vtest frame 221: the detector's box around a man walking in at the right edge also holds a sign and a verge;
    the network (trained on crops cut tight around people) fills its upper half with trousers. Where BodyPix sees
    no person the pixels stay background; the man (lower half) stays labelled."""
    import cv2

    from vidparse.stages.source import VideoSource

    source = VideoSource(str(shared / "data" / "video" / "vtest.avi"), max_frames=222)
    source.open()
    frame = [f.image for f in source.frames()][-1]
    source.close()
    crop = cv2.resize(frame[124:338, 666:768], None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)  # box + margin, 2x
    parser = cihp_net.create("cihp-net", cihp_net.Options(), resolve_model("cihp-net"), "cpu", threads=1)
    parser.open()
    (labels,) = parser.parse([crop])
    parser.close()
    half = len(labels) // 2
    assert (labels[:half] > 0).mean() < 0.1  # 0.57 without the rule
    assert (labels[half:] > 0).mean() > 0.1


def test_training_loss_falls_on_four_photos(shared: Path, tmp_path: Path) -> None:
    samples = find_samples(shared / "data" / "ccp-train" / "images", shared / "data" / "ccp-train" / "labels")[:4]
    extractor = Extractor("ccp", threads=2)
    examples = [e for sample in samples for e in extractor.examples(sample, seed=0)]
    assert len(examples) == 8 and sum(e.small for e in examples) == 4
    with Image.open(samples[0].image_path) as image, Image.open(samples[0].label_path) as labels:
        size = (image.width // 20, image.height // 20)  # a person under 48 pixels: already small
        image.resize(size).save(tmp_path / "small.jpg")
        labels.resize(size, Image.NEAREST).save(tmp_path / "small.png")
    small = extractor.examples(Sample("small", tmp_path / "small.jpg", tmp_path / "small.png"), seed=0)
    assert [e.small for e in small] == [False], "one view: a second full-size one would be scored twice"
    losses: list[float] = []
    settings = fit.TrainSettings(epochs=10, batch_size=4, learning_rate=1e-2)
    model = fit.train(examples, settings, on_epoch=lambda _, loss: losses.append(loss))
    assert losses[-1] < 0.8 * losses[0], losses
    again: list[float] = []
    fit.train(examples, settings, on_epoch=lambda _, loss: again.append(loss))
    assert again == losses, "the same seed gives the same training"
    in_float32: list[float] = []
    fit.train(examples, replace(settings, bfloat16=False), on_epoch=lambda _, loss: in_float32.append(loss))
    assert in_float32[-1] < 0.8 * in_float32[0], in_float32
    assert (in_float32 != losses) == fit.bfloat16_native(), "bfloat16 convolutions where the CPU has them"
    labels = fit.predict(model, examples[0], (900, 600))
    assert labels.shape == (900, 600) and labels.max() < len(CIHP)


def test_the_training_cache_keeps_the_example_sets_used_last(tmp_path: Path) -> None:
    import os

    from vidparse.training.dataset import prune_cache

    for age, name in enumerate(["e", "d", "c", "b", "a"]):  # a is the oldest
        path = tmp_path / f"examples-{name}.npz"
        path.write_bytes(b"x")
        os.utime(path, (1_000_000 - age, 1_000_000 - age))
    (tmp_path / "examples-f.partial.npz").write_bytes(b"x")  # another training still writing its set
    (tmp_path / "other.npz").write_bytes(b"x")
    prune_cache(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["examples-c.npz", "examples-d.npz", "examples-e.npz",
                                                          "examples-f.partial.npz", "other.npz"]


def test_a_damaged_cached_example_set_is_computed_again(shared: Path, tmp_path: Path, caplog) -> None:
    from vidparse.training.dataset import extract

    samples = find_samples(shared / "data" / "ccp-train" / "images", shared / "data" / "ccp-train" / "labels")[:1]
    first = extract(samples, "ccp", 0, 1, tmp_path)
    (cached,) = tmp_path.glob("examples-*.npz")
    cached.write_bytes(cached.read_bytes()[:1000])  # cut short, as a full disk or a killed copy leaves it
    with caplog.at_level("WARNING"):
        again = extract(samples, "ccp", 0, 1, tmp_path)
    assert "are damaged" in caplog.text and len(again) == len(first) == 2
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(first, again))
    assert [p.name for p in tmp_path.iterdir()] == [cached.name], "whole again, and no partial file left"


def test_training_batches_hold_one_crop_width_each() -> None:
    widths = [48, 64, 48, 32, 64, 48, 48, 64, 48]
    examples = [Example(str(i), False, np.zeros((1, 1, w), np.float16), np.zeros((1, 1, 2 * w), np.float16),
                        np.zeros((1, 1, w // 16), np.float16), np.zeros((1, 2 * w), np.uint8), (0, 0, 1, 1), w)
                for i, w in enumerate(widths)]
    batches = fit.width_batches(examples, 2, np.random.default_rng(0))
    assert sorted(i for batch in batches for i in batch) == list(range(len(widths)))
    assert all(len({widths[i] for i in batch}) == 1 and 1 <= len(batch) <= 2 for batch in batches)
    assert len(batches) == 3 + 2 + 1  # five 48s, three 64s, one 32, two to a batch


def test_class_weights_follow_the_pixel_share_to_the_power_asked() -> None:
    labels = np.array([[0] * 12 + [1] * 3 + [2] + [IGNORED] * 4], np.uint8)  # shares 12 : 3 : 1, the rest unseen
    examples = [Example("a", False, np.zeros((1, 1, 16), np.float16), np.zeros((1, 1, 32), np.float16),
                        np.zeros((1, 1, 1), np.float16), labels, (0, 0, 1, 1), 10)]
    assert fit.class_weights(examples, 0.0)[:3].tolist() == [1.0, 1.0, 1.0]
    for power in (0.25, 0.5):
        weights = fit.class_weights(examples, power).numpy()
        assert weights[3:].tolist() == [0.0] * (len(FINE_CLASSES) - 3), "classes never seen weigh nothing"
        assert weights[:3].mean() == pytest.approx(1.0)
        assert weights[1] / weights[0] == pytest.approx(4 ** power) and weights[2] / weights[1] == pytest.approx(3 ** power)


def test_card_of_a_run_without_folds_says_k_fold_was_not_run(tmp_path: Path) -> None:
    weights = tmp_path / "cihp-net.onnx"
    weights.write_bytes(b"weights")
    record = TrainingRecord("vidparse train ... --folds 0", tmp_path, "ccp", 4, 8, fit.TrainSettings(), 60.0, 0, {})
    card = write_card(weights, record).read_text()
    assert "k-fold cross-validation was not run (`--folds 0`)" in card
    assert "0-fold" not in card and "Each fold's network" not in card
    assert sha256_of(weights) in card and "--folds 0" in card
    assert f"PyTorch kernels for {torch.backends.cpu.get_cpu_capability()}" in card, "bytes depend on the CPU's kernels"


def test_labels_that_look_like_another_label_sets_are_warned_of(shared: Path, tmp_path: Path, caplog) -> None:
    (tmp_path / "0032.jpg").symlink_to(shared / "data" / "ccp-train" / "images" / "0032.jpg")
    with Image.open(shared / "data" / "ccp-train" / "labels" / "0032.png") as labels:
        Image.fromarray((np.array(labels) > 0).astype(np.uint8) * 13).save(tmp_path / "0032.png")  # CIHP's "face"
    job = TrainingJob(tmp_path, tmp_path, "ccp", tmp_path / "w.onnx", folds=0, epochs=1)
    with caplog.at_level("WARNING"):
        assert [s.name for s in job.check()] == ["0032"]
    assert "use no class above 13, as CIHP's would: check --label-set" in caplog.text


def test_a_damaged_frozen_model_stops_training_before_any_work(shared: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Each pool process failed to load it, and the training ended in 'unexpected BrokenProcessPool: this is a bug'
    with a traceback per process."""
    monkeypatch.setenv("VIDPARSE_MODEL_DIR", str(models_with_a_damaged_segmenter(tmp_path)))
    (tmp_path / "0032.jpg").symlink_to(shared / "data" / "ccp-train" / "images" / "0032.jpg")
    (tmp_path / "0032.png").symlink_to(shared / "data" / "ccp-train" / "labels" / "0032.png")
    job = TrainingJob(tmp_path, tmp_path, "ccp", tmp_path / "w.onnx", folds=0, epochs=1, cache=tmp_path / "cache")
    with pytest.raises(ModelError, match="selfie_multiclass_256x256.tflite: truncated or not a TFLite model"):
        job.check()


def test_photos_that_all_fall_in_one_fold_are_refused_before_any_work(shared: Path, tmp_path: Path) -> None:
    """Photos are dealt to folds by name; when every one fell in the last fold, the frozen models ran and the
    first fold trained before the error."""
    for stem in ("0032", "0033"):  # both in fold 2 of 2
        (tmp_path / f"{stem}.jpg").symlink_to(shared / "data" / "ccp-train" / "images" / f"{stem}.jpg")
        (tmp_path / f"{stem}.png").symlink_to(shared / "data" / "ccp-train" / "labels" / f"{stem}.png")
    job = TrainingJob(tmp_path, tmp_path, "ccp", tmp_path / "w.onnx", folds=2, epochs=1, cache=tmp_path / "cache")
    with pytest.raises(ConfigError, match="fold 2 of 2 holds every labelled photo: too few photos for 2 folds"):
        job.check()
    assert not (tmp_path / "cache").exists(), "refused before any work"


def test_frozen_models_a_pool_process_cannot_load_are_its_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model that passes the main process's check but not the loader (another TFLite model in the segmenter's
    place) broke the pool: 'unexpected BrokenProcessPool'."""
    def refused(label_set: str, threads: int) -> Extractor:
        raise ModelError("the multiclass segmenter has no segmentation head features", hint="pull it")

    monkeypatch.setattr(dataset, "Extractor", refused)
    monkeypatch.setattr(dataset, "_extractor", None)
    dataset.open_extractor("ccp")
    with pytest.raises(ModelError, match="no segmentation head features"):
        dataset.examples_of(Sample("0032", Path("0032.jpg"), Path("0032.png")), seed=0)


def test_a_card_describing_other_weights_is_replaced_with_a_warning(tmp_path: Path, caplog) -> None:
    record = TrainingRecord("vidparse train ... --epochs 1", tmp_path, "ccp", 4, 8, fit.TrainSettings(epochs=1), 60.0,
                            0, {})
    for name in ("first.onnx", "first.onnx", "second.onnx"):
        (tmp_path / name).write_bytes(name.encode())
        with caplog.at_level("WARNING"):
            card = write_card(tmp_path / name, record).read_text()
    assert caplog.text.count("described first.onnx and now describes second.onnx") == 1, "the same weights again: none"
    assert card.startswith("# cihp-net weights: `second.onnx`") and "training: 1 epoch, batch" in card


def training_photos(shared: Path, folder: Path, count: int) -> tuple[Path, Path]:
    """``folder``/images and ``folder``/labels linking the first ``count`` ccp-train photos and their labels."""
    images, labels = folder / "images", folder / "labels"
    images.mkdir(), labels.mkdir()
    for sample in find_samples(shared / "data" / "ccp-train" / "images", shared / "data" / "ccp-train" / "labels")[:count]:
        (images / sample.image_path.name).symlink_to(sample.image_path)
        (labels / sample.label_path.name).symlink_to(sample.label_path)
    return images, labels


@pytest.mark.slow
def test_train_command_writes_weights_a_card_and_scores(shared: Path, tmp_path: Path) -> None:
    images, labels = training_photos(shared, tmp_path, 6)
    weights = tmp_path / "out" / "mine.onnx"
    weights.parent.mkdir()
    result = run_cli("train", str(images), str(labels), "--label-set", "ccp", "-o", str(weights), "--folds", "2",
                     "--epochs", "2", "--cache", str(tmp_path / "cache"), timeout=600)
    assert result.returncode == 0, result.stderr
    card = (weights.parent / "MODEL_CARD.md").read_text()
    assert "Apache-2.0" in card and "2-fold" in card and "--epochs 2" in card and sha256_of(weights) in card
    assert ("bfloat16 convolutions" in card) == fit.bfloat16_native()
    assert "class offsets" in card and "benchmarks/class_offsets.py" in card  # scored with the shipped recipe's
    assert "garments" in result.stdout and "mIoU" in result.stdout
    net = cihp_net.GarmentNet(weights, threads=1)
    net.open()
    assert net.logits(*fixed_inputs()).shape == (len(FINE_CLASSES), cihp_net.DETAIL_HEIGHT, 96)


def wait_for_the_pool(training: subprocess.Popen[str]) -> None:
    """Until the training has started a process of its pool (it computes the frozen models' outputs)."""
    deadline = time.monotonic() + 60
    while not any("spawn_main" in " ".join(child.cmdline()) for child in psutil.Process(training.pid).children()):
        assert time.monotonic() < deadline and training.poll() is None, "the training started no pool process"
        time.sleep(0.02)


def training_with_its_pool(shared: Path, tmp_path: Path, photos: int) -> subprocess.Popen[str]:
    """`vidparse train` in a session of its own, once its pool has started."""
    images, labels = training_photos(shared, tmp_path, photos)
    training = subprocess.Popen([sys.executable, "-m", "vidparse", "train", str(images), str(labels), "--folds", "0",
                                 "--epochs", "1", "--processes", "2", "--cache", str(tmp_path / "cache"), "-o",
                                 str(tmp_path / "w.onnx")], stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for_the_pool(training)
    return training


def stopped_leaving_no_process(training: subprocess.Popen[str]) -> str:
    """Its stderr, once it has ended with exit code 130 and no process of its group is left."""
    _, stderr = training.communicate(timeout=60)
    assert training.returncode == 130 and "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    deadline = time.monotonic() + 15
    while subprocess.run(["pgrep", "-g", str(training.pid)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "a process of the training still runs"
        time.sleep(0.2)
    return stderr


def test_sigterm_stops_training_with_its_processes(shared: Path, tmp_path: Path) -> None:
    """By Python's default SIGTERM ended the command alone, and the processes running the frozen models ran on."""
    training = training_with_its_pool(shared, tmp_path, 40)
    time.sleep(3)  # the frozen models at work
    training.send_signal(signal.SIGTERM)
    assert "stopped at once" in stopped_leaving_no_process(training)
    assert not (tmp_path / "w.onnx").exists()


def test_ctrl_c_while_the_frozen_models_start_stops_training_without_a_traceback(shared: Path, tmp_path: Path) -> None:
    """Ctrl-C reaches the whole process group: a pool process still importing died of it with a traceback."""
    training = training_with_its_pool(shared, tmp_path, 8)
    os.killpg(training.pid, signal.SIGINT)  # as a terminal sends Ctrl-C, while the pool's processes import
    stopped_leaving_no_process(training)


def test_ctrl_c_while_the_photos_are_checked_stops_a_background_training(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A script's background job starts with SIGINT ignored; the training honoured it only from the frozen models
    on, so a SIGINT while the photos were checked (seconds on ccp-train) was lost and the training ran to its end."""
    from typer.testing import CliRunner

    from vidparse.cli import app

    def check_interrupted(job: TrainingJob) -> list[Sample]:
        os.kill(os.getpid(), signal.SIGINT)
        return []

    monkeypatch.setattr(TrainingJob, "check", check_interrupted)
    monkeypatch.setattr(TrainingJob, "run", lambda job, progress, samples: tmp_path / "MODEL_CARD.md")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        result = CliRunner().invoke(app, ["train", str(tmp_path), str(tmp_path), "-o", str(tmp_path / "w.onnx")])
    finally:
        signal.signal(signal.SIGINT, previous)
    assert result.exit_code == 130 and "stopped at once" in result.output, result.output


@pytest.mark.parametrize("args, code, message", [
    (["{tmp}/none", "{tmp}/none"], 3, "images folder"),
    (["{images}", "{labels}", "--folds", "1"], 2, "--folds 1 leaves nothing to train on"),
    (["{images}", "{labels}", "-o", "{tmp}/none/w.onnx"], 4, "does not exist"),
    (["{tmp}/one", "{tmp}/one", "--folds", "2"], 2, "--folds 2 needs 2 photos or more"),
    (["{images}", "{labels}", "--cache", "{tmp}/file"], 2, "is a file"),
    (["{tmp}/small", "{tmp}/small", "--folds", "0"], 3, "0033.png is 10x10 but its image is"),
    (["{tmp}/small", "{tmp}/small", "--folds", "0", "-o", "{tmp}/small/0032.png"], 4, "the weights are an ONNX file"),
    (["{tmp}/one", "{tmp}/one", "--folds", "0", "-o", "{tmp}/carded/w.onnx"], 4, "MODEL_CARD.md is not a file"),
    (["{tmp}/one", "{tmp}/one", "--folds", "0", "--cache", "/proc/vidparse-cache"], 4, "cannot make the cache folder"),
], ids=["missing-folder", "one-fold", "missing-output-folder", "more-folds-than-photos", "cache-is-a-file",
        "label-of-another-size", "weights-onto-a-label-map", "model-card-is-a-folder", "cache-not-writable"])
def test_train_mistakes_are_one_line_before_any_work(args: list[str], code: int, message: str, shared: Path,
                                                    tmp_path: Path) -> None:
    values = {"tmp": tmp_path, "images": shared / "data" / "ccp-train" / "images",
              "labels": shared / "data" / "ccp-train" / "labels"}
    (tmp_path / "one").mkdir()
    for name in ("0032.jpg", "0032.png"):  # a photo and its labels in one folder
        (tmp_path / "one" / name).symlink_to(values["images" if name.endswith("jpg") else "labels"] / name)
    (tmp_path / "file").write_bytes(b"")
    (tmp_path / "small").mkdir()
    for name in ("0032", "0033"):  # the second photo's labels are wrong: found before the frozen models run
        (tmp_path / "small" / f"{name}.jpg").symlink_to(values["images"] / f"{name}.jpg")
    (tmp_path / "small" / "0032.png").symlink_to(values["labels"] / "0032.png")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "small" / "0033.png")
    (tmp_path / "carded" / "MODEL_CARD.md").mkdir(parents=True)
    result = run_cli("train", "--cache", str(tmp_path / "cache"), *[a.format(**values) for a in args])
    assert result.returncode == code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0] and "Traceback" not in result.stderr
    assert result.stderr.startswith("error:") and not (tmp_path / "cache").exists(), "no progress display, no work"


def weights_unlike_their_card(path: Path) -> Path:
    """The shipped weights with their card, one weight byte changed: still a whole ONNX file that loads and runs."""
    data = bytearray((PACKAGED_DIR / "cihp-net.onnx").read_bytes())
    data[len(data) // 2] ^= 0x40
    path.write_bytes(bytes(data))
    shutil.copy(PACKAGED_DIR / "MODEL_CARD.md", path.parent)
    return path


def earlier_weights(path: Path) -> Path:
    """A network of the version before the coarse input: features and details in, the garment types' logits out."""
    class TwoInputs(torch.nn.Module):
        def forward(self, features: torch.Tensor, details: torch.Tensor) -> torch.Tensor:
            return details[:, :1].repeat(1, len(FINE_CLASSES), 1, 1) + features.mean()

    torch.onnx.export(TwoInputs(), (torch.zeros(1, cihp_net.FEATURES, 128, 64), torch.zeros(1, cihp_net.DETAILS, 256, 128)),
                      str(path), dynamo=False, input_names=["features", "details"], output_names=["logits"])
    return path


@pytest.mark.parametrize("make, message", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.write_bytes(b"\x08\x01garbage" * 100), p)[1], "cannot load model"),
    (earlier_weights, "is not a cihp-net network for this version of vidparse"),
    (weights_unlike_their_card, "its bytes are not those its MODEL_CARD.md records"),
], ids=["missing-weights", "damaged-weights", "an-earlier-versions-weights", "weights-unlike-their-card"])
def test_bad_weights_are_one_line(make, message: str, clip: Path, tmp_path: Path) -> None:
    weights = make(tmp_path / "cihp-net.onnx")
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "cihp-net", "--model-dir", str(weights))
    assert result.returncode == ModelError.exit_code, result.stderr
    assert message in result.stderr and "hint:" in result.stderr and "Traceback" not in result.stderr


def models_with_a_damaged_segmenter(folder: Path) -> Path:
    """A model folder for ``$VIDPARSE_MODEL_DIR``: the real detector and BodyPix, a damaged multiclass segmenter."""
    models = folder / "models"
    for name in ("fastestdet", "bodypix"):
        path = resolve_model(name)
        target = models / path.relative_to(path.parents[1])
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(path)
    damaged = models / "mediapipe" / "selfie_multiclass_256x256.tflite"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"TFL3" + b"\x00" * 4000)
    return models


def test_damaged_segmenter_is_one_line(clip: Path, tmp_path: Path) -> None:
    models = models_with_a_damaged_segmenter(tmp_path)
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "cihp-net",
                     env={"VIDPARSE_MODEL_DIR": str(models), "VIDPARSE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == ModelError.exit_code, result.stderr
    assert "multiclass" in result.stderr and "hint:" in result.stderr and "Traceback" not in result.stderr


def test_a_run_prints_no_runtime_chatter(shared: Path, tmp_path: Path) -> None:
    """LiteRT writes an INFO line per interpreter straight to stderr; a user sees only vidparse's own output."""
    photo = shared / "data" / "ccp" / "images" / "0001.jpg"
    result = run_cli("run", str(photo), "-o", str(tmp_path / "parsed.jpg"), "--model", "cihp-net")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "parsed.jpg").exists()
    assert "XNNPACK" not in result.stderr and "INFO:" not in result.stderr, result.stderr
