"""`vidparse run` over several inputs on one worker pool: outputs named after the inputs, the same masks as each
input alone, a `stream` field in every stats line, and a failing stream that stops alone (exit code 9)."""

from __future__ import annotations

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
import pytest
from PIL import Image

from conftest import decode_frames, probe_video, run_cli
from media import ffmpeg
from rtsp import RtspServer, free_port
from vidparse.config import load_config
from vidparse.jobs import stream_name
from vidparse.runs import Source, check_source

FAST = str(Path(__file__).parent / "fast.yaml")
STREAMS_FAILED_EXIT = 9


@pytest.fixture(scope="module")
def other_clip(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 frames from the middle of vtest (other people than the first frames), as H.264."""
    target = tmp_path_factory.mktemp("clips") / "middle.mp4"
    ffmpeg("-ss", "40", "-i", str(shared / "data" / "video" / "vtest.avi"), "-frames:v", "6", "-c:v", "libx264",
           "-an", str(target))
    return target


def masks(folder: Path) -> list[np.ndarray]:
    return [np.asarray(Image.open(path)) for path in sorted(folder.glob("*.png"))]


def stats_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_the_streams_table_shows_source_restarts_where_a_stream_had_them() -> None:
    """The watchdog's restarts of a source were in the one-input summary only: the table showed 0 restarts."""
    from rich.console import Console

    from vidparse.pipeline.ends import StreamEnd
    from vidparse.pipeline.stats import RunStats
    from vidparse.progress import RunReporter
    from vidparse.runs import RunOutcome, StreamOutcome

    def outcome(restarts: tuple[int, int]) -> RunOutcome:
        return RunOutcome([StreamOutcome(name, Source(f"{name}.mp4", None), StreamEnd(index, "ok", stats=RunStats(
            source_restarts=count))) for index, (name, count) in enumerate(zip(("a", "b"), restarts))])

    def rendered(restarts: tuple[int, int]) -> str:
        console = Console(width=200, record=True)
        console.print(RunReporter(console, ["a", "b"]).streams_table(outcome(restarts)))
        return console.export_text()

    assert "source restarts" not in rendered((0, 0))
    table = rendered((0, 2))
    assert "source restarts" in table and table.splitlines()[-2].rstrip(" │").endswith("2"), table


def test_the_streams_table_shows_whole_stream_names_in_a_log_file_and_on_a_narrow_terminal(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The table went to stderr at 80 columns in a file or a pipe (a CI log): URL inputs all read '127.0.0.…' and
    'interru…'. Off a terminal it is printed whole; on a terminal too narrow for it a name folds, never cut."""
    from io import StringIO

    from rich.console import Console

    from vidparse import cli
    from vidparse.pipeline.ends import StreamEnd
    from vidparse.pipeline.stats import RunStats
    from vidparse.progress import RunReporter
    from vidparse.runs import RunOutcome, StreamOutcome

    names = ["127.0.0.1_38251_cam", "127.0.0.1_38252_cam"]
    outcome = RunOutcome([StreamOutcome(name, Source(f"rtsp://{name}", None), StreamEnd(index, "interrupted",
                                                                                        stats=RunStats()))
                          for index, name in enumerate(names)])
    log = StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.setattr(cli, "console", cli.stderr_console())
    cli._streams_summary(RunReporter(cli.console, names), outcome)
    assert all(name in log.getvalue() for name in [*names, "interrupted"]), log.getvalue()
    terminal = Console(force_terminal=True, width=72, record=True, file=StringIO())
    terminal.print(RunReporter(terminal, names).streams_table(outcome))
    first_cells = [line.split("│")[1].strip() for line in terminal.export_text().splitlines() if line.startswith("│")]
    assert "".join(first_cells) == "".join(names), first_cells


def test_two_inputs_on_one_pool_write_what_each_writes_alone(clip: Path, other_clip: Path, tmp_path: Path) -> None:
    """Two files share two workers: each gets OUTDIR/<name>.mp4 with every frame, the same masks (byte for byte)
    as when it runs alone, and stats lines that name their stream."""
    common = ["--workers", "2", "--config", FAST, "--max-frames", "6"]
    for name, path in (("vtest12", clip), ("middle", other_clip)):
        alone = run_cli("run", str(path), "-o", str(tmp_path / f"{name}.mp4"), "--masks", str(tmp_path / name),
                        *common)
        assert alone.returncode == 0, alone.stderr
    together = run_cli("run", str(clip), str(other_clip), "-o", str(tmp_path / "out"), "--masks",
                       str(tmp_path / "masks"), "--stats", str(tmp_path / "stats"), *common)
    assert together.returncode == 0, together.stderr
    for name in ("vtest12", "middle"):
        assert probe_video(tmp_path / "out" / f"{name}.mp4").frames == 6
        shared_pool, alone = masks(tmp_path / "masks" / name), masks(tmp_path / name)
        assert len(shared_pool) == len(alone) == 6
        assert all(np.array_equal(a, b) for a, b in zip(shared_pool, alone)), f"{name}: masks differ"
        lines = stats_lines(tmp_path / "stats" / f"{name}.jsonl")
        assert [line["seq"] for line in lines] == list(range(6)) and {line["stream"] for line in lines} == {name}
    assert "vtest12" in together.stderr and "middle" in together.stderr, "a summary row per stream"


def test_a_failing_input_stops_alone_with_exit_code_9(clip: Path, tmp_path: Path) -> None:
    """A good file, a missing file and a camera nobody answers on (no reconnects): the file is parsed to its end,
    each failure is one error line with a hint, and the exit code says a stream failed. A folder with one
    unreadable photo is no failure: its row counts the photo skipped."""
    camera = f"rtsp://127.0.0.1:{free_port()}/none"
    album = tmp_path / "album"
    album.mkdir()
    Image.fromarray(decode_frames(clip)[0][:, :, ::-1]).save(album / "a.png")
    (album / "notes.jpg").write_text("hello")
    result = run_cli("run", str(clip), str(album), str(tmp_path / "missing.avi"), camera, "-o", str(tmp_path / "out"),
                     "--stats", str(tmp_path / "stats"), "--workers", "1", "--config", FAST, "--max-frames", "4",
                     "--reconnect-attempts", "0", "--open-timeout", "3", timeout=300)
    assert result.returncode == STREAMS_FAILED_EXIT, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "Traceback" not in result.stderr
    assert errors[0].startswith("error: stream missing: input") and "does not exist" in errors[0]
    assert errors[1].startswith("error: stream 127.0.0.1_") and "cannot open rtsp://" in errors[1]
    assert "WARNING stream 127.0.0.1_" in result.stderr  # said when it fails: the other streams go on
    assert result.stderr.count("hint:") == 2
    assert probe_video(tmp_path / "out" / "vtest12.mp4").frames == 4
    assert [line["stream"] for line in stats_lines(tmp_path / "stats" / "vtest12.jsonl")] == ["vtest12"] * 4
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in result.stderr.splitlines() if line.count("│") > 5}
    assert rows["album"][0] == "ok" and rows["album"][-1] == "1" and rows["vtest12"][-1] == "0", rows


def test_a_pool_no_worker_can_start_still_shows_every_streams_row(clip: Path, tmp_path: Path) -> None:
    """A model file that only the workers find broken stops every stream at once: the table (each stream failed)
    came no more, only the error line. Now the table, then the missing input's own line and the model's, exit 5.
    The file is whole protobuf whose graph (field 7) is no graph: the check before the run reads no deeper. The
    model's error is said once: a warning per stream repeated it before the table."""
    model = tmp_path / "bodypix.onnx"
    model.write_bytes(b"\x3a\x03abc")
    result = run_cli("run", str(clip), str(tmp_path / "missing.avi"), "-o", str(tmp_path / "out"), "--workers", "1",
                     "--config", FAST, "--model-dir", str(model))
    assert result.returncode == 5, result.stderr
    rows = {line.split("│")[1].strip(): [cell.strip() for cell in line.split("│")[2:-1]]
            for line in result.stderr.splitlines() if line.count("│") > 5}
    assert rows["vtest12"][0] == "failed" and rows["missing"][0] == "failed", result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and errors[0].startswith("error: stream missing: input"), errors
    assert errors[1].startswith(f"error: cannot load model {model}"), errors
    assert result.stderr.index("┃ stream") < result.stderr.index(errors[0]) and "Traceback" not in result.stderr
    assert result.stderr.count("cannot load model") == 1, result.stderr


@pytest.mark.slow
def test_the_command_line_options_apply_to_every_source_of_a_sources_file(clip: Path, tmp_path: Path) -> None:
    """--masks, --stats, --instances and --max-frames with --sources: folders with one entry per source, and the
    limit for each source that sets none of its own (the second keeps its own limit and its own output file, in a
    folder made for it)."""
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - {{input: {clip}, name: a}}\n"
                       f"  - {{input: {clip}, name: b, max_frames: 2, output: {tmp_path / 'own' / 'b-file.mp4'}}}\n")
    result = run_cli("run", "--sources", str(sources), "-o", str(tmp_path / "out"), "--workers", "1", "--config",
                     FAST, "--tracking", "--masks", str(tmp_path / "masks"), "--stats", str(tmp_path / "stats"),
                     "--instances", str(tmp_path / "ids"), "--max-frames", "3", timeout=300)
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / "out" / "a.mp4").frames == 3
    assert probe_video(tmp_path / "own" / "b-file.mp4").frames == 2 and not (tmp_path / "out" / "b.mp4").exists()
    for name, frames in (("a", 3), ("b", 2)):
        assert len(list((tmp_path / "masks" / name).glob("*.png"))) == frames
        assert len(list((tmp_path / "ids" / name).glob("*.png"))) == frames
        assert [line["stream"] for line in stats_lines(tmp_path / "stats" / f"{name}.jsonl")] == [name] * frames


