"""`vidparse batch --engine local`: segments at keyframes joined into `vidparse run`'s output, the manifest,
reruns and bad inputs. Real clips, real models, real processes."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from batch_media import BATCH_CONFIG, LONG_FRAMES, SHORT_FRAMES, BatchClips, Reference, assert_matches_reference, frame_times
from conftest import BEEP, VTEST, assert_audio_copied, audio_packets, beep_heard_at, run_cli
from rtsp import free_port
from vidparse.batch.driver import in_given_order
from vidparse.batch.manifest import Record, config_hash, input_identity
from vidparse.batch.plan import plan_segments, read_packets
from vidparse.batch.segment import PACKAGE_ROOT, SegmentTask, code_digest, code_fingerprint
from vidparse.config import load_config
from vidparse.stages.source import VideoSource


def manifest(outdir: Path) -> list[dict]:
    return [json.loads(line) for line in (outdir / "manifest.jsonl").read_text().splitlines()]


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(("error:", "failed:"))]


def test_segments_start_at_keyframes_and_warm_up_before(batch_clips: BatchClips) -> None:
    packets = read_packets(str(batch_clips.long))
    assert packets is not None and packets.keyframes == [0, 12, 24]
    segments = plan_segments(packets, 1.0, 10)
    assert [(s.start, s.end) for s in segments] == [(0, 12), (12, 24), (24, 36)]
    # Decoding starts at the last keyframe at or before the warm-up's first frame (10 frames before the cut).
    assert [(s.window.seek_index, s.window.first_index) for s in segments] == [(0, 0), (0, 2), (12, 14)]
    assert [float(s.offset) for s in segments] == [0.0, 1.2, 2.4]


@pytest.mark.slow
def test_local_batch_equals_run_and_a_rerun_skips_everything(batch_clips: BatchClips, batch_reference: Reference,
                                                             tmp_path: Path) -> None:
    args = ("batch", str(batch_clips.long), str(batch_clips.short[0]), "-o", str(tmp_path), "--config",
            str(BATCH_CONFIG), "--masks")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    records = {Path(r["input"]).name: r for r in manifest(tmp_path)}
    assert records["long.mp4"]["state"] == "done" and records["long.mp4"]["segments"] == 3
    assert records["long.mp4"]["frames"] == LONG_FRAMES
    assert records["short0.mp4"]["state"] == "done" and records["short0.mp4"]["segments"] == 1
    assert_matches_reference(tmp_path, batch_reference)
    assert not (tmp_path / ".parts").exists(), "segment files are removed once joined, and their folder"

    written = (tmp_path / "long.mp4").stat().st_mtime_ns
    again = run_cli(*args)
    assert again.returncode == 0, again.stderr
    assert "0 done, 0 failed, 2 skipped" in again.stderr
    assert len(manifest(tmp_path)) == 2 and (tmp_path / "long.mp4").stat().st_mtime_ns == written



def test_reruns_know_an_input_by_any_spelling_keep_it_done_through_a_refused_start_and_drop_stale_masks(
        batch_clips: BatchClips, tmp_path: Path) -> None:
    """A batch refused at start records nothing (the done input stays done); the earlier labels of an input parsed
    again without --masks would sit beside a new video they do not describe."""
    clip = str(batch_clips.short[0])
    first = run_cli("batch", clip, "-o", str(tmp_path), "--config", str(BATCH_CONFIG), "--masks")
    assert first.returncode == 0, first.stderr
    (masks,) = [Path(p) for p in manifest(tmp_path)[0]["outputs"] if Path(p).is_dir()]
    assert len(list(masks.iterdir())) == SHORT_FRAMES
    refused = run_cli("batch", clip, "-o", str(tmp_path), "--config", str(BATCH_CONFIG), "--cpus-per-task", "1000")
    assert refused.returncode == 2 and len(manifest(tmp_path)) == 1, refused.stderr
    spelt = subprocess.run([sys.executable, "-m", "vidparse", "batch", f"./{batch_clips.short[0].name}", "-o",
                            os.path.relpath(tmp_path, batch_clips.folder), "--config", str(BATCH_CONFIG), "--masks"],
                           capture_output=True, text=True, timeout=300, cwd=batch_clips.folder)
    assert spelt.returncode == 0 and "0 done, 0 failed, 1 skipped" in spelt.stderr, spelt.stderr
    other = tmp_path / "other.yaml"
    other.write_text(BATCH_CONFIG.read_text() + "compose:\n  alpha: 0.3\n")
    again = run_cli("batch", clip, "-o", str(tmp_path), "--config", str(other))
    assert again.returncode == 0, again.stderr
    assert "1 done" in again.stderr and not masks.exists()
    assert manifest(tmp_path)[-1]["outputs"] == [str(tmp_path / "short0.mp4")]


def test_a_rerun_redoes_an_input_whose_outputs_were_damaged(batch_clips: BatchClips, tmp_path: Path) -> None:
    """An emptied video and a mask folder short of a PNG are not what their records say: both inputs run again."""
    args = ("batch", str(batch_clips.short[0]), str(batch_clips.short[1]), "-o", str(tmp_path), "--config",
            str(BATCH_CONFIG), "--masks")
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr
    records = {Path(r["input"]).name: r for r in manifest(tmp_path)}
    emptied = Path(records["short0.mp4"]["outputs"][0])
    assert records["short0.mp4"]["video_size"] == emptied.stat().st_size > 0
    emptied.write_bytes(b"")
    masks = Path(records["short1.mp4"]["outputs"][1])
    min(masks.glob("*.png")).unlink()
    again = run_cli(*args)
    assert again.returncode == 0 and "2 done, 0 failed, 0 skipped" in again.stderr, again.stderr
    assert emptied.stat().st_size > 0 and len(list(masks.glob("*.png"))) == SHORT_FRAMES


def test_a_cut_file_is_parsed_to_where_it_ends_as_run_parses_it(batch_clips: BatchClips, tmp_path: Path) -> None:
    """Its index (at the front) announces frames whose data is gone: the last segment ends early, with a warning,
    not three failed attempts."""
    whole = tmp_path / "whole.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(batch_clips.long), "-c", "copy", "-movflags", "+faststart",
                    str(whole)], check=True, timeout=60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.8)])
    result = run_cli("batch", str(cut), "-o", str(tmp_path / "out"), "--config", str(BATCH_CONFIG))
    assert result.returncode == 0, result.stderr
    (record,) = manifest(tmp_path / "out")
    # done (before: the last segment failed on every attempt); a segment may still be retried once on a loaded machine
    assert record["state"] == "done" and record["segments"] > 1, result.stderr
    assert 12 < record["frames"] == len(frame_times(tmp_path / "out" / "cut.mp4")) < LONG_FRAMES
    assert "the file may be truncated" in " ".join(result.stderr.split())
    alone = run_cli("run", str(cut), "-o", str(tmp_path / "alone.mp4"), "--config", str(BATCH_CONFIG))
    assert alone.returncode == 0 and len(frame_times(tmp_path / "alone.mp4")) == record["frames"]


def trimmed(clip: Path, target: Path) -> Path:
    """``clip`` from 1.5 s on without re-encoding: it keeps the packets from the keyframe at 1.2 s, which its edit
    list hides (a whole file: its 21 frames from 1.5 s decode)."""
    subprocess.run(["ffmpeg", "-v", "error", "-ss", "1.5", "-i", str(clip), "-c", "copy", str(target)], check=True,
                   timeout=60)
    return target


def cut_matroska(clip: Path, target: Path) -> Path:
    """``clip`` in Matroska (a duration and no frame count in its header) cut to 60% of its bytes."""
    whole = target.with_name(f"whole-{target.name}")
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-c", "copy", str(whole)], check=True, timeout=60)
    target.write_bytes(whole.read_bytes()[:int(whole.stat().st_size * 0.6)])
    return target


def run_warning(clip: Path, caplog: pytest.LogCaptureFixture) -> list[str]:
    """What `vidparse run`'s source says of how ``clip`` ended (decoded in this process, nothing parsed)."""
    source = VideoSource(str(clip))
    source.open()
    with caplog.at_level(logging.WARNING, logger="vidparse.stages.source"):
        for _ in source.frames():
            pass
    source.close()
    return [record.getMessage() for record in caplog.records if "truncated" in record.getMessage()]


