"""`vidparse.stream` on the real pipeline: every frame once and in order, two sources on one pool, and no process
left behind when the caller leaves early, raises, or drops the iterator."""

from __future__ import annotations

import gc
import logging
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import psutil
import pytest
from PIL import Image

import vidparse
from conftest import VTEST, cut_clip, decode_frames, probe_video
from rtsp import free_port
from vidparse.errors import BadInputError, BadOutputError, ConfigError, VidparseError
from vidparse.names import plural
from vidparse.pipeline.cpus import usable_cpus


def pipeline_processes() -> list[psutil.Process]:
    """This test process's descendants, less multiprocess's resource tracker (one per interpreter, by design)."""
    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            if any("resource_tracker" in part for part in child.cmdline()):
                continue
        except psutil.ZombieProcess:
            pass  # a zombie is a child nobody waited for: left behind as well
        except psutil.NoSuchProcess:
            continue
        found.append(child)
    return found


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """5 vtest frames: a second source that differs from the 12-frame clip."""
    return cut_clip(VTEST, tmp_path_factory.mktemp("clips") / "vtest5.avi", 5)


def test_sources_yield_every_frame_once_in_order(clip: Path, short_clip: Path, shared: Path, tmp_path: Path) -> None:
    """Two files and a folder of photos on one pool of two workers: each file's frames come once, in order, with
    their timestamps, the decoded pixels (RGB) and labels; the second file also writes its annotated video; each
    photo comes at its own size, parsed alone (no person tracked or voted on from the photo before)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0002190.jpg", "0005008.jpg"):  # two sizes
        shutil.copy(shared / "data" / "cihp" / "images" / name, photos / name)
    expected = {0: decode_frames(clip), 1: decode_frames(short_clip)}
    sequence = tmp_path / "sequence"
    sequence.mkdir()
    for index, image in enumerate(expected[0][:3]):
        cv2.imwrite(str(sequence / f"{index:06d}.png"), image)
    seen: dict[int, list[vidparse.StreamFrame]] = {0: [], 1: [], 2: [], 3: []}
    video = tmp_path / "short.mp4"
    for frame in vidparse.stream([clip, short_clip, photos, sequence / "%06d.png"], model="bodypix", workers=2,
                                 outputs=[None, video, None, None]):
        seen[frame.stream].append(frame)
    pictures = [np.asarray(Image.open(path).convert("RGB")) for path in sorted(photos.iterdir())]
    assert pictures[0].shape != pictures[1].shape
    assert [f.seq for f in seen[2]] == [0, 1]
    assert [Path(f.source).name for f in seen[2]] == sorted(p.name for p in photos.iterdir()), "each names its photo"
    with vidparse.Parser(model="bodypix") as parser:
        alone = [parser.parse(picture) for picture in pictures]
    for frame, picture, parsing in zip(seen[2], pictures, alone):
        assert np.array_equal(frame.image, picture) and frame.labels.shape == picture.shape[:2]
        assert np.array_equal(frame.labels, parsing.labels), "as the photo parsed alone"
        assert [(p.box, p.track_id) for p in frame.persons] == [(p.box, None) for p in parsing.persons]
    assert [(f.pts, f.time_s) for f in seen[2]] == [(None, None)] * 2, "photos have no clock, as their stats say"
    for stream, frames in ((0, seen[0]), (1, seen[1])):
        assert [f.seq for f in frames] == list(range(len(expected[stream])))
        assert [f.time_s for f in frames] == pytest.approx([0.1 * i for i in range(len(frames))])
        assert [f.pts for f in frames] == list(range(len(frames)))
        assert {f.source for f in frames} == {str((clip, short_clip)[stream])}
        for frame in frames:
            assert np.array_equal(frame.image, expected[stream][frame.seq][:, :, ::-1])
            assert frame.labels.shape == frame.image.shape[:2]
    assert all(f.persons and f.labels.any() for f in seen[0]), "vtest shows people in every frame"
    assert all(p.track_id is not None for f in seen[0] for p in f.persons), "tracking is on for video"
    assert [f.seq for f in seen[3]] == [0, 1, 2] and all(p.track_id is not None for f in seen[3] for p in f.persons)
    assert any(f.persons for f in seen[3]), "a pattern's frames are a sequence: tracked"
    assert [f.time_s for f in seen[3]] == pytest.approx([0, 0.04, 0.08]), "at 25 fps"
    assert probe_video(video).frames == len(expected[1])


def test_break_leaves_no_process_behind(clip: Path) -> None:
    before = pipeline_processes()
    for _ in vidparse.stream(clip, model="bodypix", workers=2):
        assert pipeline_processes(), "the source and the workers run while frames come"
        break
    assert pipeline_processes() == before
    assert not [t.name for t in threading.enumerate() if t.name.startswith("vidparse-")], "hub and writer threads end"


def test_an_exception_in_the_loop_stops_the_run(clip: Path) -> None:
    before = pipeline_processes()

    def consume() -> None:
        for frame in vidparse.stream(clip, model="bodypix", workers=2):
            raise RuntimeError(f"caller failed on frame {frame.seq}")

    with pytest.raises(RuntimeError, match="frame 0"):
        consume()
    assert pipeline_processes() == before


def test_a_dropped_stream_stops_its_run(clip: Path) -> None:
    """Garbage collection stops a run that was neither finished nor closed."""
    before = pipeline_processes()
    frames = vidparse.stream(clip, model="bodypix", workers=1)
    assert next(frames).seq == 0
    del frames
    gc.collect()
    assert pipeline_processes() == before


def test_a_bad_source_fails_before_any_process_starts(clip: Path, tmp_path: Path) -> None:
    missing = tmp_path / "missing.mp4"
    before = pipeline_processes()
    with pytest.raises(BadInputError):
        vidparse.stream([clip, missing], model="bodypix")
    assert pipeline_processes() == before


def test_outputs_that_would_replace_an_input_or_each_other_are_refused(clip: Path, tmp_path: Path) -> None:
    """One source's output over another's input (a video, a photo) destroyed the input while it was read; two
    sources writing one file left one of the two videos. Both are refused before any process starts, the input
    left as it was."""
    video = cut_clip(VTEST, tmp_path / "input.mkv", 3)
    kept = video.read_bytes()
    before = pipeline_processes()
    with pytest.raises(BadOutputError, match="would overwrite the input"):
        vidparse.stream([video, clip], model="bodypix", outputs=[None, video])
    with pytest.raises(ConfigError, match="two sources write"):
        vidparse.stream([clip, clip], model="bodypix", outputs=[tmp_path / "same.mp4", tmp_path / "." / "same.mp4"])
    photo, other = tmp_path / "photo.png", tmp_path / "other.png"
    for made in (photo, other):
        Image.new("RGB", (64, 48)).save(made)
    kept_photo = photo.read_bytes()
    with pytest.raises(BadOutputError, match="would overwrite the input"):
        vidparse.stream([photo, other], model="bodypix", outputs=[None, photo])
    assert pipeline_processes() == before
    assert video.read_bytes() == kept and not (tmp_path / "same.mp4").exists()
    assert photo.read_bytes() == kept_photo


def test_more_workers_than_cpus_are_warned_of(clip: Path, caplog: pytest.LogCaptureFixture) -> None:
    """As `vidparse run` and `vidparse.run` warn: the API's stream said nothing."""
    cpus = usable_cpus()
    with caplog.at_level(logging.WARNING, logger="vidparse"):
        vidparse.stream(clip, model="bodypix", workers=cpus + 1).close()  # never iterated: no process started
    assert f"{cpus + 1} workers on {plural(cpus, 'usable CPU')}" in caplog.text