@pytest.mark.parametrize("entries, message", [
    ("  - input: a.mp4\n    colour: red\n", "source 1 has unknown key 'colour'"),
    ("  - input: a.mp4\n    name: ../escape\n", "source 1: name '../escape' must be a plain name, not a path"),
    ("  - {input: a.mp4, output: same.mp4}\n  - {input: b.mp4, output: ./same.mp4}\n", "two sources write"),
    ("  - {input: a.mp4, max_frames: true}\n", "source 1: max_frames must be a whole number >= 1, got True"),
    ("  - {input: a.mp4, output: [x]}\n", "source 1: output must be a path or a name, got ['x']"),
    ("  - {input: a.mp4, output: a1.mp4, stats: s.jsonl}\n  - {input: b.mp4, output: b1.mp4, stats: ./s.jsonl}\n",
     "two sources write"),
    ("  - input: a.mp4\n  - input: b.mp4\n    colour: red\n", "source 2 has unknown key 'colour'"),
    ("  - input: a.mp4\n\t- input: b.mp4\n", "is not valid YAML"),
], ids=["unknown-key", "name-as-path", "one-output-twice", "yes-as-a-limit", "a-list-as-output", "one-stats-file-twice",
        "a-bad-source-after-a-good-one", "not-yaml"])
def test_a_sources_file_is_checked_before_any_work(entries: str, message: str, tmp_path: Path) -> None:
    """A mistake in the file fails before any output is made: not even the -o and --stats folders (a trailing /
    asks for folders)."""
    sources = tmp_path / "sources.yaml"
    sources.write_text("sources:\n" + entries)
    result = run_cli("run", "--sources", str(sources), "-o", f"{tmp_path / 'out'}/", "--stats", f"{tmp_path / 'stats'}/")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "hint:" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "stats").exists()
    assert not (tmp_path.parent / "escape.mp4").exists()


