"""Real-world media (docs/faults.md, "Real-world media"): every corpus file gives exit 0 and every decodable
frame exactly once, in order, upright, with strictly increasing timestamps; photos, folders and patterns too.

The corpus is made by ffmpeg from vtest once per session (tests/media.py). Runs use ``--alpha 0``, so the
output is the input up to encoder noise and can be matched frame by frame against ffmpeg's own decode."""

from __future__ import annotations

import io
import json
import re

import shutil
import struct
import subprocess
from fractions import Fraction
import warnings
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image, ImageCms

from conftest import BEEP, VTEST, beep_heard_at, decode_frames, probe_video, run_cli
from media import ROTATED, VIDEOS, build_corpus, exif_rotated_jpeg, ffmpeg, reference_frames
from vidparse.jobs import LabelsParser
from vidparse.pipeline.messages import FrameKey
from vidparse.stages.images import (
    ImageSet,
    ImageSource,
    check_image_output,
    is_sequence,
    load_upright,
    upright_size,
)
from vidparse.stages.output import write_image

FAST = str(Path(__file__).parent / "fast.yaml")
NOISE = 8.0  # mean absolute difference (0..255) of one frame encoded twice; a wrong frame or turn is far above


@pytest.fixture(scope="session")
def corpus(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_corpus(VTEST, tmp_path_factory.mktemp("corpus"))


def parse(source: Path | str, output: Path, *extra: str) -> subprocess.CompletedProcess:
    result = run_cli("run", str(source), "-o", str(output), "--config", FAST, "--alpha", "0", *extra)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result


def difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def assert_same_frames_in_order(written: list[np.ndarray], reference: list[np.ndarray]) -> None:
    """Frame i of the output is reference frame i (at the even size the encoder keeps), and no other."""
    assert len(written) == len(reference), "every decodable frame exactly once"
    for i, frame in enumerate(written):
        height, width = frame.shape[:2]
        assert (height, width) == (reference[i].shape[0] // 2 * 2, reference[i].shape[1] // 2 * 2), "upright"
        distances = [difference(frame, ref[:height, :width]) for ref in reference]
        assert int(np.argmin(distances)) == i, f"frame {i} is in its place"
        assert distances[i] < NOISE, f"frame {i} shows what ffmpeg shows ({distances[i]:.1f})"


@pytest.mark.slow
@pytest.mark.parametrize("name", [*VIDEOS, *ROTATED])
def test_every_corpus_video_is_written_whole_upright_and_in_order(name: str, corpus: dict[str, Path],
                                                                 tmp_path: Path) -> None:
    output = tmp_path / "o.mp4"
    result = parse(corpus[name], output)
    facts = probe_video(output)
    assert all(b > a for a, b in zip(facts.pts_s, facts.pts_s[1:])), facts.pts_s
    said = result.stderr.count("turning frames upright")
    assert said == (name in ROTATED), f"said {said} times (the main process's probe said it too)"
    assert_same_frames_in_order(decode_frames(output), reference_frames(corpus[name], tmp_path / "reference"))


def source_seconds(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        return [float(f.pts * f.time_base) for f in container.decode(video=0)]


def test_variable_frame_rate_and_audio_survive(corpus: dict[str, Path], tmp_path: Path) -> None:
    parse(corpus["vfr_audio.mkv"], tmp_path / "o.mkv")
    facts = probe_video(tmp_path / "o.mkv")
    expected = source_seconds(corpus["vfr_audio.mkv"])
    assert np.allclose(facts.pts_s, expected, atol=0.002), (facts.pts_s, expected)
    assert np.diff(expected).max() > 3 * np.diff(expected).min(), "the clip really has a variable frame rate"
    assert facts.audio_codec == "aac" and facts.audio_packets > 0


def test_timestamps_across_the_33_bit_wrap_keep_their_spacing(corpus: dict[str, Path], tmp_path: Path) -> None:
    result = parse(corpus["wrap.ts"], tmp_path / "o.mp4")
    assert "timestamps repaired" not in result.stderr, "FFmpeg's demuxer unwraps them: nothing to repair"
    assert np.allclose(np.diff(probe_video(tmp_path / "o.mp4").pts_s), 0.1, atol=0.002)


def test_a_frame_size_change_midway_is_scaled_to_the_first_size(corpus: dict[str, Path], tmp_path: Path) -> None:
    parse(corpus["size_change.ts"], tmp_path / "o.mp4")
    facts = probe_video(tmp_path / "o.mp4")
    assert (facts.width, facts.height, facts.frames) == (384, 288, 16)
    assert all(b > a for a, b in zip(facts.pts_s, facts.pts_s[1:]))
    written, first = decode_frames(tmp_path / "o.mp4"), reference_frames(corpus["plain.mp4"], tmp_path / "ref")
    assert_same_frames_in_order(written[:8], first)
    assert_same_frames_in_order(written[8:], first)  # shrunk to 320x240 by the capture, scaled back by vidparse


def test_b_frames_in_avi_take_presentation_order_timestamps(corpus: dict[str, Path], tmp_path: Path) -> None:
    with av.open(str(corpus["bframes.avi"])) as container:
        raw = [f.pts for f in container.decode(video=0)]
    assert any(b <= a for a, b in zip(raw, raw[1:])), "the decoder hands out decode-order timestamps"
    parse(corpus["bframes.avi"], tmp_path / "o.mp4")
    written = probe_video(tmp_path / "o.mp4").pts_s
    assert len(written) == 12 and all(b > a for a, b in zip(written, written[1:]))
    late = [t - written[0] - i / 10 for i, t in enumerate(written)]
    assert max(late) <= 0.3 + 1e-6, f"no frame later than the 3 B-frames a packet can be reordered by: {late}"


def test_video_without_timestamps_is_repaired_and_counted(corpus: dict[str, Path], tmp_path: Path) -> None:
    raw = tmp_path / "raw.h264"  # an elementary stream: no container, no timestamp on any frame
    ffmpeg("-i", str(corpus["plain.mp4"]), "-c", "copy", "-bsf:v", "h264_mp4toannexb", str(raw))
    result = parse(raw, tmp_path / "o.mp4")
    assert "timestamps repaired (docs/faults.md)" in result.stderr
    assert result.stderr.split("timestamps repaired (docs/faults.md)")[1].split()[1] == "8"
    assert np.allclose(np.diff(probe_video(tmp_path / "o.mp4").pts_s), 1 / 25, atol=0.002)


def test_an_image_sequence_becomes_a_video(corpus: dict[str, Path], tmp_path: Path) -> None:
    result = parse(corpus["sequence"] / "%06d.png", tmp_path / "o.mp4")
    assert "label PNG" not in result.stderr and not list(tmp_path.glob("*_labels.png")), "a video, no label PNGs"
    assert "placed at its top left" not in result.stderr, "one size: nothing to say"
    facts = probe_video(tmp_path / "o.mp4")
    assert np.allclose(np.diff(facts.pts_s), 1 / 25, atol=0.002)
    reference = [cv2.imread(str(p)) for p in sorted(corpus["sequence"].glob("*.png"))]
    assert_same_frames_in_order(decode_frames(tmp_path / "o.mp4"), reference)


@pytest.mark.parametrize("name, frames, warned", [("anim.png", 10, False), ("anim.webp", 1, True)])
def test_an_animated_png_is_a_video_and_an_animated_webp_its_first_frame_said_so(name: str, frames: int, warned: bool,
                                                                                  tmp_path: Path) -> None:
    """FFmpeg decodes an APNG's frames, as it does a GIF's; its webp decoder cannot decode an animated WebP's: its
    first frame is parsed as a photo, and the run says so."""
    animation = tmp_path / name
    encoding = ["-f", "apng", "-plays", "0"] if name.endswith(".png") else ["-c:v", "libwebp", "-loop", "0"]
    ffmpeg("-i", str(VTEST), "-t", "1", "-vf", "scale=192:144", *encoding, str(animation))
    result = run_cli("run", str(animation), "-o", str(tmp_path / "o.mp4"), "--config", FAST)
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / "o.mp4").frames == frames
    assert result.stderr.count("is animated: only its first frame is parsed") == warned, result.stderr


def test_a_glob_pattern_gives_an_annotated_image_and_a_label_png_each(corpus: dict[str, Path],
                                                                      tmp_path: Path) -> None:
    parse(f"{corpus['sequence']}/*.png", tmp_path / "out")
    for source in sorted(corpus["sequence"].glob("*.png")):
        annotated = cv2.imread(str(tmp_path / "out" / source.name))
        labels = np.asarray(Image.open(tmp_path / "out" / f"{source.stem}_labels.png"))
        assert difference(annotated, cv2.imread(str(source))) < 1, "png in, lossless png out"
        assert labels.shape == annotated.shape[:2]


def test_a_patterns_frames_written_as_photos_are_tracked_and_voted_on_as_its_video(corpus: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    """A pattern's frames are one sequence (README): written as photos (``-o DIR/``) they were parsed each alone, with
    no track id in the stats and no vote, while the same pattern made into a video was tracked and voted on."""
    sequence = corpus["sequence"]
    common = ("--model", "bodypix", "--alpha", "0")  # the default vote and tracking
    video = run_cli("run", str(sequence / "%06d.png"), "-o", str(tmp_path / "o.mp4"), "--masks", str(tmp_path / "m"),
                    "--stats", str(tmp_path / "video.jsonl"), *common)
    photos = run_cli("run", f"{sequence}/*.png", "-o", str(tmp_path / "out"), "--stats", str(tmp_path / "photos.jsonl"),
                     *common)
    assert video.returncode == 0 and photos.returncode == 0, video.stderr + photos.stderr
    for index, source in enumerate(sorted(sequence.glob("*.png"))):
        as_photo = np.asarray(Image.open(tmp_path / "out" / f"{source.stem}_labels.png"))
        assert np.array_equal(as_photo, np.asarray(Image.open(tmp_path / "m" / f"{index:06d}.png"))), source.name
    records = {name: [json.loads(line) for line in (tmp_path / name).read_text().splitlines()]
               for name in ("video.jsonl", "photos.jsonl")}
    assert [[person["track_id"] for person in record["persons"]] for record in records["photos.jsonl"]] == \
        [[person["track_id"] for person in record["persons"]] for record in records["video.jsonl"]]
    assert all(person["track_id"] is not None for record in records["photos.jsonl"] for person in record["persons"])
    assert any(record["persons"] for record in records["photos.jsonl"])
    refused = run_cli("run", f"{sequence}/*.png", "-o", str(tmp_path / "out2"), "--instances", str(tmp_path / "ids"))
    assert refused.returncode == 2 and "a pattern written as photos is tracked, but writes no instance PNGs" in \
        refused.stderr and "hint: give -o a video" in refused.stderr, refused.stderr


def test_a_photo_gets_an_overlay_and_a_label_png_at_its_size(shared: Path, tmp_path: Path) -> None:
    photo = shared / "data" / "photos" / "messi5.jpg"
    result = run_cli("run", str(photo), "-o", str(tmp_path / "photo_parsed.jpg"), "--masks", str(tmp_path / "m"),
                     "--config", FAST)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    original = cv2.imread(str(photo))
    overlay = cv2.imread(str(tmp_path / "photo_parsed.jpg"))
    labels = np.asarray(Image.open(tmp_path / "m" / "messi5.png"))
    assert overlay.shape == original.shape and labels.shape == original.shape[:2]
    person = labels > 0
    assert person.mean() > 0.02, "the footballer is labelled"
    assert difference(overlay[person], original[person]) > 3 * difference(overlay[~person], original[~person])


def test_exif_orientation_is_respected(shared: Path, tmp_path: Path) -> None:
    photo = shared / "data" / "ccp" / "images" / "0001.jpg"
    turned = exif_rotated_jpeg(photo, tmp_path / "turned.jpg")
    parse(turned, tmp_path / "out.png")
    original, written = cv2.imread(str(photo)), cv2.imread(str(tmp_path / "out.png"))
    assert written.shape == original.shape, "portrait, as shown, not as stored"
    assert difference(written, original) < NOISE
    assert np.asarray(Image.open(tmp_path / "out_labels.png")).any(), "the upright person is found"
    parse(turned, tmp_path / "again.png", "--model", "bodypix")
    assert np.asarray(Image.open(tmp_path / "again_labels.png")).any(), "the second output's own labels"
    assert not (tmp_path / "turned_labels.png").exists(), "labels are named after the output, not the input"


def test_photos_sharing_a_name_keep_their_own_labels(shared: Path, tmp_path: Path) -> None:
    """x.jpg and x.png in one folder: two annotated images, and two label PNGs (x, then x_2), not one over the other."""
    photos = tmp_path / "in"
    photos.mkdir()
    Image.open(shared / "data" / "photos" / "messi5.jpg").save(photos / "x.jpg")
    Image.open(shared / "data" / "ccp" / "images" / "0001.jpg").save(photos / "x.png")
    result = parse(photos, tmp_path / "out")
    assert f"wrote {tmp_path / 'out' / 'x.jpg'}, {tmp_path / 'out' / 'x.png'}, each with its label PNG beside it" in (
        " ".join(result.stderr.split()))
    sizes = {name: Image.open(tmp_path / "out" / name).size for name in ("x.jpg", "x.png", "x_labels.png", "x_2_labels.png")}
    assert sizes["x_labels.png"] == sizes["x.jpg"] != sizes["x.png"] == sizes["x_2_labels.png"]


@pytest.mark.parametrize("layout", ["same-name-in-two-folders", "masks-into-the-output"])
def test_no_output_file_of_a_run_is_written_over_by_another(layout: str, shared: Path, tmp_path: Path) -> None:
    """Each photo keeps its own annotated copy and label PNG, whatever names the inputs share with each other."""
    ccp = sorted((shared / "data" / "ccp" / "images").glob("*.jpg"))
    names = {"same-name-in-two-folders": ["a/x.jpg", "b/x.jpg"], "masks-into-the-output": ["in/a.jpg", "in/b.jpg"]}[layout]
    for name, photo in zip(names, ccp):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).symlink_to(photo)
    source = str(tmp_path / "*" / "x.jpg") if layout == "same-name-in-two-folders" else tmp_path / "in"
    out = tmp_path / "out"
    parse(source, out, *(("--masks", str(out)) if layout == "masks-into-the-output" else ()))
    written = sorted(out.iterdir())
    overlays = [p for p in written if Image.open(p).mode == "RGB"]
    labels = [p for p in written if Image.open(p).mode in ("P", "L")]
    assert len(overlays) == len(labels) == 2, [p.name for p in written]
    assert sorted(Image.open(p).size for p in overlays) == sorted(Image.open(p).size for p in ccp[:2])


def test_jpegs_named_jfif_or_jpe_are_photos_and_written_as_named(tmp_path: Path) -> None:
    """.jfif (Windows' name for a JPEG saved from the web) and .jpe were no photos: a folder of them held 'no images',
    and `-o x.jfif` was 'neither a video nor an image'; OpenCV writes no .jfif by that name."""
    for name in ("a.jfif", "b.jpe"):
        Image.new("RGB", (40, 30), "red").save(tmp_path / name, format="JPEG")
    assert ImageSet.find(str(tmp_path)).paths == (tmp_path / "a.jfif", tmp_path / "b.jpe")
    check_image_output(str(tmp_path / "a.jfif"), tmp_path / "out" / "one.jfif")
    for name in ("out.jfif", "out.jpe"):
        assert write_image(tmp_path / name, np.zeros((30, 40, 3), np.uint8))
        with Image.open(tmp_path / name) as image:
            assert (image.format, image.size) == ("JPEG", (40, 30)), name
    assert not write_image(tmp_path / "gone" / "out.jfif", np.zeros((30, 40, 3), np.uint8))


def test_a_webp_output_is_lossy_as_webp_photos_are(vtest_frame: np.ndarray, tmp_path: Path) -> None:
    """OpenCV writes WebP lossless unless told otherwise: an annotated .webp was several times a lossy one's size."""
    assert write_image(tmp_path / "out.webp", vtest_frame)
    lossless = len(cv2.imencode(".webp", vtest_frame)[1])
    assert (tmp_path / "out.webp").stat().st_size < lossless / 3
    written = cv2.imread(str(tmp_path / "out.webp"))
    assert written.shape == vtest_frame.shape and 0 < np.abs(written.astype(int) - vtest_frame).mean() < 3


def test_a_multi_page_tiff_is_said_to_be_parsed_by_its_first_page(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """A scan's or a fax's TIFF of several pages was parsed by its first page without a word."""
    pages = [Image.new("RGB", (40, 30), colour) for colour in ("red", "blue")]
    pages[0].save(tmp_path / "scan.tif", save_all=True, append_images=pages[1:])
    pages[0].save(tmp_path / "one.tiff")
    with caplog.at_level("WARNING"):
        ImageSet.find(str(tmp_path))
    assert [record.getMessage() for record in caplog.records] == [
        f"input {tmp_path / 'scan.tif'} has several pages: only its first page is parsed"]


def test_photo_outputs_are_named_by_one_rule() -> None:
    """A photo's annotated copy keeps its name, its label PNG is <stem>_labels.png; a stem that repeats gets _2,
    _3... on both where the whole name repeats, on the label PNG alone where only the stem does."""
    def named(*paths: str, masks: str | None = None) -> list[tuple[str, str]]:
        images = ImageSet("in", tuple(Path(path) for path in paths), ((1, 1),) * len(paths))
        return [(str(image), str(labels)) for image, labels in images.output_paths(Path("out"), masks and Path(masks))]

    assert named("a/x.jpg", "b/x.jpg", "c/x_2.jpg") == [
        ("out/x.jpg", "out/x_labels.png"), ("out/x_3.jpg", "out/x_3_labels.png"), ("out/x_2.jpg", "out/x_2_labels.png")]
    assert named("in/x.jpg", "in/x.png") == [("out/x.jpg", "out/x_labels.png"), ("out/x.png", "out/x_2_labels.png")]
    assert named("in/x.jpg", "in/y.jpg", masks="out") == [("out/x.jpg", "out/x.png"), ("out/y.jpg", "out/y.png")]


@pytest.mark.parametrize("size, output, said", [
    ((20000, 600), "o.webp", "WebP holds at most 16383 pixels a side, photo {photo} is 20000x600"),
    ((70000, 20), "o.jpg", "JPEG holds at most 65535 pixels a side, photo {photo} is 70000x20"),
], ids=["webp", "jpeg"])
def test_a_photo_too_large_for_its_outputs_format_is_refused_before_any_work(size: tuple[int, int], output: str,
                                                                              said: str, tmp_path: Path) -> None:
    """A 20000-pixel panorama written as .webp was parsed, then OpenCV's encoder failed (a raw "[ERROR] ... WebP
    encoding failed" line) and the run said "writing o.webp failed", with the hint to check the free disk space."""
    photo = tmp_path / "pano.png"
    Image.new("RGB", size).save(photo)
    result = run_cli("run", str(photo), "-o", str(tmp_path / output), "--config", FAST)
    assert result.returncode == 4, result.stderr
    assert f"error: output {tmp_path / output}: {said.format(photo=photo)}" in result.stderr, result.stderr
    assert "hint: write it as .png" in result.stderr and "ERROR" not in result.stderr
    assert not (tmp_path / output).exists()


@pytest.mark.parametrize("names, masks, message", [
    (["p.jpg", "p_labels.png"], False, "photos {in}/p_labels.png and {in}/p.jpg would both be written as "
                                       "{out}/p_labels.png (the annotated copy of one, the label PNG of the other)"),
    (["a.png", "b.jpg"], True, "photo {in}/a.png's annotated copy and its label PNG would both be {out}/a.png"),
], ids=["a-photo-named-like-labels", "png-masks-into-the-output"])
def test_an_annotated_copy_and_a_label_png_of_one_name_are_refused_naming_both(
        names: list[str], masks: bool, message: str, shared: Path, tmp_path: Path) -> None:
    photos, out = tmp_path / "in", tmp_path / "out"
    photos.mkdir()
    for name, photo in zip(names, sorted((shared / "data" / "ccp" / "images").glob("*.jpg"))):
        (photos / name).symlink_to(photo)
    result = run_cli("run", str(photos), "-o", str(out), "--config", FAST, *(("--masks", str(out)) if masks else ()))
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: " + message.format(**{"in": photos, "out": out})], result.stderr
    assert "hint: give --masks a folder of its own" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists(), "refused before anything is written"


@pytest.mark.slow
def test_a_folder_of_ccp_photos_of_different_sizes_with_two_workers(shared: Path, tmp_path: Path) -> None:
    photos = sorted((shared / "data" / "ccp" / "images").glob("*.jpg"))
    assert len({Image.open(p).size for p in photos}) > 1, "the folder mixes sizes"
    parse(shared / "data" / "ccp" / "images", tmp_path / "out", "--workers", "2", "--masks", str(tmp_path / "m"))
    for photo in photos:
        size = Image.open(photo).size
        assert Image.open(tmp_path / "out" / photo.name).size == size
        labels = np.asarray(Image.open(tmp_path / "m" / f"{photo.stem}.png"))
        assert labels.shape == size[::-1] and labels.any(), photo.name


def test_a_pattern_is_a_sequence_a_photo_or_a_folder_is_not(tmp_path: Path) -> None:
    folder = tmp_path / "shots [2024]"  # glob's magic in a folder's name
    folder.mkdir()
    Image.new("RGB", (8, 8)).save(folder / "a[1].png")
    assert not is_sequence(str(folder)) and not is_sequence(str(folder / "a[1].png"))
    assert is_sequence(str(folder / "%06d.png")) and is_sequence(str(tmp_path / "*.png"))


def test_photos_of_two_sizes_made_into_a_video_are_said_to_share_its_frame(shared: Path, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0002190.jpg", "0005008.jpg"):  # two sizes
        shutil.copy(shared / "data" / "cihp" / "images" / name, photos / name)
    sizes = [Image.open(path).size for path in sorted(photos.iterdir())]
    result = parse(photos, tmp_path / "o.mp4")
    width, height = max(w for w, _ in sizes), max(h for _, h in sizes)
    assert f"photos of 2 sizes made into one {width}x{height} video" in " ".join(result.stderr.split())
    assert probe_video(tmp_path / "o.mp4").frames == 2


def test_a_large_photo_in_the_folder_changes_nothing_of_the_others(shared: Path, tmp_path: Path) -> None:
    """Photos share one canvas as large as the largest; each is still parsed alone, as if the canvas were not
    there (the detector saw a small photo as a corner of a huge frame and missed its people)."""
    photos = sorted((shared / "data" / "ccp" / "images").glob("*.jpg"))[:3]
    alone, with_large = tmp_path / "alone", tmp_path / "with_large"
    for folder in (alone, with_large):
        folder.mkdir()
        for photo in photos:
            (folder / photo.name).symlink_to(photo)
    Image.open(photos[0]).resize((3000, 4000)).save(with_large / "zz_large.jpg")
    for folder in (alone, with_large):
        parse(folder, tmp_path / f"{folder.name}_out", "--workers", "2", "--masks", str(tmp_path / f"{folder.name}_m"))
    for photo in photos:
        kept = np.asarray(Image.open(tmp_path / "alone_m" / f"{photo.stem}.png"))
        assert kept.any() and np.array_equal(kept, np.asarray(Image.open(tmp_path / "with_large_m" /
                                                                         f"{photo.stem}.png"))), photo.name


def test_a_photo_gone_or_changed_after_the_listing_is_skipped_alone(shared: Path, tmp_path: Path) -> None:
    """The source reads each photo when its turn comes; one deleted or replaced since the set was listed is a
    warning and a frame without a picture, which the parser stage marks missing and the output does not write."""
    photos = sorted((shared / "data" / "ccp" / "images").glob("*.jpg"))[:3]
    folder = tmp_path / "in"
    folder.mkdir()
    for photo in photos:
        (folder / photo.name).write_bytes(photo.read_bytes())
    images = ImageSet.find(str(folder))
    (folder / photos[1].name).unlink()
    Image.open(photos[0]).resize((40, 40)).save(folder / photos[2].name)
    source = ImageSource(images)
    source.open()
    frames = list(source.frames())
    assert [frame.picture for frame in frames][1:] == [(0, 0), (0, 0)] and frames[0].picture != (0, 0)
    assert source.skipped_packets == 2, "the summary counts them"
    arrays, result = LabelsParser(None).process(frames[1].image[:0, :0], FrameKey(0, 1), None)  # type: ignore[arg-type]
    assert result.status == "missing" and arrays["labels"].shape == (0, 0)


def cut_jpeg(path: Path) -> Path:
    """A JPEG whose header reads and whose pixels stop a third of the way (a copy cut short)."""
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:path.stat().st_size // 3])
    return path


@pytest.mark.parametrize(
    "make, output, code, message",
    [
        (lambda d: (d / "notes.jpg").write_text("hello") and d / "notes.jpg", "o.png", 3, "is not a readable image"),
        (lambda d: cut_jpeg(d / "cut.jpg"), "o.png", 3, "is not a readable image (image file is truncated"),
        (lambda d: (d / "empty.jpg").write_bytes(b"") or d / "empty.jpg", "o.png", 3, "empty.jpg is empty (0 bytes)"),
        (lambda d: d / "nothing_*.png", "out", 3, "names no image files"),
        (lambda d: d / "missing.jpg", "o.jpg", 3, "missing.jpg does not exist"),
        (lambda d: (d / "a.png", d / "b.png") and d, "o.png", 4, "cannot all be written"),
        (lambda d: d, "in", 4, "would overwrite the input"),
    ],
    ids=["text-as-jpeg", "cut-jpeg", "empty-jpeg", "empty-pattern", "missing-photo", "folder-into-one-image", "folder-onto-itself"],
)
def test_image_mistakes_get_one_line_and_an_exit_code(make, output: str, code: int, message: str,
                                                      tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (32, 48)).save(photos / name)
    result = run_cli("run", str(make(photos)), "-o", str(tmp_path / output))
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "hint:" in result.stderr and "Traceback" not in result.stderr
    assert all(Image.open(photos / name).size == (32, 48) for name in ("a.png", "b.png")), "the inputs as they were"


def test_a_folder_skips_its_damaged_file_and_reads_16_bit_and_float_grey(shared: Path, tmp_path: Path) -> None:
    photos = tmp_path / "in"
    photos.mkdir()
    grey = np.asarray(Image.open(shared / "data" / "photos" / "messi5.jpg").convert("L")).astype(np.uint16) * 257
    Image.fromarray(grey).save(photos / "grey16.png")  # PIL's mode I;16, which its RGB conversion clips to white
    Image.fromarray((grey / 65535).astype(np.float32), "F").save(photos / "float.tif")  # 0-1, which it makes black
    (photos / "notes.jpg").write_text("hello")
    (photos / "cut.jpg").write_bytes((shared / "data" / "photos" / "messi5.jpg").read_bytes()[:3000])  # its header whole
    result = parse(photos, tmp_path / "out", "--masks", str(tmp_path / "m"))
    assert "notes.jpg is not a readable image" in result.stderr and "skipped" in result.stderr
    assert "cut.jpg is not a readable image (image file is truncated" in result.stderr
    assert re.search(r"unreadable photos skipped\s*│\s*2\s", result.stderr), result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["float.tif", "grey16.png"]
    for name in ("grey16.png", "float.tif"):
        written = cv2.imread(str(tmp_path / "out" / name))
        assert difference(written, cv2.cvtColor((grey // 257).astype(np.uint8), cv2.COLOR_GRAY2BGR)) < 1, name
        assert (np.asarray(Image.open(tmp_path / "m" / f"{Path(name).stem}.png")) > 0).mean() > 0.02, name


def test_a_name_too_long_for_a_file_is_refused_before_any_work(tmp_path: Path) -> None:
    """A photo named 250 bytes (82 CJK characters) has a label PNG named 257: the run parsed it, wrote its annotated
    copy, then ended with "unexpected OSError: [Errno 36] File name too long ... this is a bug" (exit 7)."""
    photos = tmp_path / "in"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / ("\u5199" * 82 + ".jpg"))
    result = run_cli("run", str(photos), "-o", str(tmp_path / "out"), "--config", FAST)
    assert result.returncode == 4, result.stderr
    assert "label PNG would be named" in result.stderr and "257 bytes, more than a file name may have (255)" in \
        result.stderr and "hint: shorten the photo's name, or give --masks a folder" in result.stderr, result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), "nothing written"
    beside = run_cli("run", str(photos), "-o", str(tmp_path / "out"), "--masks", str(tmp_path / "m"), "--config", FAST)
    assert beside.returncode == 0 and [p.name for p in (tmp_path / "m").iterdir()] == ["\u5199" * 82 + ".png"]


def test_a_photo_with_damaged_exif_is_read_without_pils_warnings(tmp_path: Path) -> None:
    """A camera's damaged EXIF block made PIL warn ("Tag data larger than file", "Corrupt EXIF data"): two raw lines
    naming a file of PIL's on the run's output, once as the photo was listed and once as it was read."""
    photo = tmp_path / "p.jpg"
    Image.new("RGB", (40, 30), (90, 120, 150)).save(photo)
    entry = struct.pack("<HHII", 0x0112, 3, 0x7FFFFFFF, 8)  # the orientation, said to hold 2**31 values
    exif = b"Exif\x00\x00II*\x00" + struct.pack("<IH", 8, 1) + entry + struct.pack("<I", 0)
    data = photo.read_bytes()
    photo.write_bytes(data[:2] + b"\xff\xe1" + struct.pack(">H", len(exif) + 2) + exif + data[2:])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(UserWarning, match="Tag data larger than file"):  # what PIL says of it
            Image.open(photo).getexif()
        assert upright_size(photo, decoded=True) == (40, 30)
        assert load_upright(photo).shape == (30, 40, 3)


def test_a_folder_names_the_files_it_leaves_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A GIF or a video in a folder of photos was left out without a word: the run wrote the photos and said nothing
    of the rest (the README calls a GIF a video: given by its own name, it is parsed)."""
    photos = tmp_path / "in"
    photos.mkdir()
    Image.new("RGB", (32, 48)).save(photos / "a.png")
    for name in ("wave.gif", "clip.mp4", ".DS_Store"):
        (photos / name).write_bytes(b"\0" * 16)
    with caplog.at_level("WARNING", logger="vidparse"):
        images = ImageSet.find(str(photos))
    assert images.paths == (photos / "a.png",)
    assert f"input {photos}: 2 files that are not photos left out (clip.mp4, wave.gif)" in caplog.text, caplog.text


@pytest.mark.parametrize("name, args, heard", [
    # a camera's MKV whose audio starts 0.7 s after the video: the beep at 1.7 s was heard at 1.02 s
    ("audio_late.mkv", ["-i", "{vtest}", "-itsoffset", "0.7", "-f", "lavfi", "-i", BEEP, "-c:a", "aac"], 1.7),
    # the same with PCM in a MOV (re-encoded as AAC)
    ("audio_late_pcm.mov", ["-i", "{vtest}", "-itsoffset", "0.7", "-f", "lavfi", "-i", BEEP, "-c:a", "pcm_s16le"],
     1.7),
    # a transport stream whose video starts 0.5 s after its audio (a recording that began between keyframes):
    # heard at 1.04 s
    ("video_late.ts", ["-itsoffset", "0.5", "-i", "{vtest}", "-f", "lavfi", "-i", BEEP, "-c:a", "aac"], 0.5),
])
def test_the_audio_keeps_its_place_beside_the_video(name: str, args: list[str], heard: float, shared: Path,
                                                     tmp_path: Path) -> None:
    """An MP4 written fragmented starts every track at 0: the fast-start rewrite puts the audio back where it was
    beside the first frame (docs/faults.md, "Real-world media")."""
    clip = tmp_path / name
    ffmpeg(*[str(VTEST) if a == "{vtest}" else a for a in args], "-vf", "scale=384:288", "-t", "2.5", "-c:v",
           "libx264", str(clip))
    parse(clip, tmp_path / "o.mp4")
    assert beep_heard_at(tmp_path / "o.mp4") == pytest.approx(heard, abs=0.005)


@pytest.mark.parametrize("rate, layout", [(192000, "mono"), (48000, "7.1")])
def test_audio_aac_has_no_rate_for_or_pyav_cannot_copy_the_layout_of_becomes_aac(rate: int, layout: str, shared: Path,
                                                                                  tmp_path: Path) -> None:
    """A recorder's 192 kHz PCM (AAC goes to 96 kHz: the encoder refused the first frame, exit 4 and no file) is
    resampled to 48 kHz; FFmpeg's 7.1 PCM in a MOV, whose layout lists its channels (a custom order: PyAV freed the
    list twice and the run died of SIGABRT, no output, no message), is mixed down to stereo."""
    clip = tmp_path / "pcm.mov"
    ffmpeg("-i", str(VTEST), "-f", "lavfi", "-i", f"sine=f=440:r={rate},aformat=channel_layouts={layout}",
           "-t", "1", "-vf", "scale=384:288", "-c:v", "libx264", "-c:a", "pcm_s24le", str(clip))
    parse(clip, tmp_path / "o.mp4")
    with av.open(str(tmp_path / "o.mp4")) as written:
        audio = written.streams.audio[0]
        assert (audio.codec_context.name, audio.rate, audio.channels) == ("aac", 48000, 1 if layout == "mono" else 2)
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in written.decode(audio=0)])
    assert len(samples) / 48000 == pytest.approx(1.0, abs=0.05), "as long as the video"
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(len(samples), 1 / 48000)[spectrum.argmax()] == pytest.approx(440, abs=3), "the same tone"


@pytest.mark.parametrize("turn, shown", [(0, "64/45"), (90, "45/64")])
def test_an_anamorphic_video_keeps_its_pixel_shape(turn: int, shown: str, shared: Path, tmp_path: Path) -> None:
    """A 16:9 PAL DVD's 720x576 pixels are shown 64:45 wide (1024x576): written with that pixel shape, turned with
    the frame, players show what they show of the input (the output was 720x576 of square pixels, 4:5)."""
    plain = tmp_path / "wide.mp4"
    ffmpeg("-i", str(VTEST), "-vf", "scale=720:576,setsar=64/45", "-frames:v", "4", "-c:v", "libx264", str(plain))
    clip = tmp_path / f"wide{turn}.mp4"
    ffmpeg("-i", str(plain), "-c", "copy", "-metadata:s:v:0", f"rotate={turn}", str(clip))
    parse(clip, tmp_path / "o.mp4")
    with av.open(str(tmp_path / "o.mp4")) as written:
        stream = written.streams.video[0]
        assert (stream.width, stream.height) == ((720, 576) if turn == 0 else (576, 720))
        assert stream.sample_aspect_ratio == Fraction(shown)


def test_a_raw_dv_file_keeps_its_25_fps(shared: Path, tmp_path: Path) -> None:
    """FFmpeg 8 gives a raw DV file's average rate as its time base's, 60000 fps: x264 took level 6.2 (players
    refuse it), the last frame lasted 1/60000 s, and the whole file was said to be 'truncated at 2.0 s of 2.0 s'."""
    clip = tmp_path / "tape.dv"
    ffmpeg("-i", str(VTEST), "-vf", "scale=720:576", "-r", "25", "-frames:v", "10", "-pix_fmt", "yuv420p",
           str(clip))
    result = parse(clip, tmp_path / "o.mp4")
    assert "truncated" not in result.stderr
    facts = probe_video(tmp_path / "o.mp4")
    assert facts.frames == 10 and facts.duration_s == pytest.approx(0.4, abs=1e-3)
    with av.open(str(tmp_path / "o.mp4")) as written:
        stream = written.streams.video[0]
        assert stream.codec_context.level <= 30 and stream.sample_aspect_ratio == Fraction(16, 15)


def test_an_avif_photo_is_a_photo_and_an_animated_one_a_video(shared: Path, tmp_path: Path) -> None:
    """Phones and browsers save photos as AVIF. One was taken for a video: `-o parsed.avif` or `-o parsed.jpg` was
    refused ("unsupported extension", hint: .mp4, .mov, .mkv), `-o DIR/` wrote a one-frame MP4, and a folder of a
    phone's photos left it out as "not a photo". An animated AVIF stays a video, as an animated PNG does."""
    photo = tmp_path / "IMG_0001.avif"
    with Image.open(shared / "data" / "photos" / "messi5.jpg") as image:
        image.save(photo, quality=90)
        original = np.asarray(image.convert("RGB"))[..., ::-1]
    (tmp_path / "phone").mkdir()
    shutil.copy(photo, tmp_path / "phone" / "IMG_0002.avif")
    shutil.copy(shared / "data" / "photos" / "messi5.jpg", tmp_path / "phone" / "IMG_0003.jpg")
    for output in ("parsed.avif", "parsed.jpg"):
        parse(photo, tmp_path / output)
        with Image.open(tmp_path / output) as image:
            written = np.asarray(image.convert("RGB"))[..., ::-1]
        assert written.shape == original.shape and difference(written, original) < NOISE, output
        assert np.asarray(Image.open(tmp_path / f"{Path(output).stem}_labels.png")).shape == original.shape[:2]
    result = parse(tmp_path / "phone", tmp_path / "out")
    assert "not photos left out" not in result.stderr, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "IMG_0002.avif", "IMG_0002_labels.png", "IMG_0003.jpg", "IMG_0003_labels.png"]
    animation = tmp_path / "anim.avif"
    ffmpeg("-i", str(VTEST), "-t", "0.4", "-vf", "scale=192:144", "-c:v", "libaom-av1", "-cpu-used", "8", str(animation))
    parse(animation, tmp_path / "anim.mp4")
    assert probe_video(tmp_path / "anim.mp4").frames == 4


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_the_transparent_pixels_of_a_photo_are_not_parsed(shared: Path, tmp_path: Path, mode: str) -> None:
    """A cutout PNG (a person with the background made transparent) keeps the background's colors under alpha 0; the
    run parsed them as a viewer never shows them: the hidden background came back in the annotated copy, and the people
    in it were labelled. Transparent pixels are taken as white (as on a page)."""
    with Image.open(shared / "data" / "photos" / "messi5.jpg") as image:
        rgb = image.convert("RGB")
    hidden = np.asarray(rgb).copy()
    alpha = np.full(hidden.shape[:2], 255, np.uint8)
    alpha[:, : hidden.shape[1] // 2] = 0  # the left half (the footballer's side) is transparent
    cutout = Image.fromarray(np.dstack([hidden, alpha]), "RGBA")
    if mode == "LA":
        cutout = cutout.convert("LA")
    elif mode == "P":  # a palette PNG with a transparent index (tRNS), as GIF-like exports are
        cutout = cutout.convert("RGB").quantize(255)
        palette = np.asarray(cutout).copy()
        palette[alpha == 0] = 255
        cutout = Image.fromarray(palette, "P")
        cutout.putpalette(rgb.quantize(255).getpalette() + [0, 0, 0])
        cutout.info["transparency"] = 255
    cutout.save(tmp_path / "cutout.png", transparency=255) if mode == "P" else cutout.save(tmp_path / "cutout.png")
    parse(tmp_path / "cutout.png", tmp_path / "parsed.png")
    written = cv2.imread(str(tmp_path / "parsed.png"))
    labels = np.asarray(Image.open(tmp_path / "parsed_labels.png"))
    assert (written[alpha == 0] == 255).all(), "the transparent half is white, not the background hidden under it"
    hidden_part = labels[:, : labels.shape[1] // 2 - 8]  # beside the cut, the right half's person may bleed over
    assert not hidden_part.any(), "nobody is labelled where nothing shows (20000 pixels of the footballer were)"


def display_p3_profile() -> bytes:
    """sRGB's ICC profile with Display P3's primaries (adapted to D50), as an iPhone's photo carries."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    primaries = {b"rXYZ": (0.5151, 0.2412, -0.0011), b"gXYZ": (0.2920, 0.6922, 0.0419),
                 b"bXYZ": (0.1571, 0.0666, 0.7841)}
    (count,) = struct.unpack(">I", data[128:132])
    for i in range(count):
        tag, offset, _ = struct.unpack(">4sII", data[132 + 12 * i: 144 + 12 * i])
        if tag in primaries:
            data[offset + 8: offset + 20] = struct.pack(">3i", *(round(v * 65536) for v in primaries[tag]))
    data[84:100] = bytes(16)  # the profile's MD5, no longer its own: zero is "not computed"
    for encoding in ("ascii", "utf-16-be"):  # its name too (an sRGB profile is left as it is)
        data = data.replace("sRGB built-in".encode(encoding), "Display P3 v1".encode(encoding))
    return bytes(data)


def test_a_display_p3_photo_is_written_in_srgb(shared: Path, tmp_path: Path) -> None:
    """An iPhone's JPEG is Display P3, said by its ICC profile. The profile was dropped: the annotated copy (written
    without one, so sRGB to every viewer) had the P3 numbers as sRGB ones, duller than the photo (P3 200,100,50 is
    sRGB 215,93,31). It is converted to sRGB as it is read."""
    profile = display_p3_profile()
    with Image.open(shared / "data" / "photos" / "messi5.jpg") as image:
        image.convert("RGB").save(tmp_path / "IMG_0001.jpg", icc_profile=profile, quality=95)
    with Image.open(tmp_path / "IMG_0001.jpg") as image:
        p3 = np.asarray(image.convert("RGB"))[..., ::-1]
        srgb = np.asarray(ImageCms.profileToProfile(image, ImageCms.ImageCmsProfile(io.BytesIO(profile)),
                                                    ImageCms.createProfile("sRGB"), outputMode="RGB"))[..., ::-1]
    assert difference(p3, srgb) > 3, "the profile changes the colours"
    parse(tmp_path / "IMG_0001.jpg", tmp_path / "parsed.png")
    written = cv2.imread(str(tmp_path / "parsed.png"))
    assert difference(written, srgb) < 1 < difference(written, p3)