def test_an_output_over_a_photo_in_another_sources_folder_is_refused(tmp_path: Path) -> None:
    """A folder's photos are inputs too: one source writing its photo over one of them was not refused (only the
    folder itself and single photos were compared)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    photo, other = folder / "a.png", tmp_path / "other.png"
    for made in (photo, folder / "b.png", other):
        Image.new("RGB", (64, 48)).save(made)
    kept = photo.read_bytes()
    before = pipeline_processes()
    with pytest.raises(BadOutputError, match=f"output {photo} would overwrite the input {photo}"):
        vidparse.stream([folder, other], model="bodypix", outputs=[None, photo])
    assert pipeline_processes() == before and photo.read_bytes() == kept


@pytest.mark.parametrize("limit", [0, -1, 2.5, "3"])
def test_a_frame_limit_that_is_not_a_count_is_refused(clip: Path, tmp_path: Path, limit: Any) -> None:
    """0 or less parsed nothing and ended "ok" without an output; a string failed with a raw TypeError."""
    before = pipeline_processes()
    with pytest.raises(ConfigError, match="max_frames must be a whole number >= 1"):
        vidparse.stream(clip, model="bodypix", max_frames=limit)
    with pytest.raises(ConfigError, match="max_frames must be a whole number >= 1"):
        vidparse.run(clip, tmp_path / "out.mp4", model="bodypix", workers=1, max_frames=limit)
    assert pipeline_processes() == before


def test_a_source_that_fails_stops_alone_and_is_raised_at_the_end(clip: Path) -> None:
    """A camera nobody answers on (no reconnects) beside a file: the file's frames all come, then the camera's
    error is raised; `Stream.failed` names it."""
    camera = f"rtsp://127.0.0.1:{free_port()}/none"
    frames = vidparse.stream([clip, camera], model="bodypix", workers=1, max_frames=3,
                             live={"reconnect_attempts": 0, "open_timeout_s": 3})
    seen = []
    with pytest.raises(VidparseError, match="cannot open rtsp://"):
        for frame in frames:
            seen.append((frame.stream, frame.seq))
    assert seen == [(0, 0), (0, 1), (0, 2)]
    assert list(frames.failed) == [1]


def test_a_model_no_worker_can_load_is_raised_once_not_warned_of_per_source(
        clip: Path, short_clip: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """What stops every source is the error raised: a warning per source repeated it before."""
    model = tmp_path / "bodypix.onnx"
    model.write_bytes(b"\x3a\x03abc")  # whole protobuf, no graph inside: only the workers find it broken
    with caplog.at_level(logging.WARNING, logger="vidparse"), pytest.raises(VidparseError, match="cannot load model"):
        for _ in vidparse.stream([clip, short_clip], model="bodypix", workers=1, model_dir=model):
            pass
    assert "cannot load model" not in caplog.text


@pytest.mark.slow
def test_run_does_what_the_cli_run_does(clip: Path, tmp_path: Path) -> None:
    """One input: its video (every frame) and masks; several inputs, one of them missing: the good one is written
    to ``output/<name>.mp4``, the missing one is in the outcome (exit code 9); with ``check`` (the default) a failure is raised."""
    outcome = vidparse.run(clip, tmp_path / "one.mp4", model="bodypix", workers=1, masks=tmp_path / "masks")
    assert outcome.exit_code == 0 and outcome.streams[0].paths == [tmp_path / "one.mp4"]
    assert probe_video(tmp_path / "one.mp4").frames == 12
    assert len(list((tmp_path / "masks").glob("*.png"))) == 12
    missing = tmp_path / "missing.mp4"
    outcome = vidparse.run([clip, missing], tmp_path / "many", model="bodypix", workers=1, max_frames=3,
                           check=False)
    assert outcome.exit_code == 9 and isinstance(outcome.failed[0].error, BadInputError)
    assert probe_video(tmp_path / "many" / f"{clip.stem}.mp4").frames == 3
    with pytest.raises(BadInputError, match="missing"):
        vidparse.run(missing, tmp_path / "none.mp4", model="bodypix")


SIGTERMED_LOOP = """
import os, signal, sys
import vidparse

