"""Faults injected into real runs on real media: workers killed or hung, damaged files, bad models, full disks,
4K under a memory budget. Each checks the exit code, the one-line message and what was written."""

from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import av
import pytest
from PIL import Image

from conftest import (VTEST, cut_clip, decode_frames, make_audio_only, probe_video, run_cli, run_in_a_private_tmpfs,
                      vtest_h264, wait_for_stats)

DEGRADED, BAD_INPUT, BAD_OUTPUT, MODEL = 8, 3, 4, 5


def decode_damaged(path: Path) -> tuple[int, int]:
    """Frames FFmpeg can decode from a (possibly damaged) file, and the packets it cannot decode."""
    frames = failed = 0
    with av.open(str(path)) as container:
        for packet in container.demux(video=0):
            try:
                frames += len(packet.decode())
            except av.error.InvalidDataError:
                failed += 1
    return frames, failed


def decodable_frames(path: Path) -> int:
    return decode_damaged(path)[0]


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def children_mapping(parent: int, library: str, without: str | None = None) -> list[int]:
    """Children of ``parent`` that loaded ``library`` (and not ``without``)."""
    pids = []
    for task in Path(f"/proc/{parent}/task").glob("*"):
        for child in (task / "children").read_text().split():
            try:
                maps = Path(f"/proc/{child}/maps").read_text()
            except OSError:
                continue
            if library in maps and (without is None or without not in maps):
                pids.append(int(child))
    return pids


def worker_pids(parent: int) -> list[int]:
    """The parser workers: the only children that load onnxruntime."""
    return children_mapping(parent, "onnxruntime")


def source_pid(parent: int) -> int:
    """The source: it decodes (FFmpeg) but never loads onnxruntime."""
    (pid,) = children_mapping(parent, "libavformat", without="onnxruntime")
    return pid


FAST = str(Path(__file__).parent / "fast.yaml")


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vidparse", "run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"})


def start_with_frame_timeout(clip: Path, tmp_path: Path, workers: int) -> subprocess.Popen:
    """A run whose stalls count after 3 s, once it has written three frames."""
    config = tmp_path / "fast-timeout.yaml"
    config.write_text(Path(FAST).read_text() + "frame_timeout_s: 3\n")
    stats = tmp_path / "stats.jsonl"
    process = start(str(clip), "-o", str(tmp_path / "o.mp4"), "--workers", str(workers), "--stats", str(stats),
                    "--config", str(config))
    wait_for_stats(stats, 3)
    return process


