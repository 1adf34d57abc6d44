"""`vidparse run` end to end, as a user runs it: a real process on real video with the real models."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from PIL import Image

from conftest import (VTEST, assert_audio_copied, audio_packets, decode_frames, png_header_only, probe_video, run_cli,
                      run_in_a_private_tmpfs, vtest_h264)
from run_summary import summary_rows
import vidparse
from vidparse.names import plural
from vidparse.pipeline.cpus import usable_cpus
from vidparse.stages.labels import load_label_set
from vidparse.stages.roi import expand_box

MARGIN = 0.15  # configs/default.yaml roi.margin


@pytest.fixture(scope="module")
def parsed_clip(clip: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """The clip parsed with 1 and with 2 workers, masks and stats kept."""
    runs = {}
    for workers in (1, 2):
        out = tmp_path_factory.mktemp(f"w{workers}")
        result = run_cli("run", str(clip), "-o", str(out / "out.mp4"), "--workers", str(workers), "--model", "bodypix",
                         "--masks", str(out / "masks"), "--stats", str(out / "stats.jsonl"))
        assert result.returncode == 0, result.stderr
        runs[workers] = out
    return runs


def test_version_is_printed_alone() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout == f"vidparse {vidparse.__version__}\n", result.stderr


def commands(group: Any, prefix: str = "", groups: bool = False) -> Iterator[tuple[str, Any]]:
    """``vidparse``'s commands (with ``groups``, its groups too, the top one as ""), by the words that call them."""
    if groups:
        yield prefix.strip(), group
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, f"{prefix}{name} ", groups)
        else:
            yield prefix + name, command


def test_every_command_takes_verbose() -> None:
    """The hint of an unexpected failure says to run again with --verbose: every command must take it."""
    import typer.main

    from vidparse.cli import app

    lacking = [name for name, command in commands(typer.main.get_command(app))
               if not any("--verbose" in getattr(param, "opts", ()) for param in command.params)]
    assert not lacking, f"without --verbose: {lacking}"


def test_each_command_is_summed_up_in_one_line_of_the_help() -> None:
    """A docstring's first paragraph is its command's line in `vidparse --help`: its own line breaks showed there."""
    result = run_cli("--help", env={"COLUMNS": "250"})
    commands = [line for line in result.stdout[result.stdout.index("Commands"):].splitlines() if line.startswith("│")]
    assert len(commands) >= 9 and all(re.match(r"│ [a-z-]+ +\S", line) for line in commands), "\n".join(commands)


def test_help_shows_no_value_after_a_flag_and_no_python_type_after_an_option() -> None:
    """typer's rich help put '<bool>' after every flag, --help and --version included, as if it took a value,
    '<list[Path]>' and '<list[str]>' after serve's --allow-dir and --allow-host and in the INPUT row of run and
    batch, and '[INPUT...]...' in their usage."""
    import typer.main
    from typer.testing import CliRunner

    from vidparse.cli import app

    for name, _ in commands(typer.main.get_command(app), groups=True):
        said = CliRunner().invoke(app, [*name.split(), "--help"], env={"COLUMNS": "200"}).output
        options = [line for line in said.splitlines() if line.lstrip("│ *").startswith("-")]
        assert options and "Usage:" in said, (name, said)
        assert not [line for line in options if "<bool>" in line] and "list[" not in said, (name, said)
        assert "...]..." not in said, (name, said)


def test_output_matches_input_size_frames_and_timing(parsed_clip: dict[int, Path], clip: Path) -> None:
    facts, source = probe_video(parsed_clip[1] / "out.mp4"), probe_video(clip)
    assert (facts.codec, facts.pix_fmt, facts.width, facts.height) == ("h264", "yuv420p", 768, 576)
    assert facts.frames == source.frames == 12
    assert facts.pts_s == pytest.approx(source.pts_s)
    assert abs(facts.duration_s - source.duration_s) <= 0.1


def test_masks_are_identical_for_one_and_two_workers(parsed_clip: dict[int, Path]) -> None:
    one = sorted((parsed_clip[1] / "masks").glob("*.png"))
    two = sorted((parsed_clip[2] / "masks").glob("*.png"))
    assert len(one) == len(two) == 12
    assert all(a.read_bytes() == b.read_bytes() for a, b in zip(one, two))


