"""Live inputs against a real RTSP server on 127.0.0.1, and output that survives a killed writer.

Stage level only: VideoSource and VideoSink in a plain loop, faults injected into the server process.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from conftest import probe_video
from rtsp import CLIP_FPS, RtspServer, free_port
from vidparse.errors import BadInputError, StreamLostError
from vidparse.stages.sink import EncoderOptions, VideoSink
from vidparse.stages.source import (
    InputKind,
    LiveOptions,
    LiveTimeline,
    VideoSource,
    backoff_delay,
    in_presentation_order,
    input_kind,
)
from vidparse.stages.types import Frame

SOURCE_LOG = "vidparse.stages.source"
QUICK = LiveOptions(open_timeout_s=2.0, read_timeout_s=2.0, reconnect_attempts=20, backoff_initial_s=0.25,
                    backoff_max_s=1.0)
TB = Fraction(1, 90000)


def read_while(source: VideoSource, keep_going: Callable[[list[Frame]], bool]) -> list[Frame]:
    frames: list[Frame] = []
    for frame in source.frames():
        frames.append(frame)
        if not keep_going(frames):
            break
    return frames


def spans(seconds: float) -> Callable[[list[Frame]], bool]:
    """Keep reading until the frames' capture times span ``seconds``."""
    return lambda frames: frames[-1].captured_at - frames[0].captured_at < seconds


def assert_one_timeline(frames: list[Frame]) -> None:
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert all(b.pts > a.pts for a, b in zip(frames, frames[1:])), "timestamps must increase strictly"
    assert all(b.captured_at >= a.captured_at for a, b in zip(frames, frames[1:]))


def captured_since(moment: list[float], count: int) -> Callable[[list[Frame]], bool]:
    """Keep reading until ``count`` frames were captured after ``moment[0]`` (set by a fault thread)."""
    return lambda frames: not moment or len(frames) < count or frames[-count].captured_at < moment[0]


def gap_s(frames: list[Frame], after: float) -> float:
    """Seconds of stream time between the last frame captured before ``after`` and the first one after it."""
    before = [f for f in frames if f.captured_at < after][-1]
    later = next(f for f in frames if f.captured_at >= after)
    return float((later.pts - before.pts) * before.time_base)


def messages(caplog: pytest.LogCaptureFixture, level: int) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == SOURCE_LOG and r.levelno == level]


def without_a_cut_packet(warnings: list[logging.LogRecord], before: float) -> list[logging.LogRecord]:
    """``warnings`` but the one an outage may add first: a server killed or frozen can cut the packet in flight,
    whose decoding fails once (before ``before``, the server's return), before the outage is noticed."""
    cut = [r for r in warnings if r.getMessage().startswith("skipped an undecodable packet")]
    assert len(cut) <= 1 and all(r.created < before for r in cut), [r.getMessage() for r in cut]
    return [r for r in warnings if r not in cut]


# Pure parts: no server needed.

@pytest.mark.parametrize("url, kind", [
    ("clip.mp4", InputKind.FILE), ("/data/cam 1.mkv", InputKind.FILE), ("file:///tmp/a.mp4", InputKind.FILE),
    ("rtsp://10.0.0.5:554/stream1", InputKind.RTSP), ("RTSPS://cam/x", InputKind.RTSP),
    ("https://example.org/live.m3u8", InputKind.HTTP), ("/dev/video0", InputKind.CAMERA),
    ("/dev/video12", InputKind.CAMERA), ("/dev/videox", InputKind.FILE), ("srt://127.0.0.1:9000", InputKind.STREAM),
])
def test_input_kind_from_the_string(url: str, kind: InputKind) -> None:
    assert input_kind(url) is kind


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    delays = [[backoff_delay(attempt, 0.5, 4.0) for _ in range(200)] for attempt in range(1, 7)]
    for attempt, samples in enumerate(delays, start=1):
        ceiling = min(4.0, 0.5 * 2 ** (attempt - 1))
        assert ceiling / 2 <= min(samples) and max(samples) <= ceiling
        assert np.std(samples) > 0, "jittered"


