"""Small people: the detector's tiles, boxes merged across them, the zoomed look at small boxes, and a 40-pixel
person found and parsed."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from vidparse.config import load_config
from vidparse.errors import ConfigError
from vidparse.evaluation.datasets import Sample, find_samples, read_sample
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.detect import PersonDetector
from vidparse.stages.labels import load_label_set
from vidparse.stages.options import DetectorOptions
from vidparse.stages.tiles import (MIN_WINDOW_PX, cut_sides, drop_nested, height_fit, merge_boxes, non_max_suppression,
                                   scan_windows, seen_closer, tile_grid, zoom_windows)
from vidparse.stages.tracker import iou_matrix
from vidparse.stages.types import Detections

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import crowd  # noqa: E402  (benchmarks/crowd.py: the street and the pasting)

WIDTH, HEIGHT = 1280, 720
TILED = DetectorOptions(tiles=4, tile_min_width=1280)


def seen_in_tiles(person: list[float], tiles: list[tuple[int, int, int, int]]) -> tuple[np.ndarray, ...]:
    """What each tile's pass reports of a person: its box clipped to the tile, and the sides it was cut at."""
    boxes, sources, cuts = [], [], []
    for index, tile in enumerate(tiles):
        x1, y1, x2, y2 = tile
        clipped = np.array([[max(person[0], x1), max(person[1], y1), min(person[2], x2), min(person[3], y2)]],
                           np.float32)
        if clipped[0, 2] > clipped[0, 0] and clipped[0, 3] > clipped[0, 1]:
            boxes.append(clipped)
            sources.append(index + 1)  # 0 is the whole frame
            cuts.append(cut_sides(clipped, tile, (WIDTH, HEIGHT)))
    return np.concatenate(boxes), np.array(sources), np.concatenate(cuts)


def test_tiles_are_about_square_overlap_and_cover_the_frame() -> None:
    tiles = tile_grid(WIDTH, HEIGHT, TILED)
    assert len(tiles) == 4 * 2  # 4 across, 720 / (1280 / 4) = 2.25 -> 2 rows
    covered = np.zeros((HEIGHT, WIDTH), bool)
    for x1, y1, x2, y2 in tiles:
        covered[y1:y2, x1:x2] = True
        assert 0.7 < (x2 - x1) / (y2 - y1) < 1.3
    assert covered.all()
    assert tiles[1][0] < tiles[0][2], "neighbours overlap"
    assert len(tile_grid(WIDTH, HEIGHT, replace(TILED, tile_rows=1))) == 4, "only the top row"
    assert tile_grid(768, 576, TILED) == [], "narrower than tile_min_width: no tiles"
    assert tile_grid(WIDTH, HEIGHT, DetectorOptions(tiles=0)) == [], "off"


@pytest.mark.parametrize("person, on_a_side", [([300.0, 290, 350, 440], True), ([560.0, 300, 700, 420], True),
                                               ([500.0, 100, 540, 160], False)],
                         ids=["across-rows", "across-a-corner", "inside-one-tile"])
def test_a_person_across_tile_sides_is_one_box(person: list[float], on_a_side: bool) -> None:
    tiles = tile_grid(WIDTH, HEIGHT, TILED)
    boxes, sources, cuts = seen_in_tiles(person, tiles)
    assert cuts.any() == on_a_side and (len(boxes) >= 2) == on_a_side
    merged, scores = merge_boxes(boxes, np.full(len(boxes), 0.8, np.float32), sources, cuts, 0.45)
    assert merged.tolist() == [person] and scores.tolist() == pytest.approx([0.8])


def test_neighbours_across_a_tile_side_stay_two() -> None:
    tiles = tile_grid(WIDTH, HEIGHT, TILED)
    upper, lower = [300.0, 300, 330, 350], [340.0, 345, 370, 400]  # side by side, both cut at the rows' border
    pieces = [seen_in_tiles(p, tiles) for p in (upper, lower)]
    boxes, sources, cuts = (np.concatenate([p[i] for p in pieces]) for i in range(3))
    assert cuts.any()
    merged, _ = merge_boxes(boxes, np.linspace(0.9, 0.6, len(boxes)).astype(np.float32), sources, cuts, 0.45)
    assert sorted(merged.tolist()) == [upper, lower]


