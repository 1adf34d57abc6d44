import logging
import re
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import VTEST, cut_clip, make_audio_only, mkv_without_a_frame_rate
from media import TS_WRAP_OFFSET_S, ffmpeg
from vidparse.errors import BadInputError
from vidparse.stages.source import FrameTooLargeError, InputLimits, StreamInfo, VideoSource, ended_early, probe


def test_decodes_clip_with_stream_timestamps(clip: Path) -> None:
    source = VideoSource(str(clip))
    info = source.open()
    frames = list(source.frames())
    source.close()
    assert (info.width, info.height, info.codec) == (768, 576, "msmpeg4")
    assert info.frame_rate == 10
    assert len(frames) == 12
    assert [f.seq for f in frames] == list(range(12))
    assert [f.seconds for f in frames] == pytest.approx([i / 10 for i in range(12)])
    assert all(f.image.shape == (576, 768, 3) and f.image.dtype == np.uint8 for f in frames)
    assert frames[0].image.std() > 10  # a real picture, not a blank buffer


def test_max_frames_stops_early(clip: Path) -> None:
    source = VideoSource(str(clip), max_frames=5)
    source.open()
    assert len(list(source.frames())) == 5
    source.close()


def decode_warning(path: Path, caplog: pytest.LogCaptureFixture) -> tuple[int, list[str]]:
    """The frames a source decodes from ``path`` and the warnings it logs."""
    caplog.clear()
    with caplog.at_level(logging.WARNING, "vidparse.stages.source"):
        source = VideoSource(str(path))
        source.open()
        decoded = len(list(source.frames()))
        source.close()
    return decoded, [record.getMessage() for record in caplog.records]


