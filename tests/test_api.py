"""The Python API with the real models: photos and arrays in, `Parsing` out; the overlay; errors."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image

import vidparse
from vidparse.config import preset_path
from vidparse.errors import BadInputError, ConfigError, ModelError, VidparseError
from vidparse.runs import Source, warn_of_earlier_frames


@pytest.fixture(scope="module")
def photo(shared: Path) -> Path:
    return shared / "data" / "cihp" / "images" / "0002190.jpg"


@pytest.fixture(scope="module")
def rgb(photo: Path) -> np.ndarray:
    return np.asarray(Image.open(photo).convert("RGB"))


@pytest.fixture(scope="module")
def parser():
    with vidparse.Parser(model="bodypix") as parser:
        yield parser


def test_a_photo_by_path_and_as_an_rgb_array_parse_alike(photo: Path, rgb: np.ndarray) -> None:
    """cihp-lite, the default: labels at the photo's size, persons with boxes inside it and part counts that add
    up to the labels; the array is read as RGB (the same array as BGR parses differently)."""
    by_path = vidparse.parse_image(photo)
    height, width = rgb.shape[:2]
    assert by_path.labels.shape == (height, width) and by_path.labels.dtype == np.uint8
    assert by_path.names[0] == "background" and "face" in by_path.names
    assert by_path.palette.shape == (len(by_path.names), 3) and tuple(by_path.palette[13]) == (0, 0, 255)  # face
    assert by_path.persons, "the CIHP photo shows a person"
    for person in by_path.persons:
        x1, y1, x2, y2 = person.box
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height and 0 < person.score <= 1
    assert sum(sum(p.part_pixels.values()) for p in by_path.persons) == np.count_nonzero(by_path.labels)
    by_array = vidparse.parse_image(rgb)
    assert np.array_equal(by_array.labels, by_path.labels)
    swapped = vidparse.parse_image(np.ascontiguousarray(rgb[:, :, ::-1]))
    assert not np.array_equal(swapped.labels, by_path.labels)


def test_a_parser_shared_by_threads_parses_as_it_does_alone(rgb: np.ndarray) -> None:
    """cihp-net's TFLite segmenter takes one call at a time: a Parser that threads shared (a web app's) raised
    RuntimeError "There is at least 1 reference to internal data in the interpreter" from its second thread on."""
    with vidparse.Parser() as parser:
        alone = parser.parse(rgb)
        with ThreadPoolExecutor(4) as pool:
            shared = list(pool.map(parser.parse, [rgb] * 8))
    assert all(np.array_equal(parsing.labels, alone.labels) for parsing in shared)
    assert all([p.box for p in parsing.persons] == [p.box for p in alone.persons] for parsing in shared)


def test_a_parser_loads_its_models_once(parser: vidparse.Parser, photo: Path, rgb: np.ndarray,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    sessions = []

    class Counted(onnxruntime.InferenceSession):
        def __init__(self, *args, **kwargs) -> None:
            sessions.append(args[0])
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", Counted)
    first, second = parser.parse(photo), parser.parse(rgb[::2, ::2])
    assert sessions == [], "the models were loaded when the parser was opened, not per image"
    assert first.labels.shape == rgb.shape[:2] and second.labels.shape == rgb[::2, ::2].shape[:2]
    vidparse.parse_image(rgb, model="bodypix")
    assert len(sessions) == 2, "parse_image loads the detector and the parser for its one image"


def test_photos_of_any_orientation_come_out_upright(parser: vidparse.Parser, photo: Path, tmp_path: Path) -> None:
    """A photo stored sideways with EXIF orientation 6 (turn clockwise to show) is parsed as shown."""
    turned = tmp_path / "turned.jpg"
    with Image.open(photo) as image:
        exif = image.getexif()
        exif[0x0112] = 6
        image.transpose(Image.Transpose.ROTATE_90).save(turned, exif=exif)  # stored counterclockwise
    upright = parser.parse(photo)
    sideways = parser.parse(turned)
    assert sideways.labels.shape == upright.labels.shape
    assert len(sideways.persons) == len(upright.persons)


def test_annotate_blends_labelled_pixels_only(parser: vidparse.Parser, rgb: np.ndarray) -> None:
    parsing = parser.parse(rgb)
    overlay = vidparse.annotate(rgb, parsing, alpha=1.0)
    assert overlay.shape == rgb.shape and overlay.dtype == np.uint8
    background = parsing.labels == 0
    assert np.array_equal(overlay[background], rgb[background])
    assert np.array_equal(overlay[~background], parsing.palette[parsing.labels[~background]]), "RGB class colors"
    with_legend = vidparse.annotate(rgb, parsing, legend=True)
    assert not np.array_equal(with_legend[background], rgb[background]), "the legend is drawn"


@pytest.mark.parametrize(("call", "error"), [
    (lambda p: p.parse("/no/such/photo.jpg"), BadInputError),
    (lambda p: p.parse(np.zeros((10, 10, 3), np.float32)), BadInputError),
    (lambda p: p.parse(np.zeros((10, 10, 2), np.uint8)), BadInputError),
    (lambda p: vidparse.annotate(np.zeros((10, 10, 3), np.uint8), p.parse(np.zeros((20, 20, 3), np.uint8))),
     BadInputError),
    (lambda p: vidparse.annotate(np.zeros((20, 20, 3), np.uint8), p.parse(np.zeros((20, 20, 3), np.uint8)),
                                 alpha=1.5), ConfigError),
    (lambda p: vidparse.annotate(np.zeros((20, 20, 3), np.uint8), p.parse(np.zeros((20, 20, 3), np.uint8)).labels),
     BadInputError),
    (lambda p: vidparse.Parser(model="nope"), ConfigError),
    (lambda p: vidparse.Parser(config={"model": "bodypix"}), ConfigError),
    (lambda p: vidparse.parse_image(np.zeros((20, 20, 3), np.uint8), config=3), ConfigError),
    (lambda p: vidparse.Parser(roi={"margin": "wide"}), ConfigError),
    (lambda p: vidparse.Parser(model="bodypix", model_dir="/no/such/model.onnx"), ModelError),
    (lambda p: vidparse.stream(42), ConfigError),
    (lambda p: vidparse.stream(["a.mp4", 7]), ConfigError),
    (lambda p: vidparse.run("clip.avi", 5), ConfigError),
    (lambda p: vidparse.run("clip.avi", None), ConfigError),
])
def test_mistakes_raise_vidparse_errors_with_a_hint(parser: vidparse.Parser, call, error) -> None:
    with pytest.raises(error) as raised:
        call(parser)
    assert raised.value.hint


@pytest.mark.parametrize(("options", "said"), [
    ({"alpha": 1.5}, "alpha must be between 0.0 and 1.0, got 1.5 | give alpha a value in [0.0, 1.0]"),
    ({"alpha": "half"}, "alpha must be a number, got 'half' | give alpha as a number"),
    ({"legend": "yes"}, "legend must be true or false, got 'yes' | give legend as true or false"),
])
def test_annotates_mistakes_name_its_arguments(parser: vidparse.Parser, options: dict, said: str) -> None:
    """``annotate(image, parsing, alpha=1.5)`` was told "config key 'compose.alpha' must be between 0.0 and 1.0" and
    to "set compose.alpha": a key its caller never set."""
    image = np.zeros((20, 20, 3), np.uint8)
    with pytest.raises(ConfigError) as raised:
        vidparse.annotate(image, parser.parse(image), **options)
    assert f"{raised.value.message} | {raised.value.hint}" == said


CLI_FLAG = re.compile(r"(?<![\w-])(-o|--[a-z][a-z-]*)(?![\w-])")


@pytest.mark.parametrize(("call", "said"), [
    (lambda clip, photo, tmp: vidparse.run([clip, clip], tmp / "one.mp4"),
     "2 inputs need a folder for output, not {tmp}/one.mp4 | give a folder such as output='parsed/'"),
    (lambda clip, photo, tmp: vidparse.run([clip, clip], tmp / "out", stats=tmp / "s.jsonl"),
     "2 inputs need a folder for stats, not {tmp}/s.jsonl | give a folder such as stats='stats/'"),
    (lambda clip, photo, tmp: vidparse.run(clip, tmp / "o.mp4", masks=tmp / "o.mp4"),
     "output and masks name the same path {tmp}/o.mp4"),
    (lambda clip, photo, tmp: vidparse.run(clip, tmp / "o.mp4", instances=tmp / "ids", tracking={"enabled": False}),
     "instances needs tracking, which runs on videos and image sequences (patterns) only | drop tracking.enabled: "
     "false, or give a video or a pattern"),
    (lambda clip, photo, tmp: vidparse.stream(photo.parent, outputs=[tmp / "one.jpg"]),
     "| give a folder for outputs (one annotated image each)"),  # stream's argument, not run's
    (lambda clip, photo, tmp: vidparse.stream(clip, outputs=[3]), 'outputs must be a path, got 3 | e.g. outputs=['),
    (lambda clip, photo, tmp: vidparse.Parser(model="bodypix", model_dir=photo),
     "| check model_dir (or model_path in the configuration)"),
    (lambda clip, photo, tmp: vidparse.Parser(model="bodypix", tracking={"enabled": False, "draw_ids": True}),
     "track ids (tracking.draw_ids) need tracking, which is off | drop tracking.enabled: false or tracking.draw_ids"),
    (lambda clip, photo, tmp: vidparse.run(clip, tmp / "o.mp4", model="bodypix", workers=2, max_memory_mb=300),
     "or more, or use fewer workers"),  # found as the stream opens, in the engine: a stream's failure
], ids=["several-inputs-one-file", "several-inputs-one-stats-file", "output-is-masks", "instances-untracked",
        "photos-into-one-file", "stream-output-no-path", "model-dir-a-photo", "track-ids-untracked", "memory-for-the-workers"])
def test_api_errors_name_its_arguments_not_the_clis_flags(call, said: str, clip: Path, photo: Path,
                                                          tmp_path: Path) -> None:
    """Messages and hints are written for the CLI ("for -o", "--masks", "check --model-dir"): an API caller has no
    flags, and is told the argument or config key it sets."""
    with pytest.raises(VidparseError) as raised:
        call(clip, photo, tmp_path)
    text = f"{raised.value.message} | {raised.value.hint}"
    assert said.format(tmp=tmp_path) in text and not CLI_FLAG.search(text), text


def test_the_warnings_of_an_api_run_name_its_arguments_not_the_clis_flags(clip: Path, tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """`vidparse.run` logged "--masks FOLDER already holds..." and, of several inputs, "stream NAME failed: --max-memory
    300 is too small..." as the CLI says them; the CLI's own wording stays."""
    earlier = tmp_path / "masks" / clip.stem
    earlier.mkdir(parents=True)
    Image.new("P", (4, 4)).save(earlier / "000099.png")  # an earlier, longer run's frame
    with caplog.at_level(logging.WARNING, logger="vidparse"):
        outcome = vidparse.run([clip, clip], tmp_path / "out", masks=tmp_path / "masks", model="bodypix", workers=1,
                               max_memory_mb=300, check=False)  # both streams fail as they open: no frame parsed
        said = [record.getMessage() for record in caplog.records if record.name == "vidparse.runs"]
        assert len(outcome.failed) == 2 and not any(CLI_FLAG.search(line) for line in said), said
        assert f"masks {earlier} already holds 1 frame PNGs" in said[0]
        assert f"stream {clip.stem}_2 failed: max_memory_mb=300 is too small" in " ".join(said)
        caplog.clear()
        warn_of_earlier_frames(Source(str(clip), tmp_path / "o.mp4", masks=earlier), writes=None)  # as the CLI calls it
        assert caplog.records[0].getMessage().startswith(f"--masks {earlier} already holds")