def test_zoom_windows_are_squares_around_small_boxes_inside_the_frame() -> None:
    options = DetectorOptions(zoom_window=4.0)
    boxes = np.array([[600, 300, 615, 340],  # 40 tall: a 160-pixel window centred on it
                      [630, 310, 640, 330],  # inside the first window: none of its own
                      [1270, 2, 1280, 22],  # in the top right corner: moved inside the frame
                      [100, 100, 103, 108]], np.float32)  # 8 tall: the smallest window
    windows = zoom_windows(boxes, (WIDTH, HEIGHT), options)
    assert windows == [(527, 240, 687, 400), (1200, 0, WIDTH, 80),
                       (69, 72, 69 + MIN_WINDOW_PX, 72 + MIN_WINDOW_PX)]
    assert zoom_windows(np.array([[0, 0, 30, 700]], np.float32), (WIDTH, HEIGHT), options) == [(0, 0, HEIGHT, HEIGHT)]
    assert zoom_windows(boxes, (WIDTH, HEIGHT), replace(options, zoom_max_windows=2)) == windows[:2]
    near = np.array([[600, 300, 615, 340], [560, 260, 580, 350]], np.float32)  # the second: inside, but 90 of 160 tall
    assert zoom_windows(near, (WIDTH, HEIGHT), options) == [(527, 240, 687, 400), (390, 125, 750, 485)]


def test_suppression_keeps_boxes_flagged_first_over_more_confident_ones() -> None:
    boxes = np.array([[0, 0, 10, 40], [0, 2, 10, 42], [50, 0, 60, 40]], np.float32)
    scores = np.array([0.9, 0.6, 0.7], np.float32)
    assert non_max_suppression(boxes, scores, 0.45).tolist() == [0, 2]
    assert non_max_suppression(boxes, scores, 0.45, first=np.array([False, True, False])).tolist() == [1, 2]


def test_a_second_box_on_one_person_is_dropped_a_person_behind_another_is_not() -> None:
    boxes = np.array([
        [0, 0, 50, 150], [10, 10, 40, 60],  # a person, and a piece of them (IoU 0.2) scoring 0.3 less
        [100, 0, 140, 100], [90, 0, 170, 130],  # a person, and a loose box around them and more (IoU 0.38)
        [200, 0, 260, 180], [210, 10, 230, 50],  # a near person, and a far one behind (IoU 0.07): two people
        [300, 0, 340, 100], [290, 0, 360, 130],  # nested, but scores too close to tell the loose box: both stay
    ], np.float32)
    scores = np.array([0.9, 0.6, 0.9, 0.7, 0.9, 0.5, 0.85, 0.8], np.float32)
    assert non_max_suppression(boxes, scores, 0.45).size == len(boxes)  # all less than NMS's IoU apart
    assert sorted(drop_nested(boxes, scores).tolist()) == [0, 2, 4, 5, 6, 7]


def people_in_perspective(rows: np.ndarray, slope: float = 0.3, intercept: float = -20.0) -> np.ndarray:
    """Boxes of people standing at ``rows`` (their feet) as a camera looking down sees them, a third as wide as tall."""
    heights = slope * rows + intercept
    return np.stack([np.full_like(rows, 400.0), rows - heights, 400.0 + heights / 3, rows], 1).astype(np.float32)


def test_the_height_fit_says_how_tall_people_are_at_each_row() -> None:
    people = people_in_perspective(np.array([250.0, 330, 420, 500, 610, 700]))
    cone = np.array([[900, 440, 915, 470]], np.float32)  # a wrong box: 30 pixels where people are 112
    slope, intercept = height_fit(np.concatenate([people, cone]))
    assert abs(slope - 0.3) < 0.02 and abs(slope * 200 + intercept - 40) < 3, (slope, intercept)
    assert height_fit(people[:3]) is None, "too few boxes"
    upside_down = people_in_perspective(np.array([250.0, 330, 420, 500]), slope=-0.3, intercept=250)
    assert height_fit(upside_down) is None, "the farther up, the larger: no camera looking down"
    assert height_fit(people_in_perspective(np.full(5, 400.0))) is None, "all on one row"