def test_a_trimmed_files_segments_count_only_the_frames_it_shows(batch_clips: BatchClips, tmp_path: Path) -> None:
    """Its 3 hidden packets counted as frames put every cut 3 frames late and each offset 0.3 s late."""
    clip = trimmed(batch_clips.long, tmp_path / "trimmed.mp4")
    packets = read_packets(str(clip))
    assert packets is not None and packets.hidden == 3 and len(packets.pts) == len(frame_times(clip)) == 21
    segments = plan_segments(packets, 0.5, 10)
    assert [(s.start, s.end) for s in segments] == [(0, 9), (9, 21)]
    assert [float(s.offset) for s in segments] == [0.0, 0.9]


def test_batch_says_a_file_ended_early_when_run_does_and_only_then(batch_clips: BatchClips, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    """A whole trimmed MP4 is not truncated (it was said to be short of its hidden packets, and a segment that seeks
    wrote 3 frames twice); a cut Matroska file's packets all decode, but it ends 2 s before its header's duration
    (it was not warned of). Without a warm-up the second segment seeks to its keyframe."""
    whole, cut = trimmed(batch_clips.long, tmp_path / "trimmed.mp4"), cut_matroska(batch_clips.long, tmp_path / "cut.mkv")
    assert run_warning(whole, caplog) == []
    (said,) = run_warning(cut, caplog)
    config = tmp_path / "no-warmup.yaml"
    config.write_text(BATCH_CONFIG.read_text() + "  warmup_frames: 0\n")
    result = run_cli("batch", str(whole), str(cut), "-o", str(tmp_path / "out"), "--config", str(config),
                     "--segment-seconds", "0.5")
    assert result.returncode == 0, result.stderr
    records = {Path(r["input"]).name: r for r in manifest(tmp_path / "out")}
    assert records["trimmed.mp4"]["segments"] == 2 and records["trimmed.mp4"]["frames"] == 21, result.stderr
    assert frame_times(tmp_path / "out" / "trimmed.mp4") == frame_times(whole), "each frame once, at its time"
    stderr = " ".join(result.stderr.split())
    assert "trimmed.mp4 ended" not in stderr
    assert said in stderr, result.stderr


def test_a_second_batch_on_a_folder_in_use_is_refused_and_ray_options_need_ray(batch_clips: BatchClips,
                                                                             tmp_path: Path) -> None:
    """Two batches on one folder would remove each other's segments and write over each other's records."""
    with open(tmp_path / ".batch.lock", "a") as held:  # as the running batch holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        result = run_cli("batch", str(batch_clips.short[1]), "-o", str(tmp_path), "--config", str(BATCH_CONFIG))
    assert result.returncode == 4 and errors(result.stderr) == [f"error: another vidparse batch is writing {tmp_path}"]
    assert not (tmp_path / "manifest.jsonl").exists()
    local = run_cli("batch", str(batch_clips.short[1]), "-o", str(tmp_path), "--gather")
    assert local.returncode == 2 and "--ray-address and --gather are for --engine ray" in local.stderr


def test_an_output_folder_that_takes_no_files_is_one_line(batch_clips: BatchClips) -> None:
    result = run_cli("batch", str(batch_clips.short[3]), "-o", "/sys", "--config", str(BATCH_CONFIG))
    assert result.returncode == 4, result.stderr
    assert errors(result.stderr) == ["error: output folder /sys is not writable: Permission denied"]


def test_audio_browsers_do_not_play_is_re_encoded_to_its_end(batch_clips: BatchClips, tmp_path: Path) -> None:
    """8 kHz PCM in an MKV becomes AAC: its last packets leave the encoder only when it is flushed."""
    clip = tmp_path / "pcm.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(batch_clips.long), "-f", "lavfi", "-i", "sine=f=440:r=8000",
                    "-t", "2", "-c:v", "copy", "-c:a", "pcm_s16le", "-ac", "1", str(clip)], check=True, timeout=60)
    result = run_cli("batch", str(clip), "-o", str(tmp_path / "out"), "--config", str(BATCH_CONFIG))
    assert result.returncode == 0, result.stderr
    packets = audio_packets(tmp_path / "out" / "pcm.mp4")
    assert packets[-1][0] + packets[-1][1] == pytest.approx(2.0, abs=0.02), "the audio as long as the input's"