def test_no_input_is_a_mistake_not_an_empty_run(tmp_path: Path) -> None:
    """``run([], ...)`` made its output folder and returned an outcome of no streams, exit code 0; ``stream([])``
    blamed the outputs ("0 sources but 1 outputs")."""
    for call in (lambda: vidparse.run([], tmp_path / "out"), lambda: vidparse.stream([])):
        with pytest.raises(ConfigError, match="no input given") as raised:
            call()
        assert raised.value.hint
    assert not (tmp_path / "out").exists()


def test_an_array_that_is_no_image_is_called_what_it_is(parser: vidparse.Parser) -> None:
    """An empty uint8 array was refused as "cannot parse ndarray uint8", as if its type were wrong."""
    with pytest.raises(BadInputError, match=r"cannot parse an empty array \(shape \(0, 10, 3\)\)"):
        parser.parse(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(BadInputError, match="cannot parse an array of float32") as raised:
        parser.parse(np.zeros((10, 10, 3), np.float32))
    assert "astype(np.uint8)" in str(raised.value.hint)


FRESH_IMPORT = """
import os, sys, vidparse
try:
    os.listdir("/no/such/photos")  # fails before any API call
except vidparse.errors.VidparseError:
    pass
except OSError:
    print("caught", "parse_image" in dir(vidparse), "vidparse.api" in sys.modules)
"""


def test_the_errors_and_the_api_are_there_right_after_import() -> None:
    """``except vidparse.errors.VidparseError`` raised AttributeError (hiding the real error) until an API call had
    imported the module; ``dir(vidparse)`` (tab completion) showed none of the API. Still imported lazily."""
    done = subprocess.run([sys.executable, "-c", FRESH_IMPORT], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.split()) == (0, ["caught", "True", "False"]), done.stderr


def test_a_folder_or_a_url_given_as_an_image_is_called_what_it_is(parser: vidparse.Parser) -> None:
    with pytest.raises(BadInputError, match="is a folder"):
        parser.parse(Path(__file__).parent)
    with pytest.raises(BadInputError, match="image http://example.com/x.jpg is a URL"):
        parser.parse("http://example.com/x.jpg")


def test_a_video_given_as_an_image_is_pointed_to_stream_not_called_damaged(parser: vidparse.Parser, clip: Path) -> None:
    """``parser.parse("clip.avi")`` hinted only "the file may be truncated or damaged", of a sound video."""
    with pytest.raises(BadInputError, match="is not a readable image") as raised:
        parser.parse(clip)
    assert "vidparse.stream" in str(raised.value.hint)


def test_configuration_from_a_config_a_preset_and_overrides(tmp_path: Path) -> None:
    """Overrides go on top of a `Config`, a preset name or a YAML file, with the YAML keys, nested or dotted."""
    base = vidparse.resolve_config(model="bodypix", roi={"margin": 0.3})
    assert (base.model, base.roi.margin) == ("bodypix", 0.3)
    again = vidparse.resolve_config(base, **{"roi.person_height": 256})
    assert (again.model, again.roi.margin, again.roi.person_height) == ("bodypix", 0.3, 256)
    assert vidparse.resolve_config("fast") == vidparse.resolve_config(preset_path("fast"))
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("compose:\n  alpha: 0.25\n")
    assert vidparse.resolve_config(yaml_file, workers=3).compose.alpha == 0.25
    assert vidparse.Parser(config=yaml_file, model="bodypix").config.compose.alpha == 0.25


def test_a_wrong_type_of_input_is_named_by_the_argument_given() -> None:
    """``stream(42)`` said "inputs must be a path or URL", but stream's argument is ``sources``."""
    with pytest.raises(ConfigError, match=r"^sources must be a path or URL, or a list of them; got 42$"):
        vidparse.stream(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^inputs must be a path or URL"):
        vidparse.run(42, "out.mp4")  # type: ignore[arg-type]


def test_check_that_is_no_bool_is_refused(tmp_path: Path) -> None:
    """``run(..., check="no")`` ran with check on ("no" is truthy) and raised the failure it was asked to return."""
    with pytest.raises(ConfigError, match=r"^check must be True or False, got 'no'$") as raised:
        vidparse.run(str(tmp_path / "missing.avi"), tmp_path / "out.mp4", check="no")  # type: ignore[arg-type]
    assert raised.value.hint


def test_a_model_dir_that_is_no_path_is_refused_as_one() -> None:
    """``Parser(model_dir=5)`` said "model path 5 does not exist", as if a folder named 5 were missing."""
    for call in (lambda: vidparse.Parser(model_dir=5), lambda: vidparse.stream("clip.avi", model_dir=5)):
        with pytest.raises(ConfigError, match=r"^model_dir must be a path, got 5$"):
            call()  # type: ignore[arg-type]


def test_the_types_the_docs_name_are_importable_from_vidparse() -> None:
    """docs/api.md takes a `Config` as config and returns a `StreamOutcome` per input; neither could be imported
    from vidparse (ImportError), as the other types could."""
    from vidparse import Config, StreamOutcome

    assert isinstance(vidparse.resolve_config(), Config)
    assert StreamOutcome.__name__ == "StreamOutcome" and {"Config", "StreamOutcome"} <= set(dir(vidparse))