@pytest.fixture(scope="module")
def clip40(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_clip(VTEST, tmp_path_factory.mktemp("clips") / "vtest40.avi", 40)


@pytest.mark.slow
def test_sigkill_of_a_worker_mid_run_loses_no_frame(clip40: Path, tmp_path: Path) -> None:
    stats = tmp_path / "stats.jsonl"
    process = start(str(clip40), "-o", str(tmp_path / "o.mp4"), "--workers", "2", "--stats", str(stats),
                    "--config", FAST)
    wait_for_stats(stats, 3)
    victims = worker_pids(process.pid)
    assert len(victims) == 2
    os.kill(victims[0], signal.SIGKILL)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == DEGRADED, stderr
    assert "died (exit code -9)" in stderr and "degraded run" in stderr
    assert probe_video(tmp_path / "o.mp4").frames == 40
    records = [json.loads(line) for line in stats.read_text().splitlines()]
    assert [(r["seq"], r["status"]) for r in records] == [(seq, "ok") for seq in range(40)], "each parsed, once"


@pytest.mark.slow
def test_a_hung_worker_is_replaced_after_the_frame_timeout(clip40: Path, tmp_path: Path) -> None:
    process = start_with_frame_timeout(clip40, tmp_path, workers=2)
    os.kill(worker_pids(process.pid)[0], signal.SIGSTOP)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == DEGRADED, stderr
    assert "hung for more than 3 s" in stderr
    assert probe_video(tmp_path / "o.mp4").frames == 40


@pytest.mark.slow
def test_a_stalled_source_is_restarted_where_it_left_off(clip40: Path, tmp_path: Path) -> None:
    process = start_with_frame_timeout(clip40, tmp_path, workers=1)
    os.kill(source_pid(process.pid), signal.SIGSTOP)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert "source 0 sent nothing for 3 s; restarting it" in stderr
    facts = probe_video(tmp_path / "o.mp4")
    assert facts.frames == 40 and facts.pts_s == pytest.approx([i / 10 for i in range(40)]), "no frame twice"


@pytest.mark.slow
def test_a_killed_source_is_said_to_be_killed_not_a_damaged_input(clip40: Path, tmp_path: Path) -> None:
    process = start_with_frame_timeout(clip40, tmp_path, workers=1)
    os.kill(source_pid(process.pid), signal.SIGKILL)  # as the out-of-memory killer would
    _, stderr = process.communicate(timeout=300)
    assert process.returncode != 0 and "Traceback" not in stderr, stderr
    said = " ".join(stderr.split())
    assert "the source process died (exit code -9)" in said and "killed (SIGKILL): out of memory?" in said, said
    assert "damaged" not in said


def test_corrupted_bytes_in_the_middle_are_skipped(h264_clip: Path, tmp_path: Path) -> None:
    """Random bytes over the payload of 10 H.264 packets (the container stays intact): those packets cannot be
    decoded, the rest can."""
    damaged = tmp_path / "damaged.mp4"
    data = bytearray(h264_clip.read_bytes())
    with av.open(str(h264_clip)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size][15:25]
    rng = random.Random(7)
    for position, size in packets:
        data[position + 4:position + size] = bytes(rng.randrange(256) for _ in range(size - 4))  # after the NAL size
    damaged.write_bytes(bytes(data))
    result = run_cli("run", str(damaged), "-o", str(tmp_path / "o.mp4"), "--workers", "2", "--config", FAST)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    frames, failed = decode_damaged(damaged)
    assert probe_video(tmp_path / "o.mp4").frames == frames > 30
    skipped = re.search(r"undecodable packets skipped\s*│\s*(\d+)", result.stderr)
    assert skipped and int(skipped[1]) == failed > 0, "the summary counts the packets it skipped"


def test_a_file_none_of_whose_frames_decode_is_a_bad_input(tmp_path: Path) -> None:
    """Noise over every video packet: not a run of 0 frames that leaves the input's audio alone, but one line, and
    the probe that finds it does not warn of every packet it skipped."""
    clip = vtest_h264(tmp_path / "in.mp4", 20, size=(192, 144), tone_hz=440)
    noisy = tmp_path / "noisy.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-c", "copy", "-bsf:v", "noise=amount=2", str(noisy)],
                   check=True)
    assert decodable_frames(noisy) == 0
    result = run_cli("run", str(noisy), "-o", str(tmp_path / "o.mp4"), "--config", FAST)
    assert result.returncode == BAD_INPUT, result.stderr
    assert error_lines(result.stderr) == [f"error: no frame of {noisy} could be decoded"]
    assert "hint: the file is damaged" in result.stderr and "skipped an undecodable packet" not in result.stderr
    assert not (tmp_path / "o.mp4").exists()


def test_packets_undecodable_before_the_first_frame_are_warned_of_once_each(tmp_path: Path) -> None:
    """The first three packets garbled: the probe in the main process decodes past them too, but only the source
    warns of them."""
    clip = tmp_path / "in.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(VTEST), "-frames:v", "30", "-vf", "scale=192:144", "-c:v",
                    "libx264", "-g", "10", "-pix_fmt", "yuv420p", str(clip)], check=True)
    data = bytearray(clip.read_bytes())
    with av.open(str(clip)) as container:
        packets = [(p.pos, p.size) for p in container.demux(video=0) if p.size][:3]
    rng = random.Random(7)
    for position, size in packets:
        data[position + 4:position + size] = bytes(rng.randrange(256) for _ in range(size - 4))  # after the NAL size
    clip.write_bytes(bytes(data))
    assert decode_damaged(clip) == (20, 3)
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--config", FAST)
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("skipped an undecodable packet") == 3, result.stderr


def h264_faststart(target: Path, frames: int) -> Path:
    """The first ``frames`` vtest frames as a small H.264 MP4 (B-frames) with its index first, as a cut one keeps it."""
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(VTEST), "-frames:v", str(frames), "-vf", "scale=128:96",
                    "-c:v", "libx264", "-movflags", "+faststart", str(target)], check=True)
    return target