def test_a_sources_file_names_its_outputs_as_the_command_line_and_a_bad_folder_fails_its_source_alone(
        clip: Path, tmp_path: Path) -> None:
    for folder in ("d1", "d2"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "clip.avi").symlink_to(clip)
    (tmp_path / "afile").write_text("a file where a folder should be")
    sources = tmp_path / "sources.yaml"
    sources.write_text(f"sources:\n  - input: {tmp_path / 'd1' / 'clip.avi'}\n  - input: {tmp_path / 'd2' / 'clip.avi'}\n"
                       f"  - {{input: {clip}, name: boxed, output: {tmp_path / 'afile' / 'x.mp4'}}}\n")
    result = run_cli("run", "--sources", str(sources), "-o", str(tmp_path / "out"), "--config", FAST,
                     "--max-frames", "2", timeout=300)
    assert result.returncode == 9, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: stream boxed: cannot create folder {tmp_path / 'afile'}: File exists"], result.stderr
    assert [probe_video(tmp_path / "out" / name).frames for name in ("clip.mp4", "clip_2.mp4")] == [2, 2]


@pytest.mark.slow
def test_files_and_a_camera_on_one_pool_and_the_camera_lost_for_good(clip: Path, other_clip: Path,
                                                                      rtsp_server: RtspServer, tmp_path: Path) -> None:
    """Two files and an RTSP camera (a sources file, per-source frame limits) on two workers. The camera's server
    is killed for good: only that stream stops (with what it wrote so far playable), the files are complete, and
    the exit code is 9."""
    out = tmp_path / "out"
    (tmp_path / "sources.yaml").write_text(
        f"sources:\n"
        f"  - {{input: {clip}, max_frames: 8, masks: {out / 'a_masks'}}}\n"
        f"  - {{input: {other_clip}, name: middle, masks: {out / 'b_masks'}}}\n"
        f"  - {{input: '{rtsp_server.url}', name: camera, policy: drop, stats: {tmp_path / 'camera.jsonl'}}}\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "vidparse", "run", "--sources", str(tmp_path / "sources.yaml"), "-o", str(out),
         "--workers", "2", "--config", FAST, "--reconnect-attempts", "1", "--open-timeout", "2", "--read-timeout",
         "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
        start_new_session=True)
    try:
        camera_stats = tmp_path / "camera.jsonl"
        deadline = time.monotonic() + 120
        while not (camera_stats.exists() and len(camera_stats.read_text().splitlines()) >= 3):
            assert time.monotonic() < deadline and process.poll() is None, "the camera stream made no progress"
            time.sleep(0.1)
        rtsp_server.kill()
        _, stderr = process.communicate(timeout=180)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == STREAMS_FAILED_EXIT, stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert error.startswith("error: stream camera:") and "Traceback" not in stderr
    assert probe_video(out / "vtest12.mp4").frames == len(list((out / "a_masks").glob("*.png"))) == 8
    assert probe_video(out / "middle.mp4").frames == len(list((out / "b_masks").glob("*.png"))) == 6
    assert probe_video(out / "camera.mp4").frames == len(stats_lines(camera_stats)) >= 3