def test_the_audio_of_a_transport_stream_keeps_its_place_beside_the_video(tmp_path: Path) -> None:
    """A transport stream's clock starts anywhere (1.4 s here, its video 0.5 s after its audio): the joined video
    starts at 0 and its audio moves with it (it stayed on the stream's clock: the beep 0.5 s into the video was heard
    at 2.4 s; with a camera's clock hours in, no audio played at all)."""
    clip = tmp_path / "recording.ts"
    subprocess.run(["ffmpeg", "-v", "error", "-itsoffset", "0.5", "-i", str(VTEST), "-f", "lavfi", "-i", BEEP,
                    "-t", "2.5", "-vf", "scale=384:288", "-c:v", "libx264", "-g", "10", "-c:a", "aac", str(clip)],
                   check=True, timeout=60)
    result = run_cli("batch", str(clip), "-o", str(tmp_path / "out"), "--config", str(BATCH_CONFIG))
    assert result.returncode == 0, result.stderr
    assert manifest(tmp_path / "out")[0]["segments"] > 1, "joined from segments"
    assert beep_heard_at(tmp_path / "out" / "recording.mp4") == pytest.approx(0.5, abs=0.005)


def test_bad_inputs_get_a_line_and_a_record_and_the_rest_runs(batch_clips: BatchClips, clip_with_audio: Path,
                                                              tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    missing_list = tmp_path / "no-such-list.txt"
    outdir = tmp_path / "out"
    camera, gone = "rtsp://127.0.0.1:9/live", "http://127.0.0.1:9/gone.mp4"  # loopback, nothing listening
    result = run_cli("batch", str(garbage), str(tmp_path / "missing.mp4"), str(clip_with_audio), camera, gone,
                     "--list", str(missing_list), "-o", str(outdir), "--config", str(BATCH_CONFIG), timeout=300)
    assert result.returncode == 9, result.stderr
    assert "Traceback" not in result.stderr
    lines = errors(result.stderr)
    assert len(lines) == 5, result.stderr
    states = {Path(r["input"]).name: (r["state"], r["error"]) for r in manifest(outdir)}
    assert states[clip_with_audio.name] == ("done", None)
    assert {states[name][0] for name in ("garbage.mp4", "missing.mp4", "no-such-list.txt", "live", "gone.mp4")} == {
        "failed"}
    assert "not a readable video" in states["garbage.mp4"][1] and "does not exist" in states["missing.mp4"][1]
    assert "cannot be read" in states["no-such-list.txt"][1]
    assert "is a live input: a batch parses recorded files" in states["live"][1], "refused, not reconnected forever"
    assert "Connection refused" in states["gone.mp4"][1], "a file over HTTP that cannot be fetched fails at once"
    assert len(frame_times(outdir / clip_with_audio.name)) == 8
    assert_audio_copied(outdir / clip_with_audio.name, clip_with_audio)  # the join copies the input's audio


def test_a_failing_segment_is_retried_and_a_failure_every_run_meets_is_not(batch_clips: BatchClips,
                                                                             tmp_path: Path) -> None:
    hiccup = subprocess.run([sys.executable, str(Path(__file__).parent / "faulty_run.py"), "disk-hiccup", "batch",
                             str(batch_clips.short[2]), "-o", str(tmp_path / "retried"), "--config", str(BATCH_CONFIG),
                             "--retries", "1"], capture_output=True, text=True, timeout=600)
    assert hiccup.returncode == 0, hiccup.stderr
    (record,) = manifest(tmp_path / "retried")
    assert record["state"] == "done" and record["attempts"] == 2
    assert "Input/output error" in hiccup.stderr and "retrying" in hiccup.stderr
    assert len(frame_times(Path(record["outputs"][0]))) == SHORT_FRAMES

    config = tmp_path / "broken.yaml"
    config.write_text(BATCH_CONFIG.read_text() + f"model_path: {tmp_path / 'no-such-model.onnx'}\n")
    result = run_cli("batch", str(batch_clips.short[2]), "-o", str(tmp_path / "out"), "--config", str(config),
                     "--retries", "1")
    assert result.returncode == 9, result.stderr
    (record,) = manifest(tmp_path / "out")
    assert record["state"] == "failed" and record["attempts"] == 1, "a missing model is missing on every try"
    assert "segment 0 failed: " in record["error"] and "\n" not in record["error"]
    assert len(errors(result.stderr)) == 1


def test_an_unreachable_ray_cluster_is_one_line_and_no_record(batch_clips: BatchClips, tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"
    result = run_cli("batch", str(batch_clips.short[3]), "-o", str(tmp_path), "--engine", "ray", "--ray-address",
                     address, "--config", str(BATCH_CONFIG), timeout=60)
    assert result.returncode == 3, result.stderr
    assert errors(result.stderr) == [f"error: Ray cluster at {address} is unreachable: Connection refused"]
    assert not (tmp_path / "manifest.jsonl").exists(), "nothing ran: a rerun with the cluster up does every input"


def test_an_address_where_no_ray_head_listens_is_one_line_at_once(batch_clips: BatchClips, tmp_path: Path) -> None:
    """A port of another service (a web server, as the dashboard's is): ray.init would retry it for many minutes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        result = run_cli("batch", str(batch_clips.short[3]), "-o", str(tmp_path), "--engine", "ray", "--ray-address",
                         address, "--config", str(BATCH_CONFIG), timeout=60)
    finally:
        server.shutdown()
    assert result.returncode == 3, result.stderr
    assert errors(result.stderr) == [f"error: Ray cluster at {address} is unreachable: what listens there is not a "
                                     "Ray head"]


def test_a_record_skips_only_the_same_file_with_the_same_config(tmp_path: Path) -> None:
    video, output = tmp_path / "in.mp4", tmp_path / "out.mp4"
    video.write_bytes(b"x" * 10)
    output.write_bytes(b"y")
    size, mtime = input_identity(str(video))
    record = Record(input=str(video), state="done", outputs=[str(output)], config_hash="abc", size=size, mtime_ns=mtime)
    assert record.skips("abc")
    assert not record.skips("def"), "another configuration"
    os.utime(video, ns=(mtime + 10**9, mtime + 10**9))
    assert not record.skips("abc"), "a changed file"
    record.mtime_ns = input_identity(str(video))[1]
    assert not record.skips("abc", masks=True), "label masks asked for and never written"
    record.outputs.append(str(tmp_path))
    assert record.skips("abc", masks=True)
    record.outputs.pop()
    record.video_size = 2
    assert not record.skips("abc"), "a video of another size than the one written"
    record.video_size = None
    assert record.skips("abc"), "a manifest from before video sizes were kept: any non-empty video"
    output.write_bytes(b"")
    assert not record.skips("abc"), "an emptied video"
    output.unlink()
    assert not record.skips("abc"), "an output that is gone"
    assert config_hash(load_config(None, {"workers": 3})) == config_hash(load_config(None, {}))
    assert config_hash(load_config(None, {"model": "bodypix"})) != config_hash(load_config(None, {}))


def test_the_summary_lists_inputs_as_given_not_as_they_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ended = [Record(input=str(tmp_path / name), state="done") for name in ("short.mp4", "long.mp4")]
    nothing_found = Record(input="empty/*.mp4", state="failed", error="no videos")
    ordered = in_given_order([ended[0], nothing_found, ended[1]], ["long.mp4", "./short.mp4"])
    assert [r.input for r in ordered] == ["empty/*.mp4", str(tmp_path / "long.mp4"), str(tmp_path / "short.mp4")]


def test_the_config_hash_holds_only_what_changes_the_outputs() -> None:
    """With tracking on, each video runs whole: where it would be cut changes nothing; cut, it changes the masks."""
    default = config_hash(load_config(None, {}))
    for execution in ({"worker_niceness": 5}, {"serve": {"max_jobs": 5}}, {"batch": {"segment_seconds": 1}},
                      {"batch": {"warmup_frames": 3}}):
        assert config_hash(load_config(None, execution)) == default, execution
    untracked = {"tracking": {"enabled": False}}
    assert (config_hash(load_config(None, {**untracked, "batch": {"segment_seconds": 1}}))
            != config_hash(load_config(None, untracked)))
    assert config_hash(load_config(None, {"batch": {"split_tracked": True}})) != default


def test_an_output_that_would_overwrite_its_input_is_refused(batch_clips: BatchClips, tmp_path: Path) -> None:
    folder = tmp_path / "archive"
    folder.mkdir()
    video = folder / "clip.mp4"
    video.write_bytes(batch_clips.short[0].read_bytes())
    result = run_cli("batch", str(folder), "-o", str(folder), "--config", str(BATCH_CONFIG))
    assert result.returncode == 9, result.stderr
    (record,) = manifest(folder)
    assert record["state"] == "failed" and "would overwrite" in record["error"] and "hint:" in record["error"]
    assert video.read_bytes() == batch_clips.short[0].read_bytes()


@pytest.mark.slow
def test_ctrl_c_cancels_the_running_segments_and_leaves_no_parts(tmp_path: Path) -> None:
    """vtest cut into 1-second segments, two at a time: Ctrl-C while segments run ends the batch within 10 s (the
    running segments' engines are aborted, the waiting ones never start), exit code 130, nothing left in .parts/
    and no process left behind; the input is not recorded, so a rerun does it."""
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "vidparse", "batch", str(VTEST), "-o", str(out), "--config",
                                str(BATCH_CONFIG), "--cpus-per-task", "1"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not list((out / ".parts").rglob("video.mp4")):  # a segment is writing
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()[1]
            time.sleep(0.1)
        interrupted = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
        took = time.monotonic() - interrupted
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "cancelling the running segments" in stderr and "finishing the frames" not in stderr, "it says what it does"
    assert took < 10, f"the batch took {took:.1f} s to end after Ctrl-C"
    assert not (out / ".parts").exists()
    assert not (out / "manifest.jsonl").exists() or not manifest(out)
    deadline = time.monotonic() + 5  # a child may still be exiting ("[python]") on a loaded machine
    while survivors := [line for line in subprocess.run(["ps", "-o", "pid=,args=", "-s", str(process.pid)],
                                                        capture_output=True, text=True).stdout.splitlines()
                        if "<defunct>" not in line]:  # exited, not reaped yet
        assert time.monotonic() < deadline, f"processes left behind: {survivors}"
        time.sleep(0.2)


def test_a_rerun_in_another_order_keeps_each_inputs_output(batch_clips: BatchClips, tmp_path: Path) -> None:
    """Two inputs named alike (x, x_2): a rerun that lists them the other way round, with one of them changed,
    redoes that one into its own output and skips the other; neither overwrites the other's."""
    first, second = tmp_path / "a" / "x.mp4", tmp_path / "b" / "x.mp4"
    for copy, clip in ((first, batch_clips.short[0]), (second, batch_clips.short[1])):
        copy.parent.mkdir()
        copy.write_bytes(clip.read_bytes())
    outdir = tmp_path / "out"
    assert run_cli("batch", str(first), str(second), "-o", str(outdir), "--config", str(BATCH_CONFIG)).returncode == 0
    made = {r["input"]: r["outputs"][0] for r in manifest(outdir)}
    assert sorted(Path(path).name for path in made.values()) == ["x.mp4", "x_2.mp4"]
    contents = {path: Path(path).read_bytes() for path in made.values()}
    os.utime(first)  # changed: done again
    result = run_cli("batch", str(second), str(first), "-o", str(outdir), "--config", str(BATCH_CONFIG))
    assert result.returncode == 0 and "1 done, 0 failed, 1 skipped" in result.stderr, result.stderr
    latest = {r["input"]: r["outputs"][0] for r in manifest(outdir)}
    assert latest == made, "each input keeps its output"
    assert Path(made[str(second)]).read_bytes() == contents[made[str(second)]], "the skipped input's output is intact"
    assert Path(made[str(first)]).read_bytes() != Path(made[str(second)]).read_bytes()


def test_inputs_are_each_file_once_and_never_the_batchs_own_outputs(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from vidparse.batch.inputs import expand

    monkeypatch.chdir(tmp_path)
    (tmp_path / "in" / "parsed").mkdir(parents=True)
    for name in ("in/a.mp4", "in/b.mp4", "in/parsed/a.mp4", "in/notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    found, problems = expand(["in", "./in/a.mp4", str(tmp_path / "in" / "b.mp4"), "typo/*.mp4"], None,
                             Path("in/parsed"))
    assert found == ["in/a.mp4", "in/b.mp4"], "the output folder inside the input folder is left out"
    assert expand(["in/parsed/a.mp4"], None, Path("in/parsed"))[0] == ["in/parsed/a.mp4"], "named: an input"
    assert expand(["in/**/*.mp4"], None, Path("in/parsed"))[0] == ["in/a.mp4", "in/b.mp4"], "a recursive pattern"
    (tmp_path / "in" / "more").mkdir()
    (tmp_path / "in" / "more" / "c.mkv").write_bytes(b"x")
    assert expand(["in/*"], None, Path("in/parsed"))[0] == ["in/a.mp4", "in/b.mp4", "in/more/c.mkv", "in/notes.txt"], \
        "a folder the pattern matches is read for videos as a folder given by name is, not an input of its own"
    assert [(r.input, r.state, r.error) for r in problems] == [("typo/*.mp4", "failed",
                                                                "pattern typo/*.mp4 matches no file")]


def test_run_and_batch_name_outputs_alike(tmp_path: Path) -> None:
    """One naming for `vidparse run` and `vidparse batch` (jobs.output_names): a file's stem, a URL's host and path,
    and _2, _3... for names that repeat (never a name another input has)."""
    from vidparse.jobs import output_names
    from vidparse.runs import sources_for

    inputs = ["a/clip.mp4", "b/clip.mp4", "rtsp://user:pw@cam:554/live/1", "c/clip_2.mp4", "d/clip.mp4"]
    assert output_names(inputs) == ["clip", "clip_3", "cam_554_live_1", "clip_2", "clip_4"]
    names = [source.name for source in sources_for(inputs, tmp_path / "out")]
    assert names == output_names(inputs)


def test_a_node_running_other_code_refuses_its_segments(batch_clips: BatchClips, tmp_path: Path) -> None:
    """What a Ray worker does with a task (unpickle it, run it) in a process that imports another vidparse."""
    other = tmp_path / "node" / "vidparse"
    shutil.copytree(PACKAGE_ROOT, other, ignore=shutil.ignore_patterns(".*", "__pycache__", "tests", "benchmarks",
                                                                       "docs", "scripts", "*.egg-info"))
    (other / "docs").mkdir()
    (other / "docs" / "notes.md").write_text("a node's own notes\n")
    assert code_digest(other) == code_fingerprint(), "a copy of the code, notes beside it: the same code"
    recolor = other / "stages" / "recolor.py"
    recolor.write_text(recolor.read_text().replace("alpha = self.options.alpha", "alpha = 1 - self.options.alpha"))
    assert code_digest(other) != code_fingerprint()

    config = load_config(BATCH_CONFIG)
    segment = plan_segments(read_packets(str(batch_clips.short[0])), 0, config.batch.warmup_frames, None)[0]
    task = SegmentTask(config, str(batch_clips.short[0]), segment, tmp_path / "parts", code=code_fingerprint())
    node = subprocess.run([sys.executable, "-c", "import pickle, sys\nfrom vidparse.batch.segment import run_segment\n"
                           "run_segment(pickle.load(sys.stdin.buffer))"], input=pickle.dumps(task),
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(other.parent)})
    stderr = node.stderr.decode()
    assert node.returncode != 0 and "ConfigError" in stderr, stderr
    assert f"the driver's {code_fingerprint()}): its labels would not be the driver's" in stderr, stderr
    assert not (tmp_path / "parts").exists(), "refused before anything was written"
