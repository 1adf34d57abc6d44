import dataclasses
import itertools
import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import BEEP, VTEST, assert_audio_copied, beep_heard_at, beep_played_at, decode_frames, mkv_without_a_frame_rate, probe_video, vtest_h264
from vidparse.errors import BadOutputError
from vidparse.stages.sink import EncoderOptions, VideoSink, check_output_path, segment_stamp, trim_to_whole_fragments
from vidparse.stages.source import VideoSource, probe
from vidparse.stages.types import Frame


def copy_through_sink(source_path: Path, target: Path, audio: bool, options: EncoderOptions | None = None) -> VideoSink:
    source = VideoSource(str(source_path))
    info = source.open()
    sink = VideoSink(target, info, options or EncoderOptions(crf=18, preset="ultrafast"), str(source_path) if audio else None)
    sink.open()
    for frame in source.frames():
        sink.write(frame)
    sink.close()
    source.close()
    return sink


def test_browser_playable_h264_with_source_timestamps(clip: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    copy_through_sink(clip, target, audio=False)
    facts = probe_video(target)
    assert (facts.codec, facts.pix_fmt, facts.width, facts.height, facts.frames) == ("h264", "yuv420p", 768, 576, 12)
    assert facts.pts_s == pytest.approx([i / 10 for i in range(12)])
    assert facts.duration_s == pytest.approx(1.2, abs=0.1)
    data = target.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat"), "faststart: the index comes first"


def test_encoder_noise_is_small(clip: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    copy_through_sink(clip, target, audio=False)
    original, encoded = decode_frames(clip), decode_frames(target)
    assert np.abs(original[5].astype(int) - encoded[5].astype(int)).mean() < 3


def test_audio_is_copied(clip_with_audio: Path, tmp_path: Path) -> None:
    target = tmp_path / "out.mp4"
    copy_through_sink(clip_with_audio, target, audio=True)
    facts = probe_video(target)
    assert facts.audio_codec == "aac" and facts.frames == 8
    assert_audio_copied(target, clip_with_audio)


@pytest.mark.parametrize("codec, container, written", [("pcm_s16le", "avi", "aac"), ("flac", "mkv", "aac"),
                                                        ("ac3", "avi", "aac"), ("libmp3lame", "avi", "mp3"),
                                                        ("aac", "ts", "aac")])
def test_audio_browsers_play_is_copied_the_rest_becomes_aac(codec: str, container: str, written: str, tmp_path: Path) -> None:
    """PCM (an AVI's, a camera's MKV) copied into an MP4 is ``ipcm``, which browsers do not play: it is re-encoded
    as AAC, the same tone, as long as the video. MP3 (a DivX-era AVI's), which they play, is copied; an AVI counts
    its audio packets, not samples, which the AAC encoder is not given (AC3 would fail with "Invalid argument").
    AAC in an MPEG-TS (a camera's recording, HLS) is in ADTS frames, which an MP4 does not take as they are."""
    clip = tmp_path / f"tone.{container}"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(VTEST), "-f", "lavfi", "-i", "sine=frequency=440", "-t", "1",
                    "-c:v", "libx264" if container == "ts" else "ffv1", "-c:a", codec, "-shortest", str(clip)],
                   check=True)
    target = tmp_path / "out.mp4"
    copy_through_sink(clip, target, audio=True)
    assert probe_video(target).audio_codec == written
    with av.open(str(target)) as written_file:
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in written_file.decode(audio=0)])
        rate = written_file.streams.audio[0].rate
    # an MPEG-TS has no edit list: the source encoder's priming samples are decoded and re-encoded too
    assert len(samples) / rate == pytest.approx(1.0, abs=0.08 if container == "ts" else 0.05), "as long as the video"
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()] == pytest.approx(440, abs=3), "the same tone"