def test_labels_lie_in_person_regions_and_the_rest_is_the_input(parsed_clip: dict[int, Path], clip: Path) -> None:
    stats = [json.loads(line) for line in (parsed_clip[1] / "stats.jsonl").read_text().splitlines()]
    assert [s["seq"] for s in stats] == list(range(12))
    inputs, outputs = decode_frames(clip), decode_frames(parsed_clip[1] / "out.mp4")
    for record in stats[::4]:
        labels = np.array(Image.open(parsed_clip[1] / "masks" / f"{record['seq']:06d}.png"))
        assert record["persons"], "vtest has people in every frame of the clip"
        inside = np.zeros(labels.shape, bool)
        for person in record["persons"]:
            x1, y1, x2, y2 = expand_box(person["box"], MARGIN, labels.shape)
            inside[y1:y2, x1:x2] = True
        assert labels[~inside].max() == 0, "no label outside a person region"
        present = set(np.unique(labels)) - {0}
        assert len(present) >= 8, "many body parts, not a blob"
        assert sum(sum(p["parts"].values()) for p in record["persons"]) == int((labels > 0).sum())
        difference = np.abs(outputs[record["seq"]].astype(int) - inputs[record["seq"]].astype(int)).mean(axis=2)
        far = ~inside
        assert difference[far].mean() < 3, "outside persons the video is the input up to encoder noise"
        labelled = labels > 0
        assert difference[labelled].mean() > difference[far].mean() + 5, "people are recolored"


def test_summary_reports_frames_fps_and_stages(clip: Path, tmp_path: Path) -> None:
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--max-frames", "4", "--model", "bodypix",
                     "--stats", str(tmp_path / "stats.jsonl"))
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / "o.mp4").frames == 4
    records = [json.loads(line) for line in (tmp_path / "stats.jsonl").read_text().splitlines()]
    assert [(r["seq"], r["status"], r["carried_from"]) for r in records] == [(seq, "ok", None) for seq in range(4)]
    persons = [len(r["persons"]) for r in records]
    rows = summary_rows(result.stderr)
    assert rows["frames"] == "4"
    assert rows["persons (all frames / most in one)"] == f"{sum(persons)} / {max(persons)}"
    assert rows["frames with persons"] == str(sum(1 for count in persons if count))
    wall, startup = (float(rows[name].removesuffix(" s"))
                     for name in ("wall time", "start-up (processes, models, first frame)"))
    assert 0 < startup <= wall, "the table rounds to 0.1 s: a short run can show them equal"
    assert all(0 < r["latency_ms"] < wall * 1000 for r in records), "decoded to written, per frame"
    assert float(rows["throughput (after start-up)"].removesuffix(" fps")) > 0
    for stage in ("decode", "detect", "parse", "compose", "encode"):
        assert float(rows[f"{stage} (busy, per frame)"].removesuffix(" ms")) > 0, stage
    serial = [float(v) for v in rows["hub / motion / compose / emit threads (busy, per frame)"].removesuffix(" ms")
              .split(" / ")]
    assert len(serial) == 4 and all(v > 0 for v in serial)
    ceiling = rows["serial ceiling (1 / the busiest thread: more workers cannot go faster)"]
    assert abs(float(ceiling.removesuffix(" fps")) - 1000 / max(serial)) <= 0.5 + 1000 / max(serial) * 0.02


def test_cihp_lite_run_labels_clothes_and_hair_in_cihp_colors(clip: Path, tmp_path: Path) -> None:
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "cihp-lite", "--max-frames", "2",
                     "--masks", str(tmp_path / "masks"), "--stats", str(tmp_path / "stats.jsonl"))
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / "o.mp4").frames == 2
    cihp = load_label_set("cihp")
    with Image.open(tmp_path / "masks" / "000001.png") as mask:
        palette = np.array(mask.getpalette()[:3 * len(cihp)]).reshape(-1, 3)
        labels = np.array(mask)
    assert np.array_equal(palette, cihp.colors[:, ::-1]), "the CIHP palette, as m2fp writes it"
    found = {cihp.names[c] for c in np.unique(labels)}
    assert {"upper_clothes", "pants", "face"} <= found <= set(cihp.names), found
    parts = set().union(*(p["parts"] for p in json.loads((tmp_path / "stats.jsonl").read_text().splitlines()[1])["persons"]))
    assert parts == found - {"background"}