def test_timeline_keeps_stream_spacing_and_shows_an_outage_as_a_gap() -> None:
    timeline = LiveTimeline(TB, Fraction(25))
    first = [timeline.stamp(pts, TB, 100.0 + i * 0.04) for i, pts in enumerate(range(7_000, 7_000 + 5 * 3600, 3600))]
    assert first == [0, 3600, 7200, 10800, 14400]
    timeline.rebase()  # reconnected 3 s later; the new session's timestamps start anywhere, the first may lack one
    assert timeline.stamp(None, TB, 103.16) == round(3.16 * 90000)
    assert timeline.stamp(123, TB, 103.2) == round(3.2 * 90000)
    assert timeline.stamp(3723, TB, 103.21) == round(3.2 * 90000) + 3600


def test_timeline_stays_strictly_increasing_on_bad_stream_timestamps() -> None:
    timeline = LiveTimeline(TB, Fraction(25))
    stamps = [timeline.stamp(pts, TB, 0.04 * i) for i, pts in
              enumerate([None, 0, 3600, 3600, 0, None, 10**12, 10**12 + 3600])]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert stamps[-1] - stamps[-2] == 3600, "after a jump the stream's own spacing is kept again"


def test_timeline_keeps_the_streams_clock_through_frames_decoded_out_of_order() -> None:
    """A camera sending B-frames, whose reordering FFmpeg learns as it goes, gives some frames out of order: the
    output keeps the stream's clock (each such frame just after the last) instead of re-basing on every one, which
    stretched a 10 s recording to 25 s."""
    timeline = LiveTimeline(TB, Fraction(25))
    order = [k + d for k in range(0, 60, 3) for d in (1, 2, 0)]  # 1, 2, 0, 4, 5, 3, ...: each third frame late
    stamps = [timeline.stamp(3600 * index, TB, 0.04 * i) for i, index in enumerate(order)]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    assert stamps[-1] - stamps[0] <= 3600 * 60, "the 60 frames span what the stream says, not more"


def test_frames_a_decoder_gives_out_of_order_are_put_back_in_order_and_others_wait_for_nothing() -> None:
    class Decoded:
        def __init__(self, pts: int | None) -> None:
            self.pts = pts

    given = [k + d for k in range(0, 60, 3) for d in (1, 2, 0)]  # as a camera's B-frames came out of FFmpeg
    out = [frame.pts for frame in in_presentation_order(Decoded(pts) for pts in given)]
    assert sorted(out) == sorted(given)
    assert out[6:] == sorted(out[6:]), "in order once it has seen how far the stream reorders"
    consumed: list[int] = []

    def in_order():
        for pts in range(10):
            consumed.append(pts)
            yield Decoded(pts)

    for frame in in_presentation_order(in_order()):
        assert consumed[-1] == frame.pts, "a stream in order is not held back"


def test_unreachable_url_fails_at_once_without_attempts(caplog: pytest.LogCaptureFixture) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/x"
    started = time.monotonic()
    with pytest.raises(BadInputError, match="cannot open .*Connection refused") as error:
        VideoSource(url, live=LiveOptions(reconnect_attempts=0, open_timeout_s=2.0)).open()
    assert time.monotonic() - started < 2.0
    assert "\n" not in error.value.message and error.value.hint
    assert not messages(caplog, logging.WARNING)


def test_unreachable_url_gives_up_after_the_attempts(caplog: pytest.LogCaptureFixture) -> None:
    url = f"rtsp://127.0.0.1:{free_port()}/x"
    options = LiveOptions(reconnect_attempts=2, backoff_initial_s=0.05, backoff_max_s=0.1)
    with pytest.raises(BadInputError, match="2 reconnect attempts failed"):
        VideoSource(url, live=options).open()
    warnings = [r.getMessage() for r in messages(caplog, logging.WARNING)]
    assert len(warnings) == 2 and "(attempt 1 of 2)" in warnings[0] and "(attempt 2 of 2)" in warnings[1]