for frame in vidparse.stream(sys.argv[1], model="bodypix", workers=2):
    print("frame", frame.seq, flush=True)
    if frame.seq == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # Python's default: the program ends at once, no cleanup
"""


def test_a_program_ended_by_sigterm_leaves_children_that_end_quietly(tmp_path: Path) -> None:
    """SIGTERM, left at Python's default, ends a program mid-loop without any cleanup: its source and workers find
    their pipes broken and end without printing tracebacks, and leave no process behind."""
    clip = cut_clip(VTEST, tmp_path / "vtest40.avi", 40)
    program = subprocess.Popen([sys.executable, "-c", SIGTERMED_LOOP, str(clip)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    stdout, stderr = program.communicate(timeout=120)  # until every child holding the pipes has ended
    assert program.returncode == -signal.SIGTERM and "frame 1" in stdout, stderr
    assert "Traceback" not in stderr, stderr
    deadline = time.monotonic() + 30  # ended children stay zombies until init reaps them
    while subprocess.run(["pgrep", "-g", str(program.pid)], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "a child of the ended program still runs"
        time.sleep(0.2)


UNCLOSED_STREAM = """
import sys, time
import vidparse

stream = vidparse.stream(sys.argv[1], model="bodypix", workers=1, outputs=sys.argv[2])  # a global: never collected
for frame in stream:
    if frame.seq == 5:
        break  # the loop is left, the stream is never closed, and the program ends