def test_audio_is_kept_and_every_timestamp_is_the_inputs(clip_with_audio: Path, tmp_path: Path) -> None:
    """The AAC priming starts the audio before 0, which a fragment cannot hold: the frames after the first were moved
    by it (the first held 21 ms longer) and the audio started at 0. The finished file has both as the input."""
    result = run_cli("run", str(clip_with_audio), "-o", str(tmp_path / "o.mp4"), "--model", "bodypix")
    assert result.returncode == 0, result.stderr
    facts = probe_video(tmp_path / "o.mp4")
    assert facts.audio_codec == "aac" and facts.frames == 8
    assert facts.pts_s == pytest.approx(probe_video(clip_with_audio).pts_s, abs=1e-6)
    assert_audio_copied(tmp_path / "o.mp4", clip_with_audio)


def test_an_m4v_output_is_an_mp4_with_its_audio(clip_with_audio: Path, tmp_path: Path) -> None:
    """.m4v (Apple's name for an MP4, what iTunes and Final Cut export) was 'an unsupported extension'."""
    result = run_cli("run", str(clip_with_audio), "-o", str(tmp_path / "o.m4v"), "--model", "bodypix",
                     "--max-frames", "3")
    assert result.returncode == 0, result.stderr
    facts = probe_video(tmp_path / "o.m4v")
    assert (facts.frames, facts.audio_codec) == (3, "aac")
    with av.open(str(tmp_path / "o.m4v")) as container:
        assert "mp4" in container.format.name


@pytest.mark.parametrize("folder", ["existing", "new/nested"])
def test_one_video_into_a_folder_is_named_after_it(folder: str, clip: Path, tmp_path: Path) -> None:
    """``-o folder/``: an existing folder, or one the trailing slash asks for."""
    (tmp_path / "existing").mkdir()
    result = run_cli("run", str(clip), "-o", f"{tmp_path / folder}/", "--model", "bodypix", "--max-frames", "2")
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / folder / f"{clip.stem}.mp4").frames == 2


def test_a_refused_run_leaves_no_folder_it_made(clip: Path, tmp_path: Path) -> None:
    """The folders ``-o new/nested/`` and ``--stats`` ask for are made before the run's checks; a refused run removes
    them (and the parents it made), not a folder that was there or one that holds files."""
    (tmp_path / "kept").mkdir()
    refused = run_cli("run", str(tmp_path / "missing.mp4"), "-o", f"{tmp_path / 'new' / 'nested'}/", "--stats",
                      f"{tmp_path / 'kept' / 'stats'}/", "--model", "bodypix")
    assert refused.returncode != 0 and "missing.mp4" in refused.stderr, refused.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["kept"] and not any((tmp_path / "kept").iterdir())
    several = run_cli("run", str(clip), str(tmp_path / "missing.mp4"), "-o", f"{tmp_path / 'out'}/", "--model",
                      "bodypix", "--max-frames", "2")
    assert several.returncode != 0, several.stderr
    assert probe_video(tmp_path / "out" / f"{clip.stem}.mp4").frames == 2, "a folder a stream wrote into is kept"


@pytest.mark.parametrize("folder", ["existing", "new"])
def test_stats_into_a_folder_are_named_after_the_input(folder: str, clip: Path, tmp_path: Path) -> None:
    """``--stats folder/`` with one input: ``folder/<name>.jsonl``, not a file named after the folder."""
    (tmp_path / "existing").mkdir()
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--stats", f"{tmp_path / folder}/",
                     "--model", "bodypix", "--max-frames", "2")
    assert result.returncode == 0, result.stderr
    lines = (tmp_path / folder / f"{clip.stem}.jsonl").read_text().splitlines()
    assert [json.loads(line)["seq"] for line in lines] == [0, 1]