@pytest.mark.parametrize("suffix, shortfall", [
    (".avi", r"ended after (\d+) of the 40 frames its header announces"),  # the header counts frames
    (".mkv", r"ended at (\d+\.\d) s of the 4\.0 s its header announces"),  # it gives a duration only
])
def test_a_file_cut_short_ends_with_a_warning_and_a_whole_one_without(suffix: str, shortfall: str, shared: Path,
                                                                      tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    whole = cut_clip(VTEST, tmp_path / f"whole{suffix}", 40)
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    decoded, warnings = {}, {}
    for path in (whole, cut):
        decoded[path], warnings[path] = decode_warning(path, caplog)
    assert decoded[whole] == 40 and warnings[whole] == []
    assert 5 < decoded[cut] < 35
    assert len(warnings[cut]) == 1 and "the file may be truncated or damaged" in warnings[cut][0]
    found = re.search(shortfall, warnings[cut][0])
    assert found, warnings[cut]
    if suffix == ".avi":
        assert int(found[1]) == decoded[cut]
    else:  # the last frame's time
        assert float(found[1]) == pytest.approx((decoded[cut] - 1) / 10, abs=0.05)


def test_a_short_mkv_cut_short_is_warned_of(shared: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Matroska gives a duration and no frame count; a 2 s video that ends 0.6 s early is cut short."""
    whole = cut_clip(VTEST, tmp_path / "whole.mkv", 20)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.85)])
    for path in (whole, cut):
        decoded, warnings = decode_warning(path, caplog)
        if path == whole:
            assert decoded == 20 and warnings == []
        else:
            assert 10 < decoded < 18
            assert warnings == [f"input {cut} ended at {(decoded - 1) / 10:.1f} s of the 2.0 s its header announces: "
                                "the file may be truncated or damaged"]


def test_an_avi_half_a_second_short_is_warned_of(shared: Path, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """vtest's 40 frames (10 fps) cut by a tenth of their bytes end about five frames short: the second and 2% of
    slack the frame count allowed let that pass (three frames short is enough: whole files end one short)."""
    whole = cut_clip(VTEST, tmp_path / "whole.avi", 40)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * 0.9)])
    assert decode_warning(whole, caplog) == (40, [])
    decoded, warnings = decode_warning(cut, caplog)
    assert 32 <= decoded <= 37, decoded
    assert warnings == [f"input {cut} ended after {decoded} of the 40 frames its header announces: the file may be "
                        "truncated or damaged"]


def test_an_mp4_trimmed_without_re_encoding_is_not_taken_for_a_truncated_one(tmp_path: Path,
                                                                              caplog: pytest.LogCaptureFixture) -> None:
    """``ffmpeg -ss 1.5 -i in.mp4 -c copy``: the header counts the frames from the keyframe before 1.5 s, and its
    edit list hides those before it: 100 frames counted, 62 shown, and the whole file was 'truncated or damaged'."""
    whole, trimmed = tmp_path / "whole.mp4", tmp_path / "trimmed.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=25:d=4", "-c:v", "libx264", "-g", "100", str(whole))
    ffmpeg("-ss", "1.5", "-i", str(whole), "-c", "copy", str(trimmed))
    assert probe(str(trimmed)).frames == 100
    assert decode_warning(trimmed, caplog) == (62, [])


def test_a_transport_stream_whose_timestamps_wrap_is_not_taken_for_a_truncated_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Its first frames come before 0 once the 2^33 wrap is undone: counted from 0, the last frame was half the
    duration in, and the whole file 'ended at 0.6 s of the 1.2 s its header announces'."""
    wrapped = tmp_path / "wrap.ts"
    ffmpeg("-f", "lavfi", "-i", "testsrc=s=160x120:r=10:d=1.2", "-c:v", "libx264", "-output_ts_offset",
           str(TS_WRAP_OFFSET_S), str(wrapped))
    assert decode_warning(wrapped, caplog) == (12, [])


@pytest.mark.parametrize("frames", [1, 2, 3])
def test_a_whole_mkv_without_a_frame_rate_is_not_taken_for_a_truncated_one(frames: int, tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    """FFmpeg's guess of 1000 fps left two frames' slack of 2 ms: the whole file 'ended at 0.0 s of the 0.0 s its
    header announces'. The frames' own spacing stands in for the rate; a lone frame cannot be measured."""
    whole = mkv_without_a_frame_rate(tmp_path / "whole.mkv", [40] * frames)
    assert probe(str(whole)).frame_rate == 1000
    assert decode_warning(whole, caplog) == (frames, [])


@pytest.mark.parametrize("decoded, last_second, shortfall", [
    (3, 0.08, "at 0.1 s of the 2.0 s its header announces"),  # frames 40 ms apart: two frames are 80 ms
    (50, 1.96, None),  # all of it
    (1, 0.0, None),  # a lone frame: how long a frame lasts is not known
])
def test_without_a_frame_rate_the_frames_spacing_sets_the_slack(decoded: int, last_second: float,
                                                                shortfall: str | None) -> None:
    info = StreamInfo(width=64, height=48, time_base=Fraction(1, 1000), frame_rate=Fraction(1000), frames=0,
                      duration_s=2.0, codec="h264", has_audio=False, frame_rate_guessed=True)
    assert ended_early(info, decoded, round(last_second * 1000), first_pts=0) == shortfall


@pytest.mark.parametrize("has_audio, last_second, shortfall", [
    (False, 1.9, None),  # all of it
    (False, 1.7, "at 1.7 s of the 2.0 s its header announces"),  # two frames and more short
    (True, 1.3, None),  # the duration may be the audio's, which may run on
])
def test_a_duration_alone_allows_a_second_only_beside_audio(has_audio: bool, last_second: float,
                                                             shortfall: str | None) -> None:
    info = StreamInfo(width=64, height=48, time_base=Fraction(1, 1000), frame_rate=Fraction(10), frames=0,
                      duration_s=2.0, codec="h264", has_audio=has_audio)
    assert ended_early(info, 20, round(last_second * 1000)) == shortfall


@pytest.mark.parametrize("decoded, last_second, shortfall", [
    (100, 9.9, None),  # all of it
    (98, 9.7, None),  # a frame or two the header counts that never decode
    (80, 9.9, None),  # frames counted that never decode (null frames), the time reached all the same
    (80, 7.9, "after 80 of the 100 frames its header announces"),  # cut short
    # half a second short: a second and 2% of slack let it pass, though whole files end at most a frame short
    (95, 9.4, "after 95 of the 100 frames its header announces"),
    (97, 9.6, "after 97 of the 100 frames its header announces"),  # three frames short: past two
])
def test_a_shortfall_counts_only_when_frames_and_time_fall_short(decoded: int, last_second: float,
                                                                 shortfall: str | None) -> None:
    info = StreamInfo(width=64, height=48, time_base=Fraction(1, 1000), frame_rate=Fraction(10), frames=100,
                      duration_s=10.0, codec="h264", has_audio=False)
    assert ended_early(info, decoded, round(last_second * 1000)) == shortfall


def test_probe_reports_audio(clip_with_audio: Path, clip: Path) -> None:
    assert probe(str(clip_with_audio)).has_audio
    assert not probe(str(clip)).has_audio


def _file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d / "missing.mp4", "does not exist"),
        (lambda d: _file(d / "empty.mp4", b""), "empty"),
        (lambda d: _file(d / "notes.mp4", b"this is not a video\n" * 50), "not a readable video"),
        (lambda d: d, "is a directory"),
        (lambda d: d / "*.jpg", r"\*.jpg is a pattern of files, not one video"),  # was "does not exist"
        (lambda d: d / "%06d.png", "%06d.png is a pattern of files, not one video"),
    ],
    ids=["missing", "zero-length", "text-renamed-mp4", "directory", "glob", "printf-pattern"],
)
def test_bad_inputs_raise_one_clear_error(tmp_path: Path, make, message: str) -> None:
    with pytest.raises(BadInputError, match=message):
        probe(str(make(tmp_path)))