def test_scan_windows_hold_every_person_of_the_heights_scanned_whole_and_small() -> None:
    options = DetectorOptions(scan_below=60, scan_above=24, scan_max_windows=1000)
    fit = (0.3, -20.0)
    windows = scan_windows(fit, (WIDTH, HEIGHT), options)
    assert windows[0][1] < windows[-1][1], "farthest row first"
    assert all(x2 - x1 == y2 - y1 and 0 <= x1 and x2 <= WIDTH and 0 <= y1 and y2 <= HEIGHT for x1, y1, x2, y2 in windows)
    for feet in np.arange((24 + 20) / 0.3, (60 + 20) / 0.3, 5.0):  # people 24 to 60 pixels tall
        for left in np.arange(0.0, WIDTH - 30, 37):
            person = people_in_perspective(np.array([feet]))
            person[:, [0, 2]] += left - 400
            assert seen_closer(person, windows)[0], f"a person standing at {left:.0f}, {feet:.0f} is seen closer"
    taller = people_in_perspective(np.array([(100 + 20) / 0.3]))
    assert not seen_closer(taller, windows)[0], "people of 100 pixels are not scanned"
    capped = scan_windows(fit, (WIDTH, HEIGHT), replace(options, scan_max_windows=10))
    assert capped == windows[:10]
    for everyone_taller in ((0.3, 70.0), (0.1, 62.0)):  # people at least 62-70 pixels tall from the top row down
        assert scan_windows(everyone_taller, (WIDTH, HEIGHT), options) == [], everyone_taller


def test_scan_windows_reach_the_frame_bottom_once_when_the_people_there_are_still_small() -> None:
    options = DetectorOptions(scan_below=60, scan_above=24, scan_max_windows=1000)
    fit = (0.04, 5.0)  # a flat line: 24 pixels tall at row 475, 34 at the frame's bottom
    windows = scan_windows(fit, (WIDTH, HEIGHT), options)
    rows = sorted({(y1, y2) for _, y1, _, y2 in windows})
    assert rows[-1][1] == HEIGHT and rows[-2][1] < HEIGHT, f"one row flush with the bottom: {rows}"
    for feet in (480.0, 600.0, 700.0, 719.0):
        person = people_in_perspective(np.array([feet]), *fit)
        assert seen_closer(person, windows)[0], f"a person standing at row {feet:.0f} is seen closer"
    portrait = scan_windows((0.4, 0.0), (360, 1280), replace(options, scan_below=2000, scan_max_windows=48))
    assert len(portrait) == len(set(portrait)), "a window as wide as the frame, shorter than the row wants: once"


@pytest.fixture(scope="module")
def street(shared: Path) -> np.ndarray:
    """The empty vtest street at 1280x720 (traffic cones, a bin: no person)."""
    return crowd.empty_background(shared / "data" / "video" / "vtest.avi", (WIDTH, HEIGHT), samples=10)


def person_of(sample: Sample) -> crowd.Person:
    """The labelled person of a ccp-train photo, cut to their box."""
    image, labels = read_sample(sample, load_label_set("ccp"))
    rows, cols = np.nonzero(labels)
    return crowd.Person(image[rows.min():rows.max() + 1, cols.min():cols.max() + 1],
                        labels[rows.min():rows.max() + 1, cols.min():cols.max() + 1])


