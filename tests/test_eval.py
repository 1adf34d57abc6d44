"""Parsing quality: coarse-class metrics, label-set mappings, `vidparse eval` and `vidparse eval-video`, the vote with
the parses moved by optical flow."""

from __future__ import annotations

import functools
import json
import re
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import VTEST, cut_clip, png_header_only, run_cli
from vidparse.config import load_config
from vidparse.errors import BadInputError, ConfigError
from vidparse.evaluation.datasets import Sample, check_labels, find_samples, read_labels, read_sample
from vidparse.evaluation.metrics import OTHER, UNSCORED, coarse_lut, confusion, iou_per_class, pixel_accuracy, producible
from vidparse.evaluation.runs import MODEL_CANNOT, TRUTH_LACKS
from vidparse.stages.images import upright_size
from vidparse.stages.labels import COARSE_CLASSES, GARMENT_CLASSES, IGNORE, SCHEMES, available_label_sets, load_label_set
from vidparse.stages.motion import FLOW_GRID, FLOW_MARGIN, MAX_FLOW_WIDTH, Flow, FrameMotion, LabelledRegion
from vidparse.stages.temporal import TILE, MotionVote, TemporalOptions, as_image, from_image, weighted_vote

BG, HEAD, TORSO = (COARSE_CLASSES.index(c) for c in ("background", "head", "torso"))


def flow_of(backward: np.ndarray) -> Flow:
    """A measured frame's Flow: the backward flow and its reach, as FrameMotion makes them."""
    return Flow(backward, cv2.norm(backward, cv2.NORM_INF))


def test_iou_and_pixel_accuracy_of_hand_made_maps() -> None:
    truth = np.array([[BG, BG, TORSO, TORSO], [BG, BG, TORSO, TORSO]], np.uint8)
    predicted = np.array([[BG, TORSO, TORSO, TORSO], [BG, BG, TORSO, TORSO]], np.uint8)
    matrix = confusion(truth, predicted)
    ious = iou_per_class(matrix)
    assert ious[BG] == pytest.approx(3 / 4)  # 3 hits, 4 truth, 3 predicted
    assert ious[TORSO] == pytest.approx(4 / 5)  # 4 hits, 4 truth, 5 predicted
    assert np.isnan(ious[HEAD]), "a class on neither side has no IoU"
    assert pixel_accuracy(matrix) == pytest.approx(7 / 8)


def test_unscored_truth_and_undefinable_predictions() -> None:
    truth = np.array([[UNSCORED, BG, TORSO]], np.uint8)
    predicted = np.array([[TORSO, OTHER, OTHER]], np.uint8)
    matrix = confusion(truth, predicted)
    assert matrix.sum() == 1, "ignored truth is left out, and so is a class the truth cannot express over a person"
    assert matrix[BG, OTHER] == 1, "... but over background it is an error"
    assert iou_per_class(matrix)[BG] == 0 and pixel_accuracy(matrix) == 0


def test_coarse_tables_score_only_shared_classes() -> None:
    bodypix, ccp = load_label_set("bodypix"), load_label_set("ccp")
    shared = producible(bodypix) & producible(ccp)
    assert shared == {"background", "torso", "legs", "feet"}
    truth_lut, model_lut = coarse_lut(ccp, shared), coarse_lut(bodypix, shared, rest=OTHER)
    assert truth_lut[ccp.names.index("jeans")] == COARSE_CLASSES.index("legs")
    assert truth_lut[ccp.names.index("skin")] == UNSCORED and truth_lut[ccp.names.index("hair")] == UNSCORED
    assert model_lut[bodypix.names.index("left_face")] == OTHER


@pytest.mark.parametrize("name", available_label_sets())
def test_every_class_maps_to_a_known_class_of_each_scheme(name: str) -> None:
    label_set = load_label_set(name)
    for scheme, classes in SCHEMES.items():
        groups = label_set.groups[scheme]
        assert label_set.names[0] == "background" and groups["background"] == "background"
        assert set(groups) == set(label_set.names)
        assert set(groups.values()) <= {*classes, IGNORE}
    assert len({tuple(c) for c in label_set.colors}) == len(label_set), "distinct colors"


def test_ccp_has_its_59_classes() -> None:
    ccp = load_label_set("ccp")
    assert len(ccp) == 59 and ccp.names[41] == "skin" and ccp.names[58] == "wedges"


