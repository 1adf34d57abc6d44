"""cihp-lite: the fusion table on hand-made maps, the size-agnostic segmenter graph, and real photos."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vidparse.config import load_config
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.model_store import resolve_model
from vidparse.stages.labels import load_label_set
from vidparse.stages.onnx_session import open_session
from vidparse.stages.parsers.cihp_lite import (EDGE, MATERIALS, NONE, fuse, fusion_table, material_map,
                                               size_agnostic_graph)

CIHP, BODYPIX = load_label_set("cihp"), load_label_set("bodypix")
SKIN, CLOTHES, HAIR = (MATERIALS.index(m) for m in ("skin", "clothes", "hair"))


def part(name: str) -> int:
    return BODYPIX.names.index(name)


@pytest.mark.parametrize("body_part, material, expected", [
    ("torso_front", CLOTHES, "upper_clothes"),
    ("torso_back", SKIN, "torso_skin"),
    ("torso_front", HAIR, "hair"),  # long hair over the back
    ("left_face", SKIN, "face"),
    ("right_face", HAIR, "hair"),
    ("right_face", CLOTHES, "hat"),
    ("l_upper_arm_front", SKIN, "left_arm"),
    ("r_lower_arm_back", SKIN, "right_arm"),
    ("right_hand", SKIN, "right_arm"),  # CIHP's arms include the hands
    ("l_upper_arm_back", CLOTHES, "upper_clothes"),  # sleeves
    ("l_lower_leg_front", SKIN, "left_leg"),
    ("r_upper_leg_back", SKIN, "right_leg"),
    ("r_upper_leg_front", CLOTHES, "pants"),
    ("left_foot", SKIN, "left_shoe"),  # sandals: CCP and CIHP call the whole foot footwear
    ("right_foot", CLOTHES, "right_shoe"),
    ("torso_front", NONE, "upper_clothes"),
    ("l_upper_leg_front", EDGE, "background"),  # BodyPix's mask bleeding past the legs
    ("left_foot", EDGE, "left_shoe"),
    ("background", HAIR, "background"),  # the segmenter fires on backgrounds: outside the person mask is background
])
def test_fusion_table_turns_part_and_material_into_a_cihp_class(body_part: str, material: int, expected: str) -> None:
    parts = np.full((2, 3), part(body_part), np.uint8)
    materials = np.full((2, 3), material, np.uint8)
    assert (fuse(parts, materials, fusion_table()) == CIHP.names.index(expected)).all()


def test_material_map_thresholds_and_marks_the_mask_edge() -> None:
    probabilities = np.zeros((3, 40, 40), np.float32)
    probabilities[SKIN, :, :10] = 0.9
    probabilities[CLOTHES, :, 10:20] = 0.6
    probabilities[HAIR, :, 10:20] = 0.55  # clothes wins: the most probable channel
    probabilities[HAIR, :, 20:30] = 0.4  # below the threshold
    person = np.zeros((40, 40), bool)
    person[:, :36] = True
    materials = material_map(probabilities, person, threshold=0.5, edge_px=4)
    assert (materials[:, :10] == SKIN).all() and (materials[:, 10:20] == CLOTHES).all()
    assert (materials[10:30, 20:31] == NONE).all(), "no material, well inside the person"
    assert (materials[10:30, 33:] == EDGE).all(), "no material, within 4 px of the mask's border (and outside)"
    assert (material_map(probabilities, person, 0.5, edge_px=0)[:, 20:] == NONE).all()


def test_a_synthetic_person_gets_cihp_labels_everywhere() -> None:
    """A 3-part body (face over torso over legs), with hair on the face's top and skin on the legs' left half."""
    parts = np.zeros((60, 20), np.uint8)
    parts[:20, 5:15], parts[20:40, 2:18], parts[40:, 4:16] = part("left_face"), part("torso_front"), part("l_upper_leg_front")
    probabilities = np.zeros((3, 60, 20), np.float32)
    probabilities[SKIN, 5:20] = probabilities[CLOTHES, 20:] = 0.9
    probabilities[HAIR, :5] = 0.9
    probabilities[SKIN, 40:, :10], probabilities[CLOTHES, 40:, :10] = 0.95, 0.1
    labels = fuse(parts, material_map(probabilities, parts > 0, 0.5, 0), fusion_table())
    names = np.array(CIHP.names)[labels]
    assert (names[:5, 5:15] == "hair").all() and (names[5:20, 5:15] == "face").all()
    assert (names[20:40, 2:18] == "upper_clothes").all()
    assert (names[40:, 4:10] == "left_leg").all() and (names[40:, 10:16] == "pants").all()
    assert (names[parts == 0] == "background").all()


@pytest.fixture(scope="module")
def segmenter_path() -> Path:
    return resolve_model("cihp-lite")


def test_size_agnostic_graph_matches_the_original_and_takes_any_size(segmenter_path: Path) -> None:
    image = np.random.default_rng(0).normal(size=(1, 3, 512, 512)).astype(np.float32)
    fixed = open_session(segmenter_path, 1).run(None, {"x.1": image})[0]
    edited = open_session(segmenter_path, 1, graph=size_agnostic_graph(segmenter_path))
    assert np.abs(edited.run(None, {"x.1": image})[0] - fixed).max() < 1e-4
    batch = np.concatenate([image[:, :, :384, :256], image[:, :, 128:, 256:]])
    out = edited.run(None, {"x.1": batch})[0]
    assert out.shape == (2, 3, 384, 256) and 0 <= out.min() and out.max() <= 1
    single = edited.run(None, {"x.1": batch[1:]})[0]
    assert np.abs(out[1] - single[0]).max() < 1e-4, "a crop's result does not depend on its batch"


def test_real_ccp_photo_has_hair_upper_and_lower_garments(shared: Path) -> None:
    config = load_config(None, {"model": "cihp-lite"})
    parser = build_person_parser(config, ResolvedModels.for_config(config), threads=1)
    parser.open()
    image = cv2.imread(str(shared / "data" / "ccp" / "images" / "0018.jpg"))
    labels = parser.process(image)[0]
    parser.close()
    ccp = load_label_set("ccp")
    truth = cv2.imread(str(shared / "data" / "ccp" / "labels" / "0018.png"), cv2.IMREAD_UNCHANGED)
    truth_group = np.array([ccp.groups["garments"][n] for n in ccp.names])[truth]
    predicted_group = np.array([CIHP.groups["garments"][n] for n in CIHP.names])[labels]
    for group in ("hair", "upper", "lower", "skin"):
        hits = ((truth_group == group) & (predicted_group == group)).sum()
        union = ((truth_group == group) | (predicted_group == group)).sum()
        assert hits / union > 0.5, f"{group}: IoU {hits / union:.2f}"