def test_of_several_audio_tracks_the_first_is_kept_and_said_so(tmp_path: Path, caplog) -> None:
    """A recording with a second language or a commentary track: an MP4 for browsers plays one, the first; the
    others were dropped without a word."""
    clip = tmp_path / "two tracks.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(VTEST), "-f", "lavfi", "-i", "sine=frequency=440", "-f", "lavfi",
                    "-i", "sine=frequency=880", "-map", "0:v", "-map", "1:a", "-map", "2:a", "-t", "1", "-c:v", "ffv1",
                    "-c:a", "aac", str(clip)], check=True)
    copy_through_sink(clip, tmp_path / "out.mp4", audio=True)
    assert f"input {clip} has 2 audio tracks: only the first is kept" in caplog.text
    with av.open(str(tmp_path / "out.mp4")) as written:
        assert len(written.streams.audio) == 1
        rate = written.streams.audio[0].rate
        samples = np.concatenate([f.to_ndarray().mean(axis=0) for f in written.decode(audio=0)])
    spectrum = np.abs(np.fft.rfft(samples))
    assert np.fft.rfftfreq(len(samples), 1 / rate)[spectrum.argmax()] == pytest.approx(440, abs=3), "the first"


def test_a_live_inputs_audio_is_said_not_to_be_recorded(clip: Path, tmp_path: Path, caplog) -> None:
    info = dataclasses.replace(probe(str(clip)), live=True, has_audio=True)
    sink = VideoSink(tmp_path / "live.mp4", info, EncoderOptions(crf=23, preset="ultrafast"))
    sink.open()
    sink.close()
    assert "a live input's audio is not recorded" in caplog.text


def test_variable_frame_timestamps_survive(clip: Path, tmp_path: Path) -> None:
    info = probe(str(clip))
    sink = VideoSink(tmp_path / "vfr.mp4", info, EncoderOptions(crf=23, preset="ultrafast"))
    sink.open()
    pts = [0, 1, 2, 5, 6, 10]  # gaps, in the source's 1/10 s time base
    image = np.zeros((576, 768, 3), np.uint8)
    for seq, p in enumerate(pts):
        sink.write(Frame(seq, p, Fraction(1, 10), image))
    sink.close()
    assert probe_video(tmp_path / "vfr.mp4").pts_s == pytest.approx([p / 10 for p in pts])


@pytest.mark.parametrize("durations_ms, last_ms", [
    ([40, 40, 40], 40),
    ([40, 40, 120, 40], 67),  # a variable rate: the last frame lasts the mean spacing, 200 ms / 3
])
def test_an_input_without_a_frame_rate_keeps_its_timing(durations_ms: list[int], last_ms: int, tmp_path: Path) -> None:
    """FFmpeg's guess of 1000 fps made the last frame last 1 ms (a 3-frame file of 40 ms frames lasted 0.081 s) and
    the encoder take a level for 1000 fps. The frames' spacing stands in for the rate, as if the header gave it."""
    source = mkv_without_a_frame_rate(tmp_path / "in.mkv", durations_ms)
    assert probe(str(source)).frame_rate_guessed
    copy_through_sink(source, tmp_path / "out.mp4", audio=False)
    facts = probe_video(tmp_path / "out.mp4")
    starts_s = [sum(durations_ms[:index]) / 1000 for index in range(len(durations_ms))]
    assert (facts.frames, facts.pts_s) == (len(durations_ms), pytest.approx(starts_s))
    assert facts.duration_s == pytest.approx(starts_s[-1] + last_ms / 1000)
    with av.open(str(tmp_path / "out.mp4")) as written:
        # H.264 level 1.0 takes 64x64 frames at up to 92 fps; 1000 fps needed level 2.1
        assert written.streams.video[0].codec_context.level == 10