@pytest.mark.parametrize("suffix", [".avi", ".mp4"])  # MS-MPEG4 in AVI; H.264 in MP4, whose cut last packet fails
def test_a_truncated_file_ends_cleanly_with_what_was_decoded(suffix: str, clip40: Path, tmp_path: Path) -> None:
    whole = clip40 if suffix == ".avi" else h264_faststart(tmp_path / "whole.mp4", 40)
    truncated = tmp_path / f"truncated{suffix}"
    truncated.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.6)])
    result = run_cli("run", str(truncated), "-o", str(tmp_path / "o.mp4"), "--config", FAST)
    assert result.returncode == 0, result.stderr
    frames = probe_video(tmp_path / "o.mp4").frames
    assert frames == decodable_frames(truncated) and 10 < frames < 40
    assert f"ended after {frames} of the 40 frames its header announces: the file may be truncated" in result.stderr


def test_a_file_with_no_video_stream(tmp_path: Path) -> None:
    audio = make_audio_only(tmp_path / "tone.mp4")
    result = run_cli("run", str(audio), "-o", str(tmp_path / "o.mp4"))
    assert result.returncode == BAD_INPUT
    assert error_lines(result.stderr) == [f"error: input {audio} has no video stream"]
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("size", ["1:400", "1:1"])
def test_a_video_one_pixel_wide_is_refused_with_one_line(size: str, tmp_path: Path) -> None:
    thin = tmp_path / "thin.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(VTEST), "-frames:v", "3", "-vf", f"scale={size}", "-c:v", "ffv1",
                    str(thin)], check=True)
    result = run_cli("run", str(thin), "-o", str(tmp_path / "o.mp4"))
    assert result.returncode == BAD_INPUT, result.stderr
    width, height = size.split(":")
    assert error_lines(result.stderr) == [f"error: input {thin} has {width}x{height} frames, too small to parse or encode"]
    assert "hint:" in result.stderr and not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_broken_model_file_is_a_model_error(damage: str, clip: Path, tmp_path: Path, shared: Path) -> None:
    model = tmp_path / "bodypix.onnx"
    original = (shared / "models" / "bodypix" / "MobileNetV1-x050-stride16.onnx").read_bytes()
    model.write_bytes(original[: len(original) // 3] if damage == "truncated" else os.urandom(50_000))
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--model-dir", str(model))
    assert result.returncode == MODEL, result.stderr
    assert len(error_lines(result.stderr)) == 1 and "cannot load model" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_full_disk_stops_with_a_clear_message_and_outputs_that_read_to_their_end(small_disk: Path,
                                                                                     tmp_path: Path) -> None:
    """The MP4 ends at its last whole fragment (browsers stop at a cut one), no mask PNG is half written, every stats
    line parses."""
    clip = vtest_h264(tmp_path / "in.mp4", 80)
    result = run_cli("run", str(clip), "-o", str(small_disk / "o.mp4"), "--masks", str(small_disk / "masks"),
                     "--stats", str(small_disk / "stats.jsonl"), "--config", FAST)
    assert result.returncode == BAD_OUTPUT, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in result.stderr
    assert subprocess.run(["ffmpeg", "-v", "error", "-i", str(small_disk / "o.mp4"), "-f", "null", "-"],
                          capture_output=True, text=True).stderr == "", "no cut fragment"
    assert 0 < decodable_frames(small_disk / "o.mp4") < 80, "what was written before the disk filled plays"
    for mask in (small_disk / "masks").glob("*.png"):
        with Image.open(mask) as image:
            image.load()
    assert [json.loads(line)["seq"] for line in (small_disk / "stats.jsonl").read_text().splitlines()]


def test_stats_to_a_device_that_refuses_writes_ends_with_one_line(clip: Path, tmp_path: Path) -> None:
    """--stats /dev/full: after the failed write the run read the device back to cut the file to whole lines, and
    /dev/full reads as endless zeros: it never ended, its memory growing."""
    result = run_cli("run", str(clip), "-o", str(tmp_path / "o.mp4"), "--stats", "/dev/full", "--model", "bodypix",
                     "--max-frames", "2", timeout=60)
    assert result.returncode == BAD_OUTPUT, result.stderr
    assert "No space left on device" in error_lines(result.stderr)[0] and "Traceback" not in result.stderr


def test_no_room_for_shared_memory_is_one_clear_error(clip: Path, tmp_path: Path) -> None:
    def tiny_files() -> None:  # /dev/shm blocks are files: this makes the frame pool impossible to allocate
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    result = subprocess.run([sys.executable, "-m", "vidparse", "run", str(clip), "-o", str(tmp_path / "o.mp4")],
                            capture_output=True, text=True, timeout=120, preexec_fn=tiny_files,
                            env={**os.environ, "COLUMNS": "200"})
    assert result.returncode == 7
    assert error_lines(result.stderr)[0].startswith("error: cannot allocate") and "--shm-size" in result.stderr
    assert "ulimit -f" in result.stderr and "Traceback" not in result.stderr, "not the resource tracker's KeyError"


def test_an_output_directory_that_vanishes_mid_run(clip40: Path, tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    stats = tmp_path / "stats.jsonl"
    process = start(str(clip40), "-o", str(out_dir / "o.mp4"), "--stats", str(stats), "--config", FAST)
    wait_for_stats(stats, 2)
    shutil.rmtree(out_dir)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == BAD_OUTPUT
    assert error_lines(stderr) == [f"error: the output directory {out_dir} vanished during the run"]


def test_an_output_folder_of_several_inputs_that_vanishes_mid_run(clip40: Path, tmp_path: Path) -> None:
    """A video and a folder of photos into one -o folder, removed mid-run: the photos' error said only 'writing
    .../p003.jpg failed', and 'wrote' named the files that went with the folder."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for index, image in enumerate(decode_frames(clip40)[:30]):
        Image.fromarray(image[:, :, ::-1]).save(photos / f"p{index:03d}.jpg")
    out_dir, stats = tmp_path / "out", tmp_path / "stats"
    process = start(str(clip40), str(photos), "-o", f"{out_dir}/", "--stats", f"{stats}/", "--workers", "1",
                    "--config", FAST)
    wait_for_stats(stats / "vtest40.jsonl", 2)
    shutil.rmtree(out_dir)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 9, stderr
    assert error_lines(stderr) == [f"error: stream vtest40: the output directory {out_dir} vanished during the run",
                                   f"error: stream photos: the output directory {out_dir / 'photos'} vanished during "
                                   "the run"], stderr
    assert "wrote" not in stderr and "Traceback" not in stderr


@pytest.mark.slow
def test_4k_runs_within_its_memory_budget(shared: Path, tmp_path: Path) -> None:
    """24 4K frames, enough to fill every slot and x264's lookahead: without a budget the tree's peak is over the
    budget, with it it stays under (docs/faults.md has the measured peaks)."""
    import cv2

    from vidparse.pipeline.memory import PeakMemory

    frames, budget = 24, 1550
    clip = tmp_path / "vtest4k.mp4"
    with av.open(str(VTEST)) as src, av.open(str(clip), "w") as dst:
        stream = dst.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = 3840, 2160, "yuv420p"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            big = cv2.resize(frame.to_ndarray(format="bgr24"), (3840, 2160))
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(big, format="bgr24")))
        dst.mux(stream.encode(None))
    peaks = {}
    for name, extra in (("unbounded", []), ("budget", ["--max-memory", str(budget)])):
        process = start(str(clip), "-o", str(tmp_path / f"{name}.mp4"), "--workers", "1", "--model", "bodypix",
                        "--queue-size", "16", *extra)
        with PeakMemory(process.pid) as memory:
            _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr
        assert probe_video(tmp_path / f"{name}.mp4").frames == frames
        peaks[name] = memory.peak_mb
    print(f"peak MB: {peaks}")
    assert peaks["unbounded"] > budget, f"without a budget the peak ({peaks['unbounded']:.0f} MB) is over {budget} MB"
    assert peaks["budget"] <= budget, f"peak {peaks['budget']:.0f} MB over the {budget} MB budget"
    too_small = run_cli("run", str(clip), "-o", str(tmp_path / "small.mp4"), "--max-memory", "300")
    assert too_small.returncode == 2 and "is too small for these frames" in too_small.stderr
    named = re.search(r"raise --max-memory to (\d+) or more", too_small.stderr)
    assert named, too_small.stderr
    enough = run_cli("run", str(clip), "-o", str(tmp_path / "enough.mp4"), "--max-memory", named[1], "--max-frames", "2")
    assert enough.returncode == 0, f"the value the hint names is enough: {enough.stderr}"


@pytest.mark.slow
def test_a_big_photo_runs_under_a_budget_that_holds_its_peak(tmp_path: Path) -> None:
    """A 4000x3000 photo (46 MB a frame slot) under --max-memory 1000: it was refused (about 1910 MB asked for, 30
    frame copies outside the slots as for a video, x264 lookahead and all); a photo written as a photo is budgeted
    its measured copies, runs, and its tree's peak stays under the budget (docs/faults.md)."""
    import cv2

    from vidparse.pipeline.memory import PeakMemory

    budget, photo = 1000, tmp_path / "big.jpg"
    with av.open(str(VTEST)) as src:
        frame = next(src.decode(video=0)).to_ndarray(format="bgr24")
    cv2.imwrite(str(photo), cv2.resize(frame, (4000, 3000)))
    process = start(str(photo), "-o", str(tmp_path / "out.jpg"), "--workers", "1", "--config", FAST,
                    "--max-memory", str(budget))
    with PeakMemory(process.pid, interval_s=0.05) as memory:
        _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    assert Image.open(tmp_path / "out.jpg").size == (4000, 3000)
    assert memory.peak_mb <= budget, f"peak {memory.peak_mb:.0f} MB over the {budget} MB budget"


def test_a_mask_folder_that_vanishes_mid_run(clip40: Path, tmp_path: Path) -> None:
    masks, stats = tmp_path / "masks", tmp_path / "stats.jsonl"
    process = start(str(clip40), "-o", str(tmp_path / "o.mp4"), "--masks", str(masks), "--stats", str(stats),
                    "--config", FAST)
    wait_for_stats(stats, 2)
    shutil.rmtree(masks)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == BAD_OUTPUT, stderr
    (line,) = error_lines(stderr)
    assert line.startswith(f"error: writing {masks}/") and "No such file or directory" in line, line
    assert "hint:" in stderr and "Traceback" not in stderr
    assert 0 < decodable_frames(tmp_path / "o.mp4") < 40, "the video written so far plays"


def run_with_fault(fault: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(Path(__file__).parent / "faulty_run.py"), fault, "run", *args],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})


def test_a_muxer_that_refuses_timestamps_is_one_line_and_leaves_a_playable_file(clip: Path, tmp_path: Path) -> None:
    result = run_with_fault("unordered-pts", str(clip), "-o", str(tmp_path / "o.mp4"), "--config", FAST)
    assert result.returncode == BAD_OUTPUT, result.stderr
    (line,) = error_lines(result.stderr)
    assert line.startswith(f"error: encoding {tmp_path / 'o.mp4'} failed: FFmpeg refused a frame"), line
    assert "hint:" in result.stderr and "Traceback" not in result.stderr
    assert 0 < decodable_frames(tmp_path / "o.mp4") < 12, "the frames muxed before the refusal play"


def test_an_unexpected_exception_in_the_sink_is_one_line_without_a_traceback(clip: Path, tmp_path: Path) -> None:
    result = run_with_fault("sink-bug", str(clip), "-o", str(tmp_path / "o.mp4"), "--config", FAST)
    assert result.returncode == 7, result.stderr
    assert error_lines(result.stderr) == ["error: unexpected KeyError: 'no such thing'"]
    assert "--verbose" in result.stderr and "Traceback" not in result.stderr
    assert decodable_frames(tmp_path / "o.mp4") == 3, "the three frames written before it play"


@pytest.mark.slow
def test_the_frames_block_of_a_killed_run_is_removed_by_the_next_run(tmp_path: Path) -> None:
    """The scenario (killed_run_blocks.py) runs in a /dev/shm of its own: every run sweeps /dev/shm, so a run of a test
    beside it (pytest-xdist) would remove the killed run's block first, and its block would reach other tests' runs."""
    scenario = Path(__file__).with_name("killed_run_blocks.py")
    result = run_in_a_private_tmpfs(Path("/dev/shm"), 512 * 1024,
                                    [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                                     f"--basetemp={tmp_path / 'scenario'}", str(scenario)])
    assert result.returncode == 0 and re.search(r"\b1 passed\b", result.stdout), result.stdout + result.stderr