def test_image_is_not_a_video(shared: Path) -> None:
    with pytest.raises(BadInputError, match="still image"):
        probe(str(shared / "data" / "cihp" / "images" / "0002190.jpg"))


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no video stream"):
        probe(str(make_audio_only(tmp_path / "tone.m4a")))


def test_cover_art_is_not_video_and_the_largest_video_stream_is_parsed(tmp_path: Path, shared: Path) -> None:
    """A music file's cover art (an attached picture) is not a video to parse; of two video streams (a preview track
    first), the larger one is the video."""
    import subprocess

    song, tracks = tmp_path / "song.mp3", tmp_path / "tracks.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=1", "-i",
                    str(shared / "data" / "ccp" / "images" / "0001.jpg"), "-map", "0:a", "-map", "1:v", "-c:a",
                    "libmp3lame", "-c:v", "mjpeg", "-disposition:v", "attached_pic", str(song)], check=True)
    with pytest.raises(BadInputError, match="no video stream"):
        probe(str(song))
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(VTEST), "-t", "0.5", "-filter_complex",
                    "[0:v]split[a][b];[b]scale=384:288[preview]", "-map", "[preview]", "-map", "[a]", "-c:v", "ffv1",
                    str(tracks)], check=True)
    info = probe(str(tracks))
    assert (info.width, info.height) == (768, 576)
    assert frame_shapes(tracks) == [(576, 768, 3)] * 5


def frame_shapes(path: Path) -> list[tuple[int, ...]]:
    """The shape of every frame `VideoSource` gives of ``path``."""
    source = VideoSource(str(path))
    source.open()
    try:
        return [frame.image.shape for frame in source.frames()]
    finally:
        source.close()


def test_a_still_track_before_the_video_is_not_parsed_though_it_has_more_pixels(tmp_path: Path, shared: Path) -> None:
    """A photo muxed as a PNG track ahead of the video (an MKV keeps no attached-picture flag, and this one is not the
    default track): the video is parsed, not the photo's single frame."""
    video, tracks = tmp_path / "video.mp4", tmp_path / "still_first.mkv"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(VTEST), "-t", "2", "-vf", "scale=384:288", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(video)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(video), "-i", str(shared / "data" / "photos" / "messi5.jpg"),
                    "-map", "1", "-map", "0", "-c", "copy", "-c:v:0", "png", "-disposition:v:0", "attached_pic",
                    str(tracks)], check=True)
    info = probe(str(tracks))
    assert (info.width, info.height) == (384, 288)
    assert frame_shapes(tracks) == [(288, 384, 3)] * 20


def test_a_resumed_file_seeks_to_the_keyframe_before_and_gives_the_same_frames(shared: Path) -> None:
    """A replacement for a stalled source starts at frame 300 of vtest by seeking to the last keyframe at or before
    it (decoding from there, not from frame 0): the frames it gives are those a plain read gives there, with their
    timestamps, numbered as in the whole file."""
    resumed = VideoSource(str(VTEST), max_frames=303, resume_at=300)
    resumed.open()
    try:
        frames = list(resumed.frames())
    finally:
        resumed.close()
    assert resumed.window is not None and resumed.window.seeks and 0 < resumed.window.seek_index <= 300
    plain = VideoSource(str(VTEST), max_frames=303)
    plain.open()
    try:
        expected = list(plain.frames())[300:]
    finally:
        plain.close()
    assert [f.seq for f in frames] == [300, 301, 302]
    assert [f.pts for f in frames] == [f.pts for f in expected]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(frames, expected))


def test_a_frame_past_the_size_limit_ends_the_input_wherever_it_comes(tmp_path: Path) -> None:
    """`vidparse serve` checks an input's frame size when it opens; a file that grows its frames midway (a small
    first frame, then huge ones) is stopped at the first one past the limit."""
    parts = []
    for name, size in (("small", "320x240"), ("large", "1280x720")):
        parts.append(tmp_path / f"{name}.ts")
        subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"color=s={size}:d=0.5:r=10", "-c:v",
                        "mpeg2video", "-f", "mpegts", str(parts[-1])], check=True, timeout=60)
    joined = tmp_path / "joined.ts"
    joined.write_bytes(b"".join(part.read_bytes() for part in parts))
    source = VideoSource(str(joined), limits=InputLimits(max_pixels=320 * 240 * 2))
    source.open()
    frames = 0
    with pytest.raises(FrameTooLargeError, match="has a 1280x720 frame, more than 153600 pixels"):
        for _ in source.frames():
            frames += 1
    source.close()
    assert 3 <= frames <= 5, "the small frames came, the first large one stopped it"