@pytest.mark.parametrize("shm_mb, code, message", [
    (16, 0, r"/dev/shm has room for \d of the 12 frame slots wanted"),
    (2, 7, r"error: cannot allocate \d+ MB of shared memory for frames: No space left on device"),
], ids=["room-for-a-shorter-queue", "no-room"])
def test_a_small_dev_shm_shortens_the_queue_or_is_one_line(shm_mb: int, code: int, message: str, clip: Path,
                                                            tmp_path: Path) -> None:
    """Docker gives containers a 64 MB /dev/shm: frames that do not fit are not found out by a SIGBUS mid-run."""
    result = run_in_a_private_tmpfs(Path("/dev/shm"), shm_mb * 1024,
                                    [sys.executable, "-m", "vidparse", "run", str(clip), "-o", str(tmp_path / "o.mp4"),
                                     "--model", "bodypix", "--workers", "2"])
    assert result.returncode == code, result.stderr
    assert re.search(message, " ".join(result.stderr.split())) and "Traceback" not in result.stderr
    assert code or probe_video(tmp_path / "o.mp4").frames == 12


def test_more_workers_than_cpus_are_run_with_a_warning(clip: Path, tmp_path: Path) -> None:
    cpus = usable_cpus()
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "bodypix", "--max-frames", "1",
                     "--workers", str(cpus + 1))
    assert result.returncode == 0, result.stderr
    assert f"{cpus + 1} workers on {plural(cpus, 'usable CPU')}" in " ".join(result.stderr.split())


def test_a_run_stopped_early_ends_its_audio_with_its_video(tmp_path: Path) -> None:
    """--max-frames stops the audio at the last frame's end, even within a second of the input's end (where a run
    that reached the end keeps the audio's own tail)."""
    clip = vtest_h264(tmp_path / "short.mp4", 15, tone_hz=440)
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--model", "bodypix", "--max-frames", "5")
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / "o.mp4").frames == 5
    packets = audio_packets(tmp_path / "o.mp4")
    end = packets[-1][0] + packets[-1][1]
    assert 0.45 <= end <= 0.5 + 1024 / 48000 * 2, f"audio up to the fifth frame's end (0.5 s), not to 1.5 s: {end:.2f}"
    assert [p[2] for p in packets] == [p[2] for p in audio_packets(clip)[:len(packets)]], "copied, from the start"


STOPPED_NEAR_THE_END = """
import os, signal, sys
from pathlib import Path
from vidparse.config import load_config
from vidparse.runs import RunHooks, Source, run_sources

def on_frame(written, stats):
    if written.frame.seq == 20:  # as Ctrl-C comes, 0.9 s before the input's end
        os.kill(os.getpid(), signal.SIGINT)

run_sources(load_config(None, {"model": "bodypix", "workers": 1}), [Source(sys.argv[1], Path(sys.argv[2]))],
            RunHooks(on_frame=on_frame))
"""


def test_a_run_stopped_near_its_end_ends_its_audio_with_its_video(tmp_path: Path) -> None:
    """A stop within a second or so of the input's end kept the audio to the input's end, over a still picture."""
    clip = vtest_h264(tmp_path / "clip.mp4", 30, size=(384, 288), tone_hz=440)
    program = subprocess.run([sys.executable, "-c", STOPPED_NEAR_THE_END, str(clip), str(tmp_path / "o.mp4")],
                             capture_output=True, text=True, timeout=180)
    assert program.returncode == 0, program.stderr
    frames = probe_video(tmp_path / "o.mp4").frames
    assert 21 <= frames < 30, f"stopped after frame 20: {frames} frames"
    packets = audio_packets(tmp_path / "o.mp4")
    end = packets[-1][0] + packets[-1][1]
    assert frames * 0.1 - 0.05 <= end <= frames * 0.1 + 1024 / 48000 * 2, f"audio to {end:.2f} s, {frames} frames"


@pytest.mark.parametrize("flag, target", [("--stats", "in.mp4"), ("--masks", "frames")],
                         ids=["stats-onto-the-video", "masks-among-the-pattern's-frames"])