def test_policy_drop_on_a_file_is_warned_not_on_a_camera(clip: Path, tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    """A file is read as fast as it decodes: dropping what comes while the workers are busy drops most frames."""
    drop = replace(load_config(None), policy="drop")
    check_source(Source(str(clip), tmp_path / "o.mp4"), drop)
    assert "vtest12: policy drop on a file or photos drops every frame" in caplog.text
    caplog.clear()
    check_source(Source(f"rtsp://127.0.0.1:{free_port()}/cam", tmp_path / "c.mp4"), drop)
    check_source(Source(str(clip), tmp_path / "o.mp4"), load_config(None))
    assert "policy drop" not in caplog.text


def test_an_output_never_replaces_another_streams_input(clip: Path, tmp_path: Path) -> None:
    """The first input's output would be OUTDIR/vtest12.mp4, which is the second input: that stream fails, the
    file is kept."""
    out = tmp_path / "out"
    out.mkdir()
    other = out / clip.name.replace(clip.suffix, ".mp4")
    shutil.copy(clip, other)
    before = other.read_bytes()
    result = run_cli("run", str(clip), str(other), "-o", str(out), "--model", "bodypix", "--max-frames", "2")
    assert result.returncode == STREAMS_FAILED_EXIT, result.stderr
    assert f"would overwrite the input {other}" in " ".join(result.stderr.split())
    assert other.read_bytes() == before and probe_video(out / f"{other.stem}_2.mp4").frames == 2


def test_a_pattern_of_photos_is_named_by_its_folder_a_file_named_like_one_by_its_stem(tmp_path: Path) -> None:
    """Files named "clip [1080p].mp4" or "take 100%.mov" were named after their folder, as patterns are: two of them
    wrote <folder>.mp4 and <folder>_2.mp4."""
    assert [stream_name(p) for p in ("photos/*.jpg", "shots/%06d.png", "clip.mp4")] == ["photos", "shots", "clip"]
    files = [tmp_path / "clip [1080p].mp4", tmp_path / "take 100%.mov", tmp_path / "what?.avi"]
    for file in files:
        file.write_bytes(b"")
    assert [stream_name(str(file)) for file in files] == ["clip [1080p]", "take 100%", "what?"]


def test_a_signed_url_names_its_outputs_within_a_file_name_s_length(tmp_path: Path) -> None:
    """A URL's whole query went into its name: a signed URL (hundreds of characters) made 'unexpected OSError: File
    name too long' (exit 7) and ended every stream of the run. Its name is now cut to a length any file system takes,
    with room for the longest suffix vidparse adds (a live segment's start time)."""
    query = "&".join(f"X-Amz-Param{index}={'a' * 40}" for index in range(8))
    name = stream_name(f"https://bucket.example.com/videos/clip.mp4?{query}")
    assert name.startswith("bucket.example.com_videos_clip_X-Amz-Param0_aaaa")
    (tmp_path / f"{name}_20261123T041500.mp4").touch()
    (tmp_path / f"{name}_12_masks").mkdir()


def test_a_file_s_url_is_named_without_its_suffix_as_the_file_is() -> None:
    """http://host/clip.mp4 named its output 'host_clip.mp4.mp4'."""
    assert [stream_name(url) for url in ("http://127.0.0.1:8000/media/clip.mp4", "rtsp://cam/live.sdp?channel=2",
                                         "rtsp://cam:554/Streaming/Channels/101", "https://cdn.example/v1.2/")] == [
        "127.0.0.1_8000_media_clip", "cam_live_channel_2", "cam_554_Streaming_Channels_101", "cdn.example_v1.2"]
    assert stream_name("rtsp://[::1:554/x.sdp") == "1_554_x.sdp", "a malformed URL is named as typed"


def test_secrets_in_a_url_s_query_name_no_output_and_show_in_no_line() -> None:
    """Only a URL's user:password@ was taken out: `?token=s3cret` named `..._token_s3cret.mp4` and the stats'
    `stream`, and showed in every log line and error; a camera's `?user=admin&pwd=` and a signed URL's signature
    alike. The values of secret parameters are hidden; the others (`channel=1`) still tell cameras apart."""
    from vidparse.stages.source import without_credentials

    url = "rtsp://cam.example.com/live?channel=1&access_token=s3cret&keyframes=1&pwd=hunter2;X-Amz-Signature=ab12"
    assert stream_name(url) == "cam.example.com_live_channel_1_access_token_keyframes_1_pwd_X-Amz-Signature"
    line = f"could not open {url} (401), retrying"
    assert without_credentials(line) == ("could not open rtsp://cam.example.com/live?channel=1&access_token=***"
                                         "&keyframes=1&pwd=***;X-Amz-Signature=*** (401), retrying")


def test_names_with_brackets_are_shown_as_typed_in_the_progress_and_the_tables() -> None:
    """Rich read "clip [final]" as markup and showed "clip " in the run's progress line and streams table, and in
    the batch's failure line and summary table."""
    from rich.console import Console

    from vidparse.batch.manifest import Record
    from vidparse.batch.progress import BatchProgress, summary_table
    from vidparse.pipeline.ends import StreamEnd
    from vidparse.pipeline.stats import RunStats
    from vidparse.progress import RunReporter
    from vidparse.runs import RunOutcome, StreamOutcome

    console = Console(width=200, record=True)
    reporter = RunReporter(console, ["clip [final]"])
    console.print(reporter.progress.tasks[0].description)
    console.print(reporter.streams_table(RunOutcome([StreamOutcome("clip [final]", Source("clip [final].mp4", None),
                                                                   StreamEnd(0, "ok", stats=RunStats()))])))
    failed = Record("talk [draft].mp4", "failed", error="cannot read [bad] packet")
    BatchProgress(console).finished(failed)
    console.print(summary_table([failed], []))
    text = console.export_text()
    assert text.count("clip [final]") == 2 and text.count("talk [draft].mp4") == 1, text
    assert text.count("cannot read [bad] packet") == 2, text