def test_fine_stripes_keep_their_mean_colour_and_the_colours_are_tagged(clip: Path, tmp_path: Path) -> None:
    """1-pixel red and blue columns (striped clothes, a dithered GIF) are purple seen from afar: the encoded frame's
    chroma is each 2x2 block's mean colour, not one of its pixels' (which made them all red). The video is tagged
    BT.601, limited range, as encoded."""
    info = probe(str(clip))
    sink = VideoSink(tmp_path / "stripes.mp4", info, EncoderOptions(crf=12, preset="ultrafast"))
    sink.open()
    stripes = np.zeros((576, 768, 3), np.uint8)
    stripes[:, 0::2], stripes[:, 1::2] = (0, 0, 255), (255, 0, 0)  # BGR: red, blue
    sink.write(Frame(0, 0, Fraction(1, 10), stripes))
    sink.close()
    (decoded,) = decode_frames(tmp_path / "stripes.mp4")
    blue, _, red = decoded.reshape(-1, 3).mean(axis=0)
    assert abs(blue - red) < 20 and min(blue, red) > 90, (blue, red)
    with av.open(str(tmp_path / "stripes.mp4")) as written:
        codec = written.streams.video[0].codec_context
        assert (codec.color_range, codec.colorspace, codec.color_primaries, codec.color_trc) == (1, 6, 6, 6)


@pytest.mark.parametrize("name, message", [("out.avi", "unsupported extension"), ("missing/out.mp4", "does not exist")])
def test_bad_output_paths(tmp_path: Path, name: str, message: str) -> None:
    with pytest.raises(BadOutputError, match=message):
        check_output_path(tmp_path / name)


def test_read_only_location() -> None:
    # sysfs refuses new files even to root, so this holds wherever the tests run.
    with pytest.raises(BadOutputError, match="not writable"):
        check_output_path(Path("/sys/out.mp4"))


def test_segments_rotate_by_stream_time_and_start_at_zero(clip: Path, tmp_path: Path) -> None:
    sink = copy_through_sink(clip, tmp_path / "out.mp4", False, EncoderOptions(23, "ultrafast", segment_seconds=0.5))
    assert sorted(sink.paths) == sorted(tmp_path.glob("out_*.mp4")) and not (tmp_path / "out.mp4").exists()
    assert [p.name for p in sink.paths] == ["out_00h00m00s.mp4", "out_00h00m00.500s.mp4", "out_00h00m01s.mp4"]
    facts = [probe_video(p) for p in sink.paths]
    assert [f.frames for f in facts] == [5, 5, 2]
    assert all(f.pts_s == pytest.approx([i / 10 for i in range(f.frames)]) for f in facts)


def test_live_segments_are_named_by_the_wall_clock_and_file_segments_by_the_video_time() -> None:
    assert segment_stamp(True, 1795407300.0, Fraction(90)) == "20261123T041500"
    assert segment_stamp(False, 1795407300.0, Fraction(5415, 1)) == "01h30m15s"
    assert segment_stamp(False, None, Fraction(1, 3)) == "00h00m00.333s"