@pytest.fixture(scope="module")
def small_person_scene(shared: Path, street: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The empty street with one ccp-train person pasted 40 pixels tall in the far part."""
    ccp = shared / "data" / "ccp-train"
    person = person_of(find_samples(ccp / "images", ccp / "labels")[0])
    street = street.copy()
    scene_labels = np.zeros(street.shape[:2], np.uint8)
    box = crowd.paste(street, scene_labels, person, 40, 640, 300)
    return street, np.array([box], np.float32), scene_labels


def test_a_40_pixel_person_is_found_with_tiles_and_missed_without(small_person_scene) -> None:
    from vidparse.model_store import resolve_model

    image, truth, _ = small_person_scene
    found = {}
    for name, options in {"whole frame": DetectorOptions(tiles=0), "tiles": TILED}.items():
        detector = PersonDetector(resolve_model("fastestdet"), options, 1)
        detector.open()
        found[name] = iou_matrix(truth, detector.process(image).boxes).max(initial=0)
    assert found["whole frame"] < 0.5 and found["tiles"] >= 0.5, found


def test_the_zoomed_look_makes_a_loose_box_tight_and_drops_a_box_with_no_person(small_person_scene) -> None:
    from vidparse.model_store import resolve_model

    image, truth, _ = small_person_scene
    x1, y1, x2, y2 = truth[0]
    loose = [x1 - 10, y1 - 30, x2 + 10, y2 + 20]  # best IoU 0.2 with the person
    empty = [200, 120, 215, 160]  # on the street's empty far side
    boxes = np.array([loose, empty], np.float32)
    assert iou_matrix(truth, boxes).max() < 0.3
    detector = PersonDetector(resolve_model("fastestdet"), TILED, 1)
    detector.open()
    closer, scores = detector.look_closer(image, boxes, np.array([0.45, 0.45], np.float32))
    assert len(closer) == len(scores) == 1 and iou_matrix(truth, closer)[0, 0] >= 0.5, closer
    tall = np.array([[x1 - 10, y1 - 80, x2 + 10, y2 + 40]], np.float32)  # 160 pixels: not looked at again
    assert detector.look_closer(image, tall, np.array([0.45], np.float32))[0].tolist() == tall.tolist()
    detector.options = replace(TILED, zoom_max_windows=1)  # the loose box's window only: the other box stays
    closer, _ = detector.look_closer(image, boxes, np.array([0.45, 0.45], np.float32))
    assert len(closer) == 2 and iou_matrix(truth, closer)[0].max() >= 0.5 and empty in closer.tolist(), closer
    candidate = TILED.tile_score_threshold - 0.1  # a tile's candidate, not looked at, is dropped
    closer, _ = detector.look_closer(image, boxes, np.array([0.45, candidate], np.float32))
    assert len(closer) == 1 and iou_matrix(truth, closer)[0, 0] >= 0.5, closer


def test_the_zoomed_look_keeps_what_it_finds_at_its_own_threshold(small_person_scene) -> None:
    """Seen closer, the 40-pixel person scores far above zoom_score_threshold and the street's tripod camera a little
    above it: a stricter threshold drops the camera and keeps the person."""
    from vidparse.model_store import resolve_model

    image, truth, _ = small_person_scene
    x1, y1, x2, y2 = truth[0]
    tripod_camera = [834, 419, 854, 465]
    boxes = np.array([[x1 - 10, y1 - 30, x2 + 10, y2 + 20], tripod_camera], np.float32)
    kept = {}
    for threshold in (DetectorOptions().zoom_score_threshold, 0.75):
        detector = PersonDetector(resolve_model("fastestdet"), replace(TILED, zoom_score_threshold=threshold), 1)
        detector.open()
        kept[threshold], _ = detector.look_closer(image, boxes, np.array([0.45, 0.45], np.float32))
    default = kept[DetectorOptions().zoom_score_threshold]
    assert len(default) == 2 and iou_matrix(boxes[1:], default).max() >= 0.5, default
    assert len(kept[0.75]) == 1 and iou_matrix(truth, kept[0.75])[0, 0] >= 0.5, kept[0.75]


def test_a_tile_candidate_under_the_tile_threshold_is_found_by_the_zoomed_look(small_person_scene) -> None:
    """The whole frame misses the person and no tile box reaches tile_score_threshold: the person is found when the
    zoomed look checks the tiles' candidates, and missed when there are none."""
    from vidparse.model_store import resolve_model

    image, truth, _ = small_person_scene
    found = {}
    for candidates in (DetectorOptions().zoom_candidate_threshold, 0.99):
        options = replace(TILED, tile_score_threshold=0.99, zoom_candidate_threshold=candidates)
        detector = PersonDetector(resolve_model("fastestdet"), options, 1)
        detector.open()
        found[candidates] = iou_matrix(truth, detector.process(image).boxes).max(initial=0)
    assert found[0.99] == 0 and found[DetectorOptions().zoom_candidate_threshold] >= 0.5, found


def test_the_scan_finds_a_far_person_the_tiles_and_the_zoomed_look_miss(shared: Path, street: np.ndarray) -> None:
    """Four people near the camera say how tall people are farther up; a 32-pixel person far up, whom the tiles do
    not box, is found in the windows of the scan over that row."""
    from vidparse.model_store import resolve_model

    ccp = shared / "data" / "ccp-train"
    samples = find_samples(ccp / "images", ccp / "labels")
    scene, scene_labels = street.copy(), np.zeros(street.shape[:2], np.uint8)
    near = people_in_perspective(np.array([300.0, 400, 500, 633]))
    for index, (_, top, _, feet) in enumerate(near):
        crowd.paste(scene, scene_labels, person_of(samples[20 + index]), int(feet - top), 200 + 250 * index, int(feet))
    truth = np.array([crowd.paste(scene, scene_labels, person_of(samples[9]), 32, 300, 173)], np.float32)
    found = {}
    for scan_below in (0, 60):  # the crowd preset's
        detector = PersonDetector(resolve_model("fastestdet"), DetectorOptions(scan_below=scan_below), 1)
        detector.open()
        found[scan_below] = iou_matrix(truth, detector.process(scene).boxes).max(initial=0)
        if scan_below:
            windows = detector.windows_to_scan(near, np.full(len(near), 0.9, np.float32), (WIDTH, HEIGHT))
            assert seen_closer(truth, windows)[0], "the near people alone put a window around the far one"
    assert found[0] < 0.5 <= found[60], found


def test_the_scan_runs_where_the_options_ask_for_it(small_person_scene) -> None:
    from vidparse.model_store import resolve_model

    image = small_person_scene[0]
    looks = {}
    for scan_below, narrowest in ((0, WIDTH), (60, WIDTH), (60, WIDTH + 1)):
        options = DetectorOptions(scan_below=scan_below, tile_min_width=narrowest)
        detector = PersonDetector(resolve_model("fastestdet"), options, 1)
        detector.open()
        calls: list[tuple[int, ...]] = []
        detector._detect = lambda region, threshold, run=detector._detect, calls=calls: (
            calls.append(region.shape) or run(region, threshold))
        detector.windows_to_scan = lambda boxes, scores, frame_wh: [(600, 200, 691, 293)]  # no zoom's square
        detector.process(image)
        looks[scan_below, narrowest] = calls.count((93, 91, 3))
    assert looks == {(0, WIDTH): 0, (60, WIDTH): 1, (60, WIDTH + 1): 0}, "the scan is asked for and the frame wide enough"


@pytest.mark.parametrize("tiles", [0, 4])
def test_a_40_pixel_person_is_parsed_with_tiles(small_person_scene, tiles: int) -> None:
    image, truth, truth_labels = small_person_scene
    config = load_config(overrides={"detector.tiles": tiles})
    parser = build_person_parser(config, ResolvedModels.for_config(config), 1)
    frozen, details = parser.parser.frozen, []
    analyze = frozen.analyze
    frozen.analyze = lambda crops, *rest: details.append(rest[1]) or analyze(crops, *rest)
    parser.open()
    try:
        labels = parser.process(image)[0]
    finally:
        parser.close()
    assert image.shape[1] == 1280 and set(details) == ({1.0} if tiles else set()), "a wide frame's crops: finely"
    x1, y1, x2, y2 = truth[0].astype(int)
    person, labelled = truth_labels[y1:y2, x1:x2] != 0, labels[y1:y2, x1:x2] != 0
    if tiles:
        assert np.count_nonzero(person & labelled) > 0.6 * np.count_nonzero(person), "the person is labelled"
        assert np.count_nonzero(person & labelled) > 0.6 * np.count_nonzero(labelled), "and little around it"
    else:
        assert not labelled.any()


def test_boxes_on_the_empty_street_are_no_persons(street: np.ndarray) -> None:
    """FastestDet finds boxes on the empty street; cihp-net's network labels whatever crop it is given, so a crop
    where BodyPix's person probability stays low is left unlabelled and its box is not reported (with both BodyPix
    checks off, the crop and the pixel one, every box is)."""
    reported = {}
    for probability in (0.0, load_config().parser_options.min_person_probability, 0.9):
        pixel_check = {} if probability else {"parsers.cihp-net.min_pixel_person_probability": 0.0}
        config = load_config(overrides={"parsers.cihp-net.min_person_probability": probability, **pixel_check,
                                        "detector.zoom_below": 0})  # the zoomed look drops most of them itself
        parser = build_person_parser(config, ResolvedModels.for_config(config), 1)
        parser.open()
        try:
            boxes = len(parser.detector.process(street))
            labels, result, detections = parser.process_with_detections(street)
        finally:
            parser.close()
        assert len(detections) == len(result.persons)
        reported[probability] = (boxes, len(result.persons), int(np.count_nonzero(labels)))
    (boxes, persons, pixels), (_, default_persons, default_pixels), (_, strict_persons, strict_pixels) = reported.values()
    assert boxes >= 3 and persons == boxes, reported
    assert default_persons < persons and default_pixels < pixels, reported
    assert strict_persons == 0 and strict_pixels == 0, reported


class FixedBoxes:
    """A detector that reports the same boxes on every image: what is tested is how the crops are parsed."""

    def __init__(self, boxes: np.ndarray, scores: np.ndarray) -> None:
        self.detections = Detections(boxes=boxes, scores=scores)

    def open(self) -> None: ...

    def close(self) -> None: ...

    def process(self, image: np.ndarray) -> Detections:
        return self.detections


def test_a_box_around_people_already_found_is_dropped_a_person_behind_another_is_kept(
        shared: Path, street: np.ndarray) -> None:
    """Three ccp-train people 120 pixels tall: A, B a third behind A, C apart. A box around A and B, scoring highest,
    is parsed after their own smaller boxes, finds their pixels painted and is dropped; B, partly hidden, is kept."""
    ccp = shared / "data" / "ccp-train"
    people = []
    for sample in find_samples(ccp / "images", ccp / "labels")[:3]:
        image, labels = read_sample(sample, load_label_set("ccp"))
        rows, cols = np.nonzero(labels)
        people.append(crowd.Person(image[rows.min():rows.max() + 1, cols.min():cols.max() + 1],
                                   labels[rows.min():rows.max() + 1, cols.min():cols.max() + 1]))
    scene, scene_labels = street.copy(), np.zeros(street.shape[:2], np.uint8)
    b = crowd.paste(scene, scene_labels, people[1], 120, 560, 520)
    a = crowd.paste(scene, scene_labels, people[0], 120, b[0] - 2 * (b[2] - b[0]) // 3, 530)  # over B's left third
    c = crowd.paste(scene, scene_labels, people[2], 120, 900, 520)
    around = [min(a[0], b[0]) - 5, min(a[1], b[1]) - 5, max(a[2], b[2]) + 5, max(a[3], b[3]) + 5]
    boxes = np.array([around, a, b, c], np.float32)
    scores = np.array([0.9, 0.85, 0.8, 0.75], np.float32)
    reported = {}
    for share in (load_config().roi.min_new_share, 0.0):
        config = load_config(overrides={"roi.min_new_share": share})
        parser = build_person_parser(config, ResolvedModels.for_config(config), 1)
        parser.detector = FixedBoxes(boxes, scores)  # type: ignore[assignment]
        parser.open()
        try:
            labels, result, detections = parser.process_with_detections(scene)
        finally:
            parser.close()
        assert [p.score for p in result.persons] == detections.scores.tolist(), "persons and boxes agree"
        reported[share] = detections.boxes.tolist(), labels
    (kept, labels), (every, _) = reported.values()
    assert kept == boxes[1:].tolist() and every == boxes.tolist(), (kept, every)
    for x1, y1, x2, y2 in (a, b, c):
        person = scene_labels[y1:y2, x1:x2] != 0
        assert np.count_nonzero(labels[y1:y2, x1:x2][person]) > 0.6 * np.count_nonzero(person)


def test_the_zoomed_look_drops_most_boxes_on_the_empty_street(street: np.ndarray) -> None:
    from vidparse.model_store import resolve_model

    found = {}
    for zoom_below in (0, DetectorOptions().zoom_below):
        detector = PersonDetector(resolve_model("fastestdet"), DetectorOptions(zoom_below=zoom_below), 1)
        detector.open()
        found[zoom_below] = len(detector.process(street))
    assert found[0] >= 3 and found[DetectorOptions().zoom_below] <= found[0] // 2, found


@pytest.mark.parametrize("overrides, message", [
    ({"detector.tiles": 1}, "'detector.tiles' is 1"),
    ({"detector.tile_rows": -1}, "'detector.tile_rows' must be between 0 and 8"),
    ({"detector.tiles": 9}, "'detector.tiles' must be between 0 and 8"),
    ({"detector.tile_overlap": -0.1}, "'detector.tile_overlap' must be between"),
    ({"detector.zoom_window": 1}, "'detector.zoom_window' must be between"),
    ({"detector.zoom_below": -5}, "'detector.zoom_below' must be between"),
    ({"detector.zoom_max_windows": 0}, "'detector.zoom_max_windows' must be between"),
    ({"detector.zoom_candidate_threshold": 1.5}, "'detector.zoom_candidate_threshold' must be between"),
    ({"detector.zoom_score_threshold": -0.1}, "'detector.zoom_score_threshold' must be between"),
    ({"detector.scan_below": 40, "detector.scan_above": 40}, "'detector.scan_above' (40) is not under"),
    ({"detector.scan_window": 1}, "'detector.scan_window' must be between"),
    ({"detector.scan_max_windows": 0}, "'detector.scan_max_windows' must be between"),
])
def test_bad_tile_settings_are_refused(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(overrides=overrides)
    assert message in caught.value.message and caught.value.hint