@pytest.fixture(scope="module")
def ccp_two(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two CCP images and their labels, linked (not copied) into a temporary folder."""
    root = tmp_path_factory.mktemp("ccp2")
    for kind, suffix in (("images", "jpg"), ("labels", "png")):
        (root / kind).mkdir()
        for stem in ("0001", "0002"):
            (root / kind / f"{stem}.{suffix}").symlink_to(shared / "data" / "ccp" / kind / f"{stem}.{suffix}")
    return root / "images", root / "labels"


def test_eval_prints_the_table_and_writes_json(ccp_two: tuple[Path, Path], shared: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    weights = shared / "models" / "bodypix" / "MobileNetV1-x050-stride16.onnx"
    result = run_cli("eval", *map(str, ccp_two), "--model", "bodypix", "--model-dir", str(weights), "--label-set", "ccp",
                     "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    assert "mIoU" in result.stdout and "n/a" in result.stdout and f"bodypix ({weights})" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["images"] == 2 and report["truth"] == "ccp" and report["settings"]["roi"]["mode"] == "roi"
    assert report["settings"]["model_path"] == str(weights), "which weights were scored"
    classes = {c["name"]: c for c in report["classes"]}
    assert list(classes) == list(COARSE_CLASSES)
    assert classes["hair"]["iou"] is None and classes["hair"]["note"] == MODEL_CANNOT
    assert classes["arms"]["iou"] is None and classes["arms"]["note"] == TRUTH_LACKS
    scored = [c["iou"] for c in classes.values() if c["iou"] is not None]
    assert len(scored) == 4 and all(0 <= iou <= 1 for iou in scored)
    assert report["miou"] == pytest.approx(np.mean(scored))
    assert report["miou"] > 0.4 and report["pixel_accuracy"] > 0.8  # measured: about 0.58 and 0.92


def test_garments_scheme_maps_one_piece_garments_to_upper() -> None:
    cihp, ccp = load_label_set("cihp"), load_label_set("ccp")
    assert {cihp.groups["garments"][n] for n in ("dress", "coat", "upper_clothes")} == {"upper"}
    assert {ccp.groups["garments"][n] for n in ("dress", "romper", "jumper", "t-shirt")} == {"upper"}
    assert {ccp.groups["garments"][n] for n in ("jeans", "skirt", "shorts", "tights")} == {"lower"}
    assert {cihp.groups["garments"][n] for n in ("face", "left_arm", "torso_skin", "right_leg")} == {"skin"}
    assert producible(load_label_set("bodypix"), "garments") == {"background", "footwear"}


@pytest.mark.parametrize("model, unscored", [("cihp-lite", set()), ("bodypix", {"skin", "hair", "upper", "lower"})])
def test_eval_garments_scheme(model: str, unscored: set[str], ccp_two: tuple[Path, Path], tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = run_cli("eval", *map(str, ccp_two), "--model", model, "--label-set", "ccp", "--scheme", "garments",
                     "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    assert "(garments classes)" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["scheme"] == "garments"
    classes = {c["name"]: c for c in report["classes"]}
    assert list(classes) == list(GARMENT_CLASSES)
    assert {name for name, c in classes.items() if c["iou"] is None} == unscored
    assert all(classes[name]["note"] == MODEL_CANNOT for name in unscored), "n/a, not 0"
    scored = [c["iou"] for c in classes.values() if c["iou"] is not None]
    assert all(0 < iou <= 1 for iou in scored) and report["miou"] == pytest.approx(np.mean(scored))
    if model == "cihp-lite":  # measured on these two photos: hair 0.61, upper 0.40, skin 0.59
        assert min(classes[name]["iou"] for name in ("hair", "upper", "skin")) > 0.3


@pytest.fixture(scope="module")
def default_eval(ccp_two: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    report_path = tmp_path_factory.mktemp("eval") / "report.json"
    result = run_cli("eval", *map(str, ccp_two), "--label-set", "ccp", "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    return json.loads(report_path.read_text())


@pytest.mark.parametrize(
    "flag, value, setting",
    [
        ("--roi-mode", "whole", ("roi", "mode")),
        ("--margin", "0.3", ("roi", "margin")),
        ("--person-height", "256", ("roi", "person_height")),
        ("--score-threshold", "0.95", ("detector", "score_threshold")),
    ],
)
def test_eval_quality_flags_change_the_scores(flag: str, value: str, setting: tuple[str, str], default_eval: dict,
                                              ccp_two: tuple[Path, Path], tmp_path: Path) -> None:
    """Each flag reaches the run: it is in the settings and the labels (so the scores) are not the default's."""
    report_path = tmp_path / "report.json"
    result = run_cli("eval", *map(str, ccp_two), "--label-set", "ccp", flag, value, "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    report = json.loads(report_path.read_text())
    section, key = setting
    assert str(report["settings"][section][key]) == value and str(default_eval["settings"][section][key]) != value
    assert report["pixel_accuracy"] != pytest.approx(default_eval["pixel_accuracy"], abs=1e-4)
    if flag == "--roi-mode":
        assert "whole frame" in result.stdout


def _link_dirs(tmp_path: Path, shared: Path, stems: tuple[str, ...], labelled: tuple[str, ...]) -> tuple[Path, Path]:
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for stem in stems:
        (images / f"{stem}.jpg").symlink_to(shared / "data" / "ccp" / "images" / f"{stem}.jpg")
    for stem in labelled:
        (labels / f"{stem}.png").symlink_to(shared / "data" / "ccp" / "labels" / f"{stem}.png")
    return images, labels


@pytest.mark.parametrize(
    "case, code, message",
    [
        ("missing folder", 3, "images folder"),
        ("unknown label set", 2, "unknown label set 'lip'"),
        ("image without label", 3, "1 of 2 images have no label map, first 0002.jpg"),
        ("margin out of range", 2, "--margin must be between 0.0 and 2.0, got 5.0"),
        ("unknown scheme", 2, "unknown scheme 'clothes'"),
    ],
)
def test_eval_mistakes_get_one_line(case: str, code: int, message: str, shared: Path, tmp_path: Path) -> None:
    images, labels = _link_dirs(tmp_path, shared, ("0001", "0002"), ("0001",))
    args = {
        "missing folder": [str(tmp_path / "nope"), str(labels), "--label-set", "ccp"],
        "unknown label set": [str(images), str(labels), "--label-set", "lip"],
        "image without label": [str(images), str(labels), "--label-set", "ccp"],
        "margin out of range": [str(images), str(labels), "--label-set", "ccp", "--margin", "5"],
        "unknown scheme": [str(images), str(labels), "--label-set", "ccp", "--scheme", "clothes"],
    }[case]
    result = run_cli("eval", *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert [line.startswith("error:") for line in result.stderr.splitlines()].count(True) == 1


@pytest.mark.parametrize("target", ["image", "label", "video", "truth"])
def test_json_report_never_overwrites_an_input(target: str, clip: Path, tmp_path: Path) -> None:
    """--json naming a photo, a label map, the video or the --truth file fails before any work, the file kept."""
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    cv2.imwrite(str(tmp_path / "images" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "labels" / "a.png")
    video, truth = tmp_path / "clip.avi", tmp_path / "gt.txt"
    video.write_bytes(clip.read_bytes())
    truth.write_text("1,1,10,10,40,100,1\n")
    paths = {"image": tmp_path / "images" / "a.png", "label": tmp_path / "labels" / "a.png", "video": video,
             "truth": truth}
    kept = paths[target].read_bytes()
    command = (["eval-video", str(video), "--truth", str(truth)] if target in ("video", "truth") else
               ["eval", str(tmp_path / "images"), str(tmp_path / "labels"), "--label-set", "ccp"])
    result = run_cli(*command, "--json", str(paths[target]))
    assert result.returncode == 4, result.stderr
    assert f"would overwrite the input {paths[target]}" in result.stderr and "Traceback" not in result.stderr
    assert paths[target].read_bytes() == kept


def test_eval_takes_every_label_set_its_help_and_errors_list(shared: Path, tmp_path: Path) -> None:
    """The help, the error for an unknown set and what eval accepts agree: BodyPix masks are ground truth too."""
    said = " ".join(run_cli("eval", "--help").stdout.replace("│", " ").split())
    listed = re.search(r"Label set of the ground truth: ([a-z, ]+?) \(", said)
    assert listed is not None, said
    assert sorted(re.split(r", | or ", listed.group(1))) == available_label_sets()
    unknown = run_cli("eval", str(tmp_path), str(tmp_path), "--label-set", "lip")
    assert f"choose one of: {', '.join(available_label_sets())}" in unknown.stderr
    for folder in ("images", "labels"):
        (tmp_path / folder).mkdir()
    (tmp_path / "images" / "0002190.jpg").symlink_to(shared / "data" / "cihp" / "images" / "0002190.jpg")
    width, height = upright_size(tmp_path / "images" / "0002190.jpg")
    torso = np.zeros((height, width), np.uint8)
    torso[height // 3:height // 2, width // 3:2 * width // 3] = load_label_set("bodypix").names.index("torso_front")
    Image.fromarray(torso).save(tmp_path / "labels" / "0002190.png")
    result = run_cli("eval", str(tmp_path / "images"), str(tmp_path / "labels"), "--label-set", "bodypix", "--model",
                     "bodypix")
    assert result.returncode == 0 and "bodypix vs bodypix ground truth" in result.stdout, result.stderr


def test_eval_warns_of_label_maps_of_another_label_set_or_without_an_image(shared: Path, tmp_path: Path) -> None:
    for folder, name in (("images", "0002190.jpg"), ("labels", "0002190.png")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / name).symlink_to(shared / "data" / "cihp" / folder / name)
    (tmp_path / "labels" / "0005008.png").symlink_to(shared / "data" / "cihp" / "labels" / "0005008.png")
    result = run_cli("eval", str(tmp_path / "images"), str(tmp_path / "labels"), "--label-set", "ccp", "--model",
                     "bodypix")
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stderr.split())
    assert "as CIHP's would: check --label-set" in said and "1 label map without an image (0005008.png)" in said


def test_eval_finds_a_bad_label_map_before_it_needs_a_model(shared: Path, tmp_path: Path) -> None:
    """Every label map is checked first: with no model to be found, a wrong-sized label still is what is said."""
    images, labels = _link_dirs(tmp_path, shared, ("0001", "0002"), ("0001",))
    Image.new("L", (20, 30)).save(labels / "0002.png")
    (tmp_path / "no-models").mkdir()
    result = run_cli("eval", str(images), str(labels), "--label-set", "ccp",
                     env={"VIDPARSE_MODEL_DIR": str(tmp_path / "no-models"), "VIDPARSE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 3, result.stderr
    assert f"error: label map {labels / '0002.png'} is 20x30 but its image is" in result.stderr


def test_photos_pair_with_their_labels_by_stem_in_one_folder_or_two(tmp_path: Path, caplog) -> None:
    def files(folder: Path, *names: str) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            (folder / name).write_bytes(b"")
        return folder

    beside = files(tmp_path / "beside", "a.jpg", "a.png", "b.JPG", "b.PNG")
    assert [(s.image_path.name, s.label_path.name) for s in find_samples(beside, beside)] == [
        ("a.jpg", "a.png"), ("b.JPG", "b.PNG")], "a label map beside its photo is not a photo"
    images, labels = files(tmp_path / "images", "c.JPEG", "d.png"), files(tmp_path / "labels", "c.PNG", "d.png")
    assert [s.label_path.name for s in find_samples(images, labels)] == ["c.PNG", "d.png"]
    with pytest.raises(BadInputError, match="would be its own label map"):
        find_samples(files(tmp_path / "own", "e.png"), tmp_path / "own")
    with pytest.raises(BadInputError, match="two images in .* are named f: f.jpg and f.png"):
        find_samples(files(tmp_path / "twins", "f.jpg", "f.png"), labels)
    files(images / "more", "g.jpg")
    with caplog.at_level("WARNING"):
        assert len(find_samples(images, labels)) == 2
    assert "1 subfolder not searched (more)" in caplog.text


def test_cihp_label_maps_among_ccp_ones_are_warned_of(shared: Path, tmp_path: Path, caplog) -> None:
    """Only a folder whose every map looked like CIHP's was warned of: mixed in with CCP maps, CIHP's maps were read
    as CCP classes without a word (its hair as CCP's bag, its face as coat), by eval and by train."""
    images, labels = _link_dirs(tmp_path, shared, ("0001", "0002", "0003"), ("0001",))
    for stem in ("0002", "0003"):
        with Image.open(shared / "data" / "ccp" / "labels" / f"{stem}.png") as ccp:
            Image.fromarray((np.array(ccp) > 0).astype(np.uint8) * 13).save(labels / f"{stem}.png")  # CIHP's face
    with caplog.at_level("WARNING"):
        check_labels(find_samples(images, labels), load_label_set("ccp"))
    said = " ".join(caplog.text.split())
    assert "2 of the 3 label maps in" in said and "use no class above 19, as CIHP's would (0002.png, 0003.png)" in said
    assert said.count("check --label-set") == 1


def test_unlabelled_pixels_255_are_read_and_left_out_of_the_scores(shared: Path, tmp_path: Path) -> None:
    """255 marks unlabelled pixels (LIP's and VOC's boundaries): such a map was refused as holding class 255 with
    "check --label-set"; it is read, its highest class is the highest real one, and its 255s are scored nowhere."""
    from vidparse.evaluation.runs import Tally

    images, labels = _link_dirs(tmp_path, shared, ("0001",), ())
    with Image.open(shared / "data" / "ccp" / "labels" / "0001.png") as ccp:
        truth = np.array(ccp)
    marked = truth.copy()
    marked[:100] = 255
    Image.fromarray(marked).save(labels / "0001.png")
    ccp_set = load_label_set("ccp")
    assert check_labels(find_samples(images, labels), ccp_set) == truth.max()
    whole, unmarked = Tally(ccp_set, ccp_set, "garments"), Tally(ccp_set, ccp_set, "garments")
    whole.add(read_sample(find_samples(images, labels)[0], ccp_set)[1], truth)
    unmarked.add(truth[100:], truth[100:])
    assert np.array_equal(whole.matrix, unmarked.matrix)


def test_a_label_map_past_pils_size_limit_is_one_error(tmp_path: Path) -> None:
    """A label map PIL refuses to open (over 179 megapixels) is a mismatch with its photo, not a crash."""
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_header_only(20000, 10000))
    with pytest.raises(BadInputError, match="huge.png is more than 179 megapixels but its image is 550x832"):
        read_labels(Sample("a", tmp_path / "a.jpg", huge), load_label_set("ccp"), (550, 832))


def test_labels_must_fit_their_image_and_label_set(shared: Path, tmp_path: Path) -> None:
    images, labels = _link_dirs(tmp_path, shared, ("0001",), ("0001",))
    sample = find_samples(images, labels)[0]
    with pytest.raises(BadInputError, match="holds class 5[0-9], but label set 'cihp' has 20 classes"):
        read_sample(sample, load_label_set("cihp"))
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small)
    with pytest.raises(BadInputError, match="is 10x10 but its image is 550x832"):
        read_sample(Sample("0001", sample.image_path, small), load_label_set("ccp"))
    transposed = tmp_path / "transposed.png"
    Image.fromarray(np.zeros((550, 832), np.uint8)).save(transposed)
    with pytest.raises(BadInputError, match=r"is 832x550 but its image is 550x832 \(width and height swapped: the "
                                            r"label map is transposed\)"):
        read_sample(Sample("0001", sample.image_path, transposed), load_label_set("ccp"))
    turned = tmp_path / "turned.jpg"  # stored as its labels are, shown a quarter turn from them
    exif = Image.Exif()
    exif[0x0112] = 6
    with Image.open(sample.image_path) as photo:
        photo.save(turned, exif=exif)
    with pytest.raises(BadInputError, match=r"is 550x832 but its image is 832x550 \(the photo is shown turned, as "
                                            r"its EXIF orientation says\)"):
        read_sample(Sample("0001", turned, sample.label_path), load_label_set("ccp"))
    rgb = tmp_path / "rgb.png"
    cv2.imwrite(str(rgb), np.zeros((832, 550, 3), np.uint8))
    with pytest.raises(BadInputError, match="not one channel"):
        read_sample(Sample("0001", sample.image_path, rgb), load_label_set("ccp"))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(sample.image_path.read_bytes()[:3000])  # OpenCV would give its top rows and grey below
    with pytest.raises(BadInputError, match="cut.jpg is not a readable image .image file is truncated"):
        read_sample(Sample("0001", cut, sample.label_path), load_label_set("ccp"))


def test_eval_video_reports_flicker_and_agreement_per_frame_and_as_written(clip: Path, tmp_path: Path) -> None:
    report_path, truth = tmp_path / "flicker.json", tmp_path / "gt.txt"
    truth.write_text("".join(f"{frame},1,10,10,40,100,1\n" for frame in range(1, 7)))  # MOT: nobody stands there
    result = run_cli("eval-video", str(clip), "--max-frames", "6", "--temporal-window", "3", "--person-height", "256",
                     "--truth", str(truth), "--json", str(report_path))  # small crops keep the test fast
    assert result.returncode == 0, result.stderr
    assert "flicker" in result.stdout and "Keyframe mode" in result.stdout
    report = json.loads(report_path.read_text())
    assert report["frames"] == 6 and report["settings"]["roi"]["person_height"] == 256
    assert [row["mode"] for row in report["rows"]] == ["per-frame", "vote over 3 parses moved by flow + tracked"]
    for row in report["rows"]:
        assert row["considered"] > 0 and 0 <= row["coarse_rate"] <= row["rate"] <= 1
        assert row["person_frames"] >= 6 and 0 < row["part_agreement"] < row["person_agreement"] <= 1
        assert 0 < row["warped_part"] < row["warped_person"] <= 1
    per_frame, written = report["rows"]
    assert per_frame["id_switches"] is None and written["id_switches"] == 0
    assert per_frame["parse_person"] == per_frame["parse_part"] == 1.0  # the reference row is the parse itself
    assert 0.5 < written["parse_person"] < 1.0  # the vote changed some labels, and kept most

    late = tmp_path / "late.txt"
    late.write_text("".join(f"{frame},1,10,10,40,100,1\n" for frame in range(100, 103)))  # past the 6 frames
    result = run_cli("eval-video", str(clip), "--max-frames", "6", "--temporal-window", "3", "--person-height", "256",
                     "--truth", str(late), "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    assert "no box of" in result.stderr and "falls on frames 1-6" in " ".join(result.stderr.split())
    assert [row["id_switches"] for row in json.loads(report_path.read_text())["rows"]] == [None, None], "not 0"


def test_eval_video_keeps_the_password_of_a_url_out_of_its_report(clip: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "flicker.json"
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(clip.parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            result = run_cli("eval-video", f"http://user:s3cret@127.0.0.1:{server.server_address[1]}/{clip.name}",
                             "--max-frames", "2", "--config", str(Path(__file__).with_name("fast.yaml")),
                             "--json", str(report_path))
        finally:
            server.shutdown()
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr + report_path.read_text()
    assert json.loads(report_path.read_text())["video"] == f"http://127.0.0.1:{server.server_address[1]}/{clip.name}"


def test_eval_video_shows_names_in_brackets_as_they_are(clip: Path, tmp_path: Path) -> None:
    """A name like 'clip [final].avi' is text, not Rich markup: shown whole in the title and the 'wrote' line."""
    video, report_path = tmp_path / "clip [final].avi", tmp_path / "report [v2].json"
    video.write_bytes(clip.read_bytes())
    result = run_cli("eval-video", str(video), "--max-frames", "2", "--config", str(Path(__file__).with_name("fast.yaml")),
                     "--json", str(report_path))
    assert result.returncode == 0, result.stderr
    assert f"on {video}, frames 0-1" in result.stdout and f"wrote {report_path}" in result.stderr


@pytest.mark.parametrize("suffix", [".avi", ".mkv"], ids=["count-in-the-header", "counted-once-parsed"])
def test_eval_video_on_a_one_frame_video_is_refused(suffix: str, tmp_path: Path) -> None:
    """Nothing to compare the frame with: it printed n/a throughout and exited 0. An AVI says its frame count
    (refused before the models load), a Matroska file does not (refused once its one frame is parsed)."""
    video = cut_clip(VTEST, tmp_path / f"one{suffix}", 1)
    result = run_cli("eval-video", str(video), "--config", str(Path(__file__).with_name("fast.yaml")))
    assert result.returncode == BadInputError.exit_code, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith(("error:", "hint:"))] == [
        f"error: {video} is too short to measure: 1 frame, where flicker and agreement compare each frame with the "
        "one before (2 frames at least)", "hint: measure on a longer video"], result.stderr
    assert not result.stdout and "Traceback" not in result.stderr


def test_temporal_window_is_validated() -> None:
    with pytest.raises(ConfigError, match="'temporal.window' must be between 1 and 15"):
        load_config(overrides={"temporal.window": 0})


def _vote(window: int, sequence: list[list[int]], shift: int = 0, hold: float = 0.0) -> list[list[int]]:
    """Each row of ``sequence`` as a 2-row label map voted in turn (a person over half the weight; parts over as many
    parses, all weighing the same, held by ``hold``); every frame moved ``shift`` pixels right."""
    vote = MotionVote(TemporalOptions(window=window, person_share=0.5, part_window=window, part_decay=1.0,
                                      part_hold=hold), classes=5)
    flow = np.zeros((2, len(sequence[0]), 2), np.float32)
    flow[..., 0] = -shift  # backward: each pixel came from ``shift`` pixels to its left
    return [vote.process(np.array([row] * 2, np.uint8), flow_of(flow) if i else None)[0].tolist()
            for i, row in enumerate(sequence)]


def test_vote_holds_parts_that_take_turns_steady() -> None:
    flicker = [[0, 1, 2, 3], [0, 2, 2, 3]] * 4
    assert _vote(1, flicker, hold=0.3) == flicker, "window 1 is off"
    assert _vote(5, flicker) != [[0, 1, 2, 3]] * 8, "without the hold the current parse wins every other frame"
    assert _vote(5, flicker, hold=0.3) == [[0, 1, 2, 3]] * 8


def test_vote_follows_a_lasting_change_after_one_frame() -> None:
    lasting = [[1, 1, 3, 0]] * 3 + [[2, 1, 0, 3]] * 3
    # the new labels need the current parse and one more: one frame late, then they hold
    assert _vote(3, lasting) == [[1, 1, 3, 0]] * 4 + [[2, 1, 0, 3]] * 2


def test_vote_moves_the_past_with_the_flow() -> None:
    walking = [[0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0, 0],
               [0, 0, 0, 0, 0, 0, 0, 0]]  # a person walking right one pixel a frame, missed in the last frame
    assert _vote(3, walking, shift=1)[-1] == [0, 0, 0, 0, 1, 1, 0, 0]  # carried on to where it walked
    held = _vote(3, walking, shift=0)  # the same parses with the motion ignored: the person smears and is lost
    assert held[-1] != [0, 0, 0, 0, 1, 1, 0, 0]


def test_weighted_vote_person_share_and_ties() -> None:
    current, older = np.array([[2, 0, 3]], np.uint8), np.array([[4, 4, 0]], np.uint8)
    even = np.array([1.0, 1.0])
    # a tie on person or background keeps the current parse's; a tie between parts too
    assert weighted_vote(current, [older], even, even, 0.5, 5).tolist() == [[2, 0, 3]]
    # a lower share lets one parse of two make a person; its part then is the only one voted for
    assert weighted_vote(current, [older], even, even, 0.4, 5).tolist() == [[2, 4, 3]]


def _vote_of_one_pixel(votes: list[int], held: int | None, person_weights: np.ndarray, part_weights: np.ndarray,
                       person_share: float, hold: float, classes: int) -> int:
    """`weighted_vote`'s rule for one pixel, written out plainly (votes: current first)."""
    person = sum(w for label, w in zip(votes, person_weights) if label)
    threshold = person_share * person_weights.sum()
    if not (person > threshold + 1e-6 or (abs(person - threshold) <= 1e-6 and votes[0])):
        return 0
    weight = dict.fromkeys(range(1, classes), 0.0)  # every part, voted for or not; background is none
    for label, w in zip(votes, part_weights):
        if label:
            weight[label] += w
    if votes[0]:
        weight[votes[0]] += 1e-3
    best = max(weight, key=lambda label: weight[label])  # the first, so the lower id, on a tie
    if held and weight[held] >= weight[best] - hold * part_weights.sum():
        return held
    return best


def test_weighted_vote_follows_its_rule_on_every_pixel() -> None:
    rng = np.random.default_rng(5)
    for maps, hold in ((2, 0.0), (5, 0.3), (7, 0.3)):
        current, *past = (rng.choice([0, 0, 1, 2, 3, 7, 30], (9, 11)).astype(np.uint8) for _ in range(maps))
        held = rng.choice([0, 1, 2, 3], current.shape).astype(np.uint8) if hold else None
        for other in (*past, *([] if held is None else [held])):
            other[:3] = current[:3]  # settled pixels: every map agrees
        person_weights = 0.8 ** np.arange(maps)
        part_weights = np.where(np.arange(maps) < maps - 1, 1.0, 0.0)
        voted = weighted_vote(current, past, person_weights, part_weights, 0.4, 20, held, hold)  # 30: past classes
        for y, x in np.ndindex(current.shape):
            expected = _vote_of_one_pixel([int(m[y, x]) for m in (current, *past)],
                                          None if held is None else int(held[y, x]), person_weights, part_weights,
                                          0.4, hold, classes=31)
            assert voted[y, x] == expected, (maps, y, x)
        one_more = np.append(person_weights, 1.0)  # a weight for a map not given
        with pytest.raises(ValueError, match="person weights"):
            weighted_vote(current, past, one_more, part_weights, 0.4, 20, held, hold)
        with pytest.raises(ValueError):
            weighted_vote(current, past, person_weights, one_more, 0.4, 20, held, hold)


def test_the_default_person_vote_wants_this_parse_and_one_more_or_the_older_ones() -> None:
    """temporal's defaults (5 parses, each weighing 0.8 of the one newer, a person over 0.4 of all the weight): this
    parse and any one of the four before it, or the two before it, or three older ones; never one parse alone."""
    options = TemporalOptions()
    weights = options.decay ** np.arange(options.window)

    def person(*ages: int) -> bool:  # the parses (by age: 0 is this frame's) that call the pixel a person
        current, *past = (np.array([[1 if age in ages else 0]], np.uint8) for age in range(options.window))
        return bool(weighted_vote(current, past, weights, weights, options.person_share, 5)[0, 0])

    assert all(person(0, age) for age in range(1, 5)) and person(1, 2) and person(2, 3, 4)
    assert not any(person(age) for age in range(5)) and not person(1, 3) and not person(3, 4)


def _shifted(labels: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``labels`` moved ``dx`` right and ``dy`` down, zero where nothing came from."""
    moved = np.zeros_like(labels)
    height, width = labels.shape
    moved[max(0, dy):height + min(0, dy), max(0, dx):width + min(0, dx)] = \
        labels[max(0, -dy):height - max(0, dy), max(0, -dx):width - max(0, dx)]
    return moved


def test_the_vote_on_tiles_equals_the_vote_on_the_whole_frame() -> None:
    """The vote runs only on tiles near labels: the same labels as voting every pixel of the frame."""
    rng = np.random.default_rng(3)
    options = TemporalOptions()  # the defaults: person over 5 parses, parts over 7 with the hold
    vote = MotionVote(options, classes=20)
    depth = max(options.window, options.part_window)
    ages = np.arange(depth)
    person_weights = np.where(ages < options.window, options.decay ** ages, 0.0)
    part_weights = np.where(ages < options.part_window, options.part_decay ** ages, 0.0)
    dx, dy = 3, -2  # every frame, the image moves 3 px right and 2 px up
    flow = np.zeros((100, 130, 2), np.float32)
    flow[..., 0], flow[..., 1] = -dx, -dy
    carried: list[np.ndarray] = []
    previous = None
    for seq in range(12):
        labels = np.zeros((100, 130), np.uint8)  # 100 x 130: not whole tiles
        for _ in range(3):  # noisy blobs: persons whose parts change from frame to frame
            y, x = rng.integers(0, 80), rng.integers(0, 110)
            labels[y:y + 20, x:x + 15] = rng.integers(1, 20, (20, 15))
        got = vote.process(labels, flow_of(flow) if seq else None)
        carried = [_shifted(p, dx, dy) for p in carried]
        held = None if previous is None else _shifted(previous, dx, dy)
        count = len(carried) + 1
        expected = weighted_vote(labels, carried, person_weights[:count], part_weights[:count],
                                 options.person_share, 20, held, options.part_hold)
        assert (got == expected).all(), seq
        carried = [labels, *carried][:depth - 1]
        previous = expected


def test_tiles_fit_opencvs_remap_on_large_frames() -> None:
    """A 4K frame has 32,400 tiles: stacked in one column they would be 518,400 rows, over OpenCV's 32,767."""
    tiles = np.arange(32400 * TILE * TILE, dtype=np.uint32).reshape(-1, TILE, TILE) % 251
    for count in (100, 32400):  # one column of tiles, and as few columns as fit
        image = as_image(tiles[:count].astype(np.uint8))
        assert max(image.shape) < 32767 and image.shape[1] == (TILE if count == 100 else 16 * TILE)
        assert np.array_equal(from_image(image, count), tiles[:count])
    vote = MotionVote(TemporalOptions(), classes=20)
    labels = np.zeros((2160, 3840), np.uint8)
    labels[100:400, 200:300], labels[1800:2100, 3500:3600] = 5, 7
    # the flow measured at half the frame's size (as MAX_FLOW_WIDTH has it for 4K): 1 px there is 2 px here
    still, flow = np.zeros((1080, 1920, 2), np.float32), np.zeros((1080, 1920, 2), np.float32)
    flow[..., 0] = -1
    for seq in range(3):
        vote.process(labels, flow_of(still) if seq else None)
    moved = vote.process(np.zeros_like(labels), flow_of(flow))  # the persons missed: carried on, moved 2 px right
    assert moved[100:400, 202:300].all() and not moved[100:400, 200:202].any()


def test_the_flow_of_a_wide_frame_is_measured_at_most_max_flow_width() -> None:
    motion = FrameMotion("ultrafast", 1.0)
    frame = np.random.default_rng(0).integers(0, 255, (1440, 2560, 3), np.uint8)
    assert motion.next(frame) is None
    flow = motion.next(np.roll(frame, 4, axis=1))
    assert flow is not None and flow.backward.shape == (720, MAX_FLOW_WIDTH, 2)
    assert flow.reach == pytest.approx(np.abs(flow.backward).max())


def test_the_flow_is_measured_around_the_recent_labels_only() -> None:
    region = LabelledRegion(depth=2)
    labels = np.zeros((480, 640), np.uint8)
    assert region.next(labels) == (0, 0, 0, 0)  # nobody yet: nothing to measure
    labels[200:300, 300:340] = 5
    x1, y1, x2, y2 = region.next(labels)
    assert (x1, y1, x2, y2) == (224, 128, 416, 352)  # 48 px around the person, out to the 32 px grid
    assert x1 <= 300 - 640 * FLOW_MARGIN and x2 >= 340 + 640 * FLOW_MARGIN and not (x1 % FLOW_GRID or x2 % FLOW_GRID)
    moved = np.zeros_like(labels)
    moved[200:300, 500:540] = 5
    assert region.next(moved) == (224, 128, 608, 352)  # where it is and where it was
    assert region.next(moved) == (448, 128, 608, 352)  # two maps later, only where it is
    assert region.next(np.zeros_like(labels))[0] == 448 and region.next(np.zeros_like(labels)) == (0, 0, 0, 0)

    texture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (480, 640, 3), np.uint8), (7, 7), 0)
    motion = FrameMotion("ultrafast", 1.0)
    assert motion.next(texture, (224, 128, 416, 352)) is None
    measured = motion.next(np.roll(texture, 3, axis=1), (224, 128, 416, 352))
    assert measured is not None
    flow = measured.backward
    assert flow.shape == (480, 640, 2)
    assert np.median(flow[160:320, 260:380, 0]) == pytest.approx(-3, abs=0.5)  # backward: 3 px to the left
    assert not flow[:128].any() and not flow[:, 416:].any()
    assert measured.reach == pytest.approx(np.abs(flow).max()) and measured.reach >= 2.5
    nothing = motion.next(texture, (0, 0, 0, 0))
    assert nothing is not None and not nothing.backward.any() and nothing.reach == 0


def test_label_maps_named_otherwise_are_named_in_the_hint(shared: Path, tmp_path: Path) -> None:
    """Label PNGs named 0001_label.png: the error said only "put 0001.png in LABELS_DIR", as if the folder held none."""
    images, labels = _link_dirs(tmp_path, shared, ("0001",), ())
    (labels / "0001_label.png").symlink_to(shared / "data" / "ccp" / "labels" / "0001.png")
    result = run_cli("eval", str(images), str(labels), "--label-set", "ccp", "--model", "bodypix")
    assert result.returncode == 3, result.stderr
    said = " ".join(result.stderr.split())
    assert "1 of 1 images have no label map, first 0001.jpg" in said
    assert f"hint: put 0001.png (class indices, one channel) in {labels}; it holds 1 PNG named as no image " \
           "(0001_label.png): a label map takes its image's name" in said, said