def test_missing_camera_is_a_clear_error() -> None:
    with pytest.raises(BadInputError, match="cannot open /dev/video99: No such file or directory"):
        VideoSource("/dev/video99").open()


def test_stop_ends_a_reconnect_wait() -> None:
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    source = VideoSource(f"rtsp://127.0.0.1:{free_port()}/x", live=LiveOptions(backoff_initial_s=30, backoff_max_s=30),
                         stop=stop)
    started = time.monotonic()
    with pytest.raises(BadInputError, match="stopped"):
        source.open()
    assert time.monotonic() - started < 2


# Against the real server.

@pytest.mark.slow
@pytest.mark.timeout(90)
def test_twenty_seconds_of_rtsp_into_a_valid_mp4(rtsp_server: RtspServer, tmp_path: Path) -> None:
    source = VideoSource(rtsp_server.url, live=QUICK)
    info = source.open()
    assert info.live and (info.width, info.height, info.codec) == (768, 576, "h264")
    sink = VideoSink(tmp_path / "live.mp4", info, EncoderOptions(crf=30, preset="ultrafast"))
    sink.open()
    frames = []
    for frame in source.frames():
        sink.write(frame)
        frames.append(frame)
        if not spans(20.0)(frames):
            break
    sink.close()
    source.close()
    assert len(frames) >= 20 * CLIP_FPS * 0.8
    assert_one_timeline(frames)
    assert np.median(np.diff([f.pts for f in frames])) == 90000 // CLIP_FPS
    facts = probe_video(tmp_path / "live.mp4")
    assert (facts.codec, facts.frames) == ("h264", len(frames))
    assert all(b > a for a, b in zip(facts.pts_s, facts.pts_s[1:]))
    assert facts.duration_s == pytest.approx(float((frames[-1].pts - frames[0].pts) * TB), abs=0.5)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_reconnects_after_the_server_is_killed_and_restarted(rtsp_server: RtspServer,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SOURCE_LOG)
    source = VideoSource(rtsp_server.url, live=QUICK)
    source.open()
    restarted_at: list[float] = []

    def restart() -> None:
        rtsp_server.start()
        restarted_at.append(time.time())

    def fault_then_recover(frames: list[Frame]) -> bool:
        if len(frames) == 2 * CLIP_FPS:
            rtsp_server.kill()
            threading.Timer(3.0, restart).start()
        return captured_since(restarted_at, 2 * CLIP_FPS)(frames)

    frames = read_while(source, fault_then_recover)
    source.close()
    assert_one_timeline(frames)
    assert source.reconnects == 1
    assert sum(f.captured_at < restarted_at[0] for f in frames) >= 2 * CLIP_FPS, "frames from before the kill"
    # The server was down 3 s; the gap is shorter by what FFmpeg buffered while opening (about 1 s).
    assert gap_s(frames, restarted_at[0]) >= 2.0, "the outage shows in the timestamps"
    others = [r.getMessage() for r in without_a_cut_packet(messages(caplog, logging.WARNING), restarted_at[0])]
    assert others[0].startswith(f"disconnected from {rtsp_server.url} (the stream ended); reconnecting in")
    assert [r.getMessage() for r in messages(caplog, logging.INFO)] == [f"reconnected to {rtsp_server.url}"]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_frozen_server_is_detected_within_the_read_timeout(rtsp_server: RtspServer,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SOURCE_LOG)
    source = VideoSource(rtsp_server.url, live=QUICK)
    source.open()
    frozen_at: list[float] = []
    thawed_at: list[float] = []

    def thaw() -> None:
        rtsp_server.thaw()
        thawed_at.append(time.time())

    def freeze_then_thaw(frames: list[Frame]) -> bool:
        if len(frames) == 2 * CLIP_FPS:
            rtsp_server.freeze()
            frozen_at.append(time.time())
            threading.Timer(3 * QUICK.read_timeout_s, thaw).start()
        return captured_since(thawed_at, 2 * CLIP_FPS)(frames)

    frames = read_while(source, freeze_then_thaw)
    source.close()
    assert_one_timeline(frames)
    warnings = without_a_cut_packet(messages(caplog, logging.WARNING), thawed_at[0])
    assert warnings[0].getMessage().startswith(f"disconnected from {rtsp_server.url}")
    detected_after = warnings[0].created - frozen_at[0]
    assert detected_after <= QUICK.read_timeout_s + 0.5, f"stall detected after {detected_after:.1f} s"
    attempts_while_frozen = [r for r in warnings if r.created < thawed_at[0]]
    assert len(attempts_while_frozen) >= 2, "reconnect attempts fail (open timeout) while the server is frozen"
    assert messages(caplog, logging.INFO)[-1].created > thawed_at[0]


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_stream_lost_without_reconnect_attempts(rtsp_server: RtspServer) -> None:
    source = VideoSource(rtsp_server.url, live=LiveOptions(reconnect_attempts=0))
    source.open()
    frames = source.frames()
    for _ in range(CLIP_FPS):
        next(frames)
    rtsp_server.kill()
    with pytest.raises(StreamLostError, match="the stream ended; reconnecting is off"):
        for _ in frames:
            pass
    source.close()