def test_side_outputs_do_not_overwrite_the_input(flag: str, target: str, clip: Path, tmp_path: Path) -> None:
    """--stats named the input video, or --masks the folder of a pattern's frames (000001.png...): the run wrote its
    statistics over the video and its mask PNGs over the frames, and said 'wrote'."""
    video = tmp_path / "in.mp4"
    video.write_bytes(clip.read_bytes())
    frames = tmp_path / "frames"
    frames.mkdir()
    for number in (1, 2):
        Image.new("RGB", (64, 48), (number, 0, 0)).save(frames / f"{number:06d}.png")
    given = {"in.mp4": str(video), "frames": f"{frames}/%06d.png"}[target]
    kept = {path: path.read_bytes() for path in (video, *frames.iterdir())}
    result = run_cli("run", given, "-o", str(tmp_path / "o.mp4"), "--model", "bodypix", flag, str(tmp_path / target))
    assert result.returncode == 4, result.stderr
    assert "would overwrite the input" in result.stderr and "Traceback" not in result.stderr
    assert {path: path.read_bytes() for path in kept} == kept


@pytest.mark.parametrize("option", ["input", "-o", "--stats"])
def test_a_name_too_long_for_the_file_system_is_a_user_mistake(option: str, clip: Path, tmp_path: Path) -> None:
    """A path with a name past 255 bytes was "unexpected OSError: File name too long ... this is a bug" (exit 7)."""
    from typer.testing import CliRunner

    from vidparse.cli import app

    long = str(tmp_path / ("x" * 300))
    args = {"input": [f"{long}.mp4", "-o", str(tmp_path / "o.mp4")], "-o": [str(clip), "-o", f"{long}.mp4"],
            "--stats": [str(clip), "-o", str(tmp_path / "o.mp4"), "--stats", f"{long}.jsonl"]}[option]
    result = CliRunner().invoke(app, ["run", *args], env={"COLUMNS": "1000"})
    assert result.exit_code == 2, result.output
    said = " ".join(result.output.split())
    assert f"error: a name in {long}" in said and "hint: a file or folder name is at most 255 bytes" in said, said
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["run", "missing.avi", "-o", "{tmp}/o.mp4"], 3, "error: input missing.avi does not exist"),
        (["run", "", "-o", "{tmp}/o.mp4"], 3, "error: the input is an empty name"),
        (["eval-video", ""], 3, "error: the input is an empty name"),
        (["run", "{notvideo}", "-o", "{tmp}/o.mp4"], 3, "is not a readable video"),
        (["run", "{image}", "-o", "{tmp}/o.gif"], 4, "is neither a video nor an image"),
        (["run", "{clip}", "-o", "{tmp}/nodir/o.mp4"], 4, "error: output directory"),
        (["run", "{clip}", "-o", "{tmp}/in.mp4/o.mp4"], 4, "{tmp}/in.mp4 is a file, not a folder"),
        (["run", "{clip}", "-o", "/sys/o.mp4"], 4, "is not writable"),
        (["run", "{clip}", "-o", "{tmp}/o.gif"], 4, "unsupported extension"),
        (["run", "{clip}", "-o", "{tmp}/newdir"], 4, "has no extension and is not a folder"),
        (["run", "{tmp}/in.mp4", "-o", "{tmp}/./in.mp4"], 4, "would overwrite the input"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--config", "{tmp}/latin1.yaml"], 2, "is not UTF-8 text"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--workers", "0"], 2, "--workers must be between 1 and 1024, got 0 "
                                                                       "hint: give --workers a value in [1, 1024]"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--parse-every", "0"], 2, "--parse-every must be between 1 and 100, got 0 "
                                                                           "hint: give --parse-every a value in [1, 100]"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--config", "{tmp}/zero.yaml"], 2,
         "config key 'keyframes.parse_every' must be between 1 and 100, got 0"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--model", "yolo"], 2, "--model must be one of bodypix, cihp-lite, cihp-net, m2fp"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--config", "{tmp}/missing.yaml"], 2, "config file"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--model-dir", "{tmp}/nothing.onnx"], 5, "does not exist"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--tiles", "1"], 2, "'detector.tiles' is 1"),
        (["run", "{clip}", "{clip}", "-o", "{tmp}/out", "--stats", "{tmp}/s.jsonl"], 2, "2 inputs need a folder for --stats"),
        (["run", "{tmp}/huge.png", "-o", "{tmp}/o.png"], 3, "a photo of more than 179 megapixels"),
        (["bench", "{clip}", "--markdown", "{tmp}/nodir/b.md"], 4, "folder {tmp}/nodir does not exist"),
        (["bench", "{clip}", "--workers", "1,5000"], 2, "whole numbers from 1 to 1024"),
        (["tune", "{clip}", "--write", "{tmp}/nodir/t.yaml"], 4, "folder {tmp}/nodir does not exist"),
        (["tune", "{clip}", "--write", "/sys/t.yaml"], 4, "--write /sys/t.yaml is not writable"),
        (["tune", "{tmp}/in.mp4", "--write", "{tmp}/./in.mp4"], 4, "would overwrite the input"),
        (["batch", "{clip}", "-o", "{tmp}/b", "--cpus-per-task", "1000"], 2, "is more than this machine's"),
        (["batch", "{clip}", "-o", "{tmp}/b", "--retries", "-1"], 2, "--retries must be between 0 and 100, got -1"),
        (["batch", "{clip}", "-o", "{tmp}/in.mp4"], 4, "error: -o {tmp}/in.mp4 is a file; batch writes into a folder "
                                                         "hint: give -o a folder (made if missing)"),
        (["tune", "rtsp://127.0.0.1:9/x", "--seconds", "1"], 3, "Connection refused (3 reconnect attempts failed)"),
        (["bench", "http://127.0.0.1:9/x.ts", "--frames", "3"], 3, "Connection refused (3 reconnect attempts failed)"),
        (["eval-video", "rtsp://127.0.0.1:9/x"], 3, "Connection refused (3 reconnect attempts failed)"),
        (["eval", "{images}", "{labels}", "--label-set", "ccp", "--json", "{tmp}/nodir/r.json"], 4, "folder {tmp}/nodir does not exist"),
        (["eval", "{images}", "{labels}", "--label-set", "ccp", "--json", "{tmp}"], 4,
         "--json {tmp} is a folder hint: give a file name, e.g. {tmp}/out.json"),
        (["train", "{images}", "{labels}", "--label-set", "ccp", "-o", "{tmp}"], 4, "is a folder"),
        (["eval", "{images}", "{labels}", "--label-set", "ccp", "--roi-mode", "crop"], 2, "--roi-mode must be one of roi, whole"),
        (["eval-video", "{clip}", "--temporal-window", "0"], 2, "--temporal-window must be between 1 and 15, got 0"),
        (["bench", "{clip}", "--threads", "5000"], 2, "--threads must be between 0 and 1024, got 5000"),
        (["run", "{clip}", "-o", "{tmp}/o.mp4", "--config", "{tmp}/tab.yaml"], 2,
         "is not valid YAML: line 2, column 1: found character '\\t' that cannot start any token"),
    ],
    ids=["missing-input", "empty-input-name", "eval-video-empty-input-name", "text-as-video", "image-to-gif", "missing-output-dir", "output-dir-is-a-file", "read-only-output",
         "bad-extension", "no-extension", "output-is-the-input", "config-not-utf8", "zero-workers", "flag-out-of-range",
         "config-key-out-of-range",
         "unknown-model", "missing-config", "missing-model-file", "one-tile", "stats-file-for-two-inputs",
         "photo-past-pils-limit",
         "bench-markdown-nowhere",
         "bench-5000-workers", "tune-write-nowhere", "tune-write-read-only", "tune-write-onto-its-input", "batch-more-cpus-than-the-machine", "batch-negative-retries", "batch-into-a-file", "tune-on-an-unreachable-camera", "bench-on-an-unreachable-camera",
         "eval-video-on-an-unreachable-camera", "eval-json-nowhere", "eval-json-into-a-folder", "train-into-a-folder", "eval-roi-mode-named",
         "eval-video-window-named", "bench-5000-threads", "yaml-mistake-located"],
)
def test_user_mistakes_get_one_line_and_an_exit_code(args: list[str], code: int, message: str, clip: Path,
                                                    tmp_path: Path, shared: Path) -> None:
    (tmp_path / "notes.mp4").write_text("hello\n" * 100)
    (tmp_path / "latin1.yaml").write_bytes("# r\u00e9glage\nworkers: 1\n".encode("latin-1"))
    (tmp_path / "zero.yaml").write_text("keyframes:\n  parse_every: 0\n")
    (tmp_path / "tab.yaml").write_text("workers: 1\n\tthreads: 2\n")
    (tmp_path / "in.mp4").write_bytes(clip.read_bytes())
    (tmp_path / "huge.png").write_bytes(png_header_only(20000, 10000))  # 200 megapixels, as a phone may take
    values = {"tmp": tmp_path, "clip": clip, "notvideo": tmp_path / "notes.mp4",
              "image": shared / "data" / "cihp" / "images" / "0002190.jpg",
              "images": shared / "data" / "ccp" / "images", "labels": shared / "data" / "ccp" / "labels"}
    result = run_cli(*[a.format(**values) for a in args])
    assert result.returncode == code, result.stderr
    assert message.format(**values) in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "hint:" in result.stderr
    assert "━" not in result.stdout + result.stderr, "an input that never opened draws no empty progress bar"
    assert not result.stderr.startswith("\n"), "nor an empty line where the progress display started"
    assert not (tmp_path / "o.mp4").exists(), "a failed start leaves no output behind"
    assert (tmp_path / "in.mp4").read_bytes() == clip.read_bytes()