time.sleep(3)  # the run goes on meanwhile, until its frames fill the loop's queue and wait there
print("end", flush=True)
"""


def test_a_program_that_ends_with_a_stream_open_exits(tmp_path: Path) -> None:
    """The children leave stop signals to the main process, so multiprocess's exit handler, which would end them with
    SIGTERM, waited for them forever; the engine now stops itself first."""
    clip = cut_clip(VTEST, tmp_path / "vtest40.avi", 40)
    program = subprocess.Popen([sys.executable, "-c", UNCLOSED_STREAM, str(clip), str(tmp_path / "out.mp4")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        stdout, stderr = program.communicate(timeout=60)
    finally:
        subprocess.run(["pkill", "-KILL", "-g", str(program.pid)], capture_output=True)
    assert program.returncode == 0 and "end" in stdout and "Traceback" not in stderr, stderr
    assert "still running: stopping it" in " ".join(stderr.split()), stderr
    assert probe_video(tmp_path / "out.mp4").frames >= 6, "the output keeps what was written"


def test_closing_a_stream_never_iterated_twice_is_fine(clip: Path) -> None:
    """The second close waited for an engine never started: RuntimeError."""
    with vidparse.stream(clip, model="bodypix", workers=1) as frames:
        frames.close()
    assert list(frames) == []


def test_close_from_another_thread_ends_the_loop_there(tmp_path: Path) -> None:
    """A watchdog closing a stream got 'generator already executing', and the loop ran on."""
    before = pipeline_processes()
    clip = cut_clip(VTEST, tmp_path / "vtest40.avi", 40)
    stream = vidparse.stream(clip, model="bodypix", workers=1, outputs=tmp_path / "out.mp4")
    closer = threading.Timer(0.5, stream.close)
    seen = []
    try:
        for frame in stream:
            seen.append(frame.seq)
            if len(seen) == 1:  # frames come: the closing thread starts
                closer.start()
    finally:
        closer.cancel()
    closer.join()
    assert 0 < len(seen) < 40 and seen == list(range(len(seen))), seen
    assert pipeline_processes() == before
    assert probe_video(tmp_path / "out.mp4").frames >= len(seen) - 4  # what was written; frames in flight dropped


INTERRUPTED_RUNS = """
import os, signal, sys, threading, time
import vidparse