def test_a_file_cut_mid_fragment_is_trimmed_to_its_whole_fragments(tmp_path: Path) -> None:
    """What a full disk leaves: the last fragment cut. Trimmed, it decodes without an error to its end."""
    clip = vtest_h264(tmp_path / "in.mp4", 30)
    out = tmp_path / "out.mp4"
    copy_through_sink(clip, out, False, EncoderOptions(23, "ultrafast", fragmented=True))
    data = out.read_bytes()
    last_fragment = data.rindex(b"moof") - 4
    out.write_bytes(data[:last_fragment + (len(data) - last_fragment) // 2])
    assert "Invalid NAL unit size" in decode_errors(out) or "partial file" in decode_errors(out), "the cut is seen"
    trim_to_whole_fragments(out)
    assert out.stat().st_size == last_fragment and decode_errors(out) == ""
    assert 0 < probe_video(out).frames < 30


@pytest.mark.parametrize("remove", ["file", "folder"])
def test_an_output_removed_while_written_is_an_error_at_the_end(remove: str, clip: Path, tmp_path: Path) -> None:
    source = VideoSource(str(clip))
    info = source.open()
    target = tmp_path / "out" / "out.mp4"
    target.parent.mkdir()
    sink = VideoSink(target, info, EncoderOptions(23, "ultrafast"))
    sink.open()
    for frame in source.frames():
        sink.write(frame)
    source.close()
    target.unlink() if remove == "file" else shutil.rmtree(target.parent)
    with pytest.raises(BadOutputError, match="deleted while being written" if remove == "file" else "vanished"):
        sink.close()
    assert sink.paths == [], "a file removed is not among those written ('wrote ...' named it)"


def decode_errors(path: Path) -> str:
    return subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True,
                          text=True).stderr


def test_a_disk_another_output_fills_leaves_the_file_at_its_last_whole_fragment(small_disk: Path, tmp_path: Path,
                                                                               caplog: pytest.LogCaptureFixture) -> None:
    """The masks or the stats take the last of the disk: the sink's own writes went through, but finishing its last
    fragment fails, and the file is cut back as it is when its own write fails. Noise: every frame is large, so the
    fragment left to finish cannot fit in what is left of the file's last page."""
    noise = tmp_path / "noise.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "nullsrc=s=160x120:r=10,geq=random(1)*255:128:128",
                    "-t", "2", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(noise)], check=True)
    source = VideoSource(str(noise))
    out = small_disk / "out.mp4"
    sink = VideoSink(out, source.open(), EncoderOptions(23, "ultrafast"))
    sink.open()
    for frame in itertools.islice(source.frames(), 15):
        sink.write(frame)
    source.close()
    with pytest.raises(OSError, match="No space left"), (small_disk / "masks.bin").open("wb") as filler:
        while True:
            filler.write(bytes(1 << 16))
    with pytest.raises(BadOutputError, match="its last fragment could not be written"):
        sink.close()
    kept = probe_video(out).frames
    assert decode_errors(out) == "" and 0 < kept < 15
    assert f"holds {kept} of the 15 frames written to it" in caplog.text, "the summary's count is not the file's"


def test_fragmented_mp4_plays_like_the_plain_one(clip: Path, tmp_path: Path) -> None:
    copy_through_sink(clip, tmp_path / "out.mp4", False, EncoderOptions(23, "ultrafast", fragmented=True))
    assert b"moof" in (tmp_path / "out.mp4").read_bytes()
    assert probe_video(tmp_path / "out.mp4").pts_s == pytest.approx([i / 10 for i in range(12)])


@pytest.mark.parametrize("inputs, heard", [
    # a transport stream whose recording began between keyframes: its audio 0.5 s before the first frame, which was
    # held from 0 while that audio played (heard at 1.04 s); an edit list now skips it
    (["-itsoffset", "0.5", "-i", str(VTEST), "-f", "lavfi", "-i", BEEP], 0.5),
    # a camera's audio 0.7 s after the video: FFmpeg held its first packet until the second, browsers played it
    # from 0 (heard at 1.02 s)
    (["-i", str(VTEST), "-itsoffset", "0.7", "-f", "lavfi", "-i", BEEP], 1.7),
])
def test_a_file_kept_fragmented_keeps_its_audio_beside_the_video(inputs: list[str], heard: float, shared: Path,
                                                                 tmp_path: Path) -> None:
    """--fragmented (no fast-start rewrite): the beep is heard where it is beside the first frame, by FFmpeg and by
    a browser, in the finished file and in what a process killed mid-run leaves (the file as it is being written)."""
    clip = tmp_path / "in.ts"
    subprocess.run(["ffmpeg", "-v", "error", *inputs, "-t", "4", "-vf", "scale=192:144", "-c:v", "libx264",
                    "-c:a", "aac", str(clip)], check=True)
    source = VideoSource(str(clip))
    sink = VideoSink(tmp_path / "out.mp4", source.open(), EncoderOptions(23, "ultrafast", fragmented=True), str(clip))
    sink.open()
    for frame in source.frames():
        sink.write(frame)
        if frame.seq == 29:  # 3 s of video: two whole fragments are in the file
            shutil.copy(tmp_path / "out.mp4", tmp_path / "killed.mp4")
    sink.close()
    source.close()
    assert probe_video(tmp_path / "killed.mp4").frames >= 10, "the flushed fragments play"
    for written in (tmp_path / "out.mp4", tmp_path / "killed.mp4"):
        assert (beep_heard_at(written), beep_played_at(written)) == pytest.approx((heard, heard), abs=0.005)