# `python -m vidparse ARGS...` with one module (argv[1]) slow to import: it says "importing" and waits in its import.
SLOW_IMPORT = """
import runpy, sys, time

slow, sys.argv = sys.argv[1], ["vidparse", *sys.argv[2:]]

class SlowImport:
    def find_spec(self, name, path=None, target=None):
        if name == slow:
            print("importing", flush=True)
            time.sleep(60)

sys.meta_path.insert(0, SlowImport())
runpy.run_module("vidparse", run_name="__main__")
"""


def ctrl_c_as_from_a_terminal() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])


@pytest.mark.parametrize("module", ["typer", "vidparse.runs"], ids=["the-command-line", "the-commands-modules"])
def test_ctrl_c_while_starting_exits_130_quietly(module: str, clip: Path, tmp_path: Path) -> None:
    """Ctrl-C while the command line's modules load (before any handler of vidparse's could be in place), or while
    the command's own load (torch, onnxruntime...): exit code 130, no traceback, at most one line."""
    # Ctrl-C as a terminal delivers it to a program it starts: the suite may run where Ctrl-C is ignored or blocked
    # (in the background), which a child would inherit
    process = subprocess.Popen([sys.executable, "-c", SLOW_IMPORT, module, "run", str(clip), "-o", str(tmp_path / "o.mp4")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=ctrl_c_as_from_a_terminal)
    assert process.stdout is not None and process.stdout.readline() == "importing\n"
    signals = [line for line in Path(f"/proc/{process.pid}/status").read_text().splitlines()
               if line.startswith(("SigBlk", "SigIgn"))]
    process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"Ctrl-C did not stop it; its signal masks: {signals}") from None
    assert process.returncode == 130 and "Traceback" not in stderr and len(stderr.strip().splitlines()) <= 1, stderr
    assert not (tmp_path / "o.mp4").exists()


def test_missing_model_says_where_it_looked(clip: Path, tmp_path: Path) -> None:
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"),
                     env={"VIDPARSE_MODEL_DIR": str(tmp_path), "VIDPARSE_CACHE": str(tmp_path / "cache")})
    assert result.returncode == 5
    assert "not found (looked in" in result.stderr and "vidparse models pull" in result.stderr


@pytest.mark.slow
def test_whole_vtest_video(tmp_path: Path) -> None:
    result = run_cli("run", str(VTEST), "-o", str(tmp_path / "vtest.mp4"), "--workers", "2", "--model", "bodypix",
                     timeout=1800)
    assert result.returncode == 0, result.stderr
    facts, source = probe_video(tmp_path / "vtest.mp4"), probe_video(VTEST)
    assert (facts.codec, facts.pix_fmt, facts.width, facts.height, facts.frames) == ("h264", "yuv420p", 768, 576, 795)
    assert abs(facts.duration_s - source.duration_s) <= 0.1