def ctrl_c_once_writing():
    while not os.path.exists(f"{sys.argv[2]}/first.mp4"):  # made with the first frame
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=ctrl_c_once_writing, daemon=True).start()
try:
    for name in ("first", "second"):
        vidparse.run(sys.argv[1], f"{sys.argv[2]}/{name}.mp4", model="bodypix", workers=1)
        print("ran", name, flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


INTERRUPTED_WITH_A_FAILED_STREAM = """
import os, signal, sys, threading, time
import vidparse
import vidparse.errors

def ctrl_c_once_writing():
    while not os.path.exists(f"{sys.argv[2]}/vtest.mp4"):
        time.sleep(0.05)
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=ctrl_c_once_writing, daemon=True).start()
try:
    vidparse.run([sys.argv[1], "missing.mp4"], sys.argv[2], model="bodypix", workers=1, check=sys.argv[3] == "1")
    print("returned", flush=True)
except KeyboardInterrupt:
    print("interrupted", flush=True)
except vidparse.errors.VidparseError as exc:
    print("raised", type(exc).__name__, flush=True)
"""


@pytest.mark.parametrize("check", [True, False])
def test_ctrl_c_reaches_the_program_though_a_stream_failed(tmp_path: Path, check: bool) -> None:
    """With a failed stream beside it, an interrupted run raised that stream's error (check) or returned exit code 9:
    a loop over many calls went on."""
    program = subprocess.run([sys.executable, "-c", INTERRUPTED_WITH_A_FAILED_STREAM, str(VTEST), str(tmp_path / "out"),
                              "1" if check else "0"], capture_output=True, text=True, timeout=180)
    assert program.returncode == 0 and program.stdout.split() == ["interrupted"], program.stdout + program.stderr
    assert 0 < probe_video(tmp_path / "out" / "vtest.mp4").frames < 795


def test_ctrl_c_in_run_finishes_the_file_and_reaches_the_program(tmp_path: Path) -> None:
    """A loop over `vidparse.run` calls stops on Ctrl-C: the run in progress closes its file, then the program gets
    the KeyboardInterrupt (it used to get an outcome with exit code 130 and go on to the next call)."""
    program = subprocess.run([sys.executable, "-c", INTERRUPTED_RUNS, str(VTEST), str(tmp_path)], capture_output=True,
                             text=True, timeout=180)
    assert program.returncode == 0 and program.stdout.split() == ["interrupted"], program.stdout + program.stderr
    assert 0 < probe_video(tmp_path / "first.mp4").frames < 795 and not (tmp_path / "second.mp4").exists()


def test_run_into_a_folder_named_with_a_slash_makes_it(clip: Path, tmp_path: Path) -> None:
    """As ``vidparse run clip -o parsed/ --stats stats/``: the folders are made and hold ``<name>.mp4`` and
    ``<name>.jsonl`` (the output failed as having "no extension and is not a folder")."""
    outcome = vidparse.run(clip, f"{tmp_path / 'parsed'}/", model="bodypix", workers=1, max_frames=2,
                           stats=f"{tmp_path / 'stats'}/")
    assert outcome.streams[0].paths == [tmp_path / "parsed" / f"{clip.stem}.mp4"]
    assert probe_video(tmp_path / "parsed" / f"{clip.stem}.mp4").frames == 2
    assert (tmp_path / "stats" / f"{clip.stem}.jsonl").is_file()


def test_a_frames_persons_come_most_confident_first_as_a_photos_do(clip: Path) -> None:
    """A `StreamFrame` is a `Parsing`: its persons most confident first (tracking listed them by track)."""
    scores = [[person.score for person in frame.persons]
              for frame in vidparse.stream(clip, model="bodypix", workers=1, max_frames=4)]
    assert all(len(frame) >= 2 for frame in scores), scores
    assert scores == [sorted(frame, reverse=True) for frame in scores]


@pytest.mark.parametrize("size", [(1, 1), (3, 1), (2, 16386)])
def test_a_photo_h264_cannot_hold_fails_its_video_with_a_hint(size: tuple[int, int], tmp_path: Path) -> None:
    """A photo 1 pixel high made into a video raised OpenCV's assertion (exit code 7, "this is a bug"); one over
    16384 pixels failed at the encoder as a refused frame. Now: BadOutputError naming the limit, and no file."""
    photo = tmp_path / "photo.png"
    Image.new("RGB", size).save(photo)
    with pytest.raises(BadOutputError, match="H.264 takes frames of 2 to 16384 pixels a side") as raised:
        vidparse.run(photo, tmp_path / "photo.mp4", model="bodypix", workers=1)
    assert raised.value.hint and not (tmp_path / "photo.mp4").exists()