# Output that a killed process leaves behind.

WRITER = textwrap.dedent("""
    import sys, time
    from fractions import Fraction
    from pathlib import Path
    import numpy as np
    from vidparse.stages.sink import EncoderOptions, VideoSink
    from vidparse.stages.source import StreamInfo
    from vidparse.stages.types import Frame

    path, segment_seconds = Path(sys.argv[1]), float(sys.argv[2])
    info = StreamInfo(320, 240, Fraction(1, 90000), Fraction(25), 0, None, "h264", False, live=True)
    sink = VideoSink(path, info, EncoderOptions(23, "ultrafast", segment_seconds, fragmented=True))
    sink.open()
    for seq in range(10**9):
        image = np.full((240, 320, 3), (seq * 7) % 256, np.uint8)
        sink.write(Frame(seq, seq * 3600, info.time_base, image, captured_at=time.time()))
        print(seq + 1, flush=True)
        time.sleep(0.005)
""")


def write_then_kill(directory: Path, segment_seconds: float, frames: int) -> None:
    """Run a writer in a child process and SIGKILL it once it has written ``frames`` frames."""
    process = subprocess.Popen([sys.executable, "-c", WRITER, str(directory / "out.mp4"), str(segment_seconds)],
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    for line in process.stdout:
        if int(line) >= frames:
            break
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stdout.close()
    assert process.returncode == -signal.SIGKILL


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_fragmented_mp4_of_a_killed_writer_plays(tmp_path: Path) -> None:
    write_then_kill(tmp_path, 0, frames=4 * CLIP_FPS)
    facts = probe_video(tmp_path / "out.mp4")
    assert facts.frames >= 2 * CLIP_FPS, "at most the last fragment and the encoder's delay are lost"
    assert facts.pts_s[:3] == pytest.approx([0, 0.04, 0.08])
    assert all(b > a for a, b in zip(facts.pts_s, facts.pts_s[1:]))


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_segments_of_a_killed_writer_all_play(tmp_path: Path) -> None:
    """2 s segments, killed 1.6 s into the second: its first 1 s fragment was flushed and plays."""
    write_then_kill(tmp_path, 2.0, frames=int(3.6 * CLIP_FPS))
    segments = sorted(tmp_path.glob("out_*.mp4"), key=lambda p: p.stat().st_mtime)
    assert len(segments) == 2
    facts = probe_video(segments[0])
    assert facts.frames == 2 * CLIP_FPS and facts.pts_s[0] == 0, segments[0].name
    last = probe_video(segments[1])  # the one being written when the process died
    assert last.frames >= CLIP_FPS // 2, "at most the open fragment and the encoder's delay are lost"
    assert last.pts_s[0] == 0 and all(b > a for a, b in zip(last.pts_s, last.pts_s[1:]))
