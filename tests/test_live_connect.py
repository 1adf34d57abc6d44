"""The first connection to a live input: each row of ``CONNECT_FAILURES`` against the real RTSP server.

Permanent failures end ``open()`` at once, even with unlimited attempts; transient ones are logged, retried with
backoff and counted against ``reconnect_attempts``. Servers play camera faults (see ``tests/rtsp_server.py``).
"""

from __future__ import annotations

import functools
import itertools
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import probe_video, run_cli, vtest_h264
from rtsp import RtspServer, free_port
from vidparse.errors import BadInputError
from vidparse.stages.source import (
    CONNECT_FAILURES,
    LiveOptions,
    NoFrameSizeError,
    NoKeyframeError,
    VideoSource,
    is_permanent,
)

SOURCE_LOG = "vidparse.stages.source"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "live.md"
UNLIMITED = LiveOptions(open_timeout_s=2.0, read_timeout_s=2.0, reconnect_attempts=-1, backoff_initial_s=0.2,
                        backoff_max_s=0.5)
PATIENT = replace(UNLIMITED, reconnect_attempts=20)  # where a bug would otherwise retry forever
# The clip has a keyframe each second; joined one frame after it, the next comes 0.96 s later: after an attempt
# of 2 x 0.3 s, well before one of 2 x 2 s.
JOIN_AFTER_KEYFRAME = ("--join-at", "1")
TOO_SHORT = LiveOptions(open_timeout_s=0.3, read_timeout_s=2.0, reconnect_attempts=2, backoff_initial_s=0.1,
                        backoff_max_s=0.2)

Make = Callable[..., RtspServer]


@contextmanager
def after(seconds: float, action: Callable[[], object]) -> Iterator[None]:
    """Run ``action`` from a thread ``seconds`` from now; on leaving, wait for it, so that a server it starts is
    also stopped by the fixture when the test fails early."""
    timer = threading.Timer(seconds, action)
    timer.start()
    try:
        yield
    finally:
        timer.join()


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SOURCE_LOG and r.levelno == logging.WARNING]


def opens(url: str, options: LiveOptions = PATIENT) -> tuple[int, int]:
    """Open ``url``, read one frame; the frame size."""
    source = VideoSource(url, max_frames=1, live=options)
    try:
        info = source.open()
        assert len(list(source.frames())) == 1
        return info.width, info.height
    finally:
        source.close()


def fails_at_once(url: str, match: str, caplog: pytest.LogCaptureFixture) -> None:
    """A permanent failure: no attempt logged, well within the open timeout, although attempts are unlimited
    (should it be retried, a stop after 3 open timeouts ends the test with "stopped")."""
    stop = threading.Event()
    timer = threading.Timer(3 * UNLIMITED.open_timeout_s, stop.set)
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(BadInputError, match=match):
            VideoSource(url, live=UNLIMITED, stop=stop).open()
    finally:
        timer.cancel()
    assert time.monotonic() - started < UNLIMITED.open_timeout_s
    assert not warnings(caplog)


def retried_then_given_up(url: str, match: str, caplog: pytest.LogCaptureFixture) -> None:
    """A transient failure: each attempt logged, until ``TOO_SHORT.reconnect_attempts`` are used up."""
    with pytest.raises(BadInputError, match=f"{match}.*2 reconnect attempts failed"):
        VideoSource(url, live=TOO_SHORT).open()
    logged = warnings(caplog)
    assert len(logged) == 2 and all(re.search(match, message) for message in logged), logged
    assert "(attempt 1 of 2)" in logged[0] and "(attempt 2 of 2)" in logged[1]


# The table itself.

def test_docs_table_is_the_code_table() -> None:
    rows = re.findall(r"^\| [^|]+ \| `(\w+)` \| (permanent|transient) \|", DOCS.read_text(), re.MULTILINE)
    assert rows == [(kind.__name__, "permanent" if permanent else "transient")
                    for kind, permanent in CONNECT_FAILURES]


@pytest.mark.parametrize("error, permanent", [
    (av.error.ProtocolNotFoundError(-1, "Protocol not found"), True),
    (av.error.HTTPUnauthorizedError(-1, "401 Unauthorized"), True),
    (av.error.HTTPForbiddenError(-1, "403 Forbidden"), True),  # gst-rtsp-server cannot send it
    (av.error.HTTPNotFoundError(-1, "404 Not Found"), True),
    (av.error.PermissionError(13, "Permission denied"), True),
    (av.error.ConnectionRefusedError(111, "Connection refused"), False),
    (av.error.ConnectionResetError(104, "Connection reset by peer"), False),
    (av.error.HTTPServerError(-1, "503 Service Unavailable"), False),
    (av.error.ExitError(-1, "Immediate exit requested"), False),
    (NoFrameSizeError("no frame size"), False),
    (NoKeyframeError("no keyframe"), False),
])
def test_errors_that_no_server_here_can_cause_are_sorted_too(error: Exception, permanent: bool) -> None:
    assert is_permanent(error) is permanent


# Permanent rows.

def test_wrong_scheme_fails_at_once(caplog: pytest.LogCaptureFixture) -> None:
    fails_at_once(f"rtps://127.0.0.1:{free_port()}/live", "Protocol not found", caplog)


def test_a_malformed_url_fails_at_once(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    port = free_port()
    for url, why in ((f"rtsp://[::1:{port}/x", "Invalid IPv6 URL"), (f"rtsp://127.0.0.1:{port}/a b", "a space"),
                     ("rtsp://127.0.0.1:x/live", "Port"), ("http:///live.m3u8", "no host")):
        fails_at_once(url, f"not a well-formed URL: .*{why}", caplog)
    result = run_cli("run", f"rtsp://[::1:{port}/x", "-o", str(tmp_path / "out.mp4"), timeout=60)
    assert result.returncode == 3, result.stderr
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [
        f"error: input rtsp://[::1:{port}/x is not a well-formed URL: Invalid IPv6 URL"], result.stderr


def test_missing_or_wrong_credentials_fail_at_once(rtsp_servers: Make, caplog: pytest.LogCaptureFixture,
                                                   tmp_path: Path) -> None:
    server = rtsp_servers("--user", "viewer:secret").start()
    for credentials in ("", "viewer:wrong@"):
        fails_at_once(server.url.replace("rtsp://", f"rtsp://{credentials}"), "401", caplog)
    with pytest.raises(BadInputError) as refused:
        VideoSource(server.url.replace("rtsp://", "rtsp://viewer:wrong@"), live=TOO_SHORT).open()
    assert server.url in refused.value.message and "wrong" not in refused.value.message  # no password shown
    assert opens(server.url.replace("rtsp://", "rtsp://viewer:secret@")) == (768, 576)
    run = run_cli("run", server.url.replace("rtsp://", "rtsp://viewer:secret@"), "-o", str(tmp_path / "o.mp4"),
                  "--model", "bodypix", "--max-frames", "3", timeout=120)
    assert run.returncode == 0 and "secret" not in run.stdout + run.stderr, run.stderr  # the progress line too


def test_wrong_path_fails_at_once(rtsp_server: RtspServer, caplog: pytest.LogCaptureFixture) -> None:
    fails_at_once(rtsp_server.url + "-missing", "404", caplog)


def test_wrong_path_on_a_server_started_late_fails_once_it_answers(rtsp_servers: Make,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    server = rtsp_servers(port=free_port())
    with after(0.5, server.start), pytest.raises(BadInputError, match="404"):
        VideoSource(server.url + "-missing", live=PATIENT).open()
    assert all("Connection refused" in message for message in warnings(caplog))


def test_stream_without_video_fails_at_once(rtsp_servers: Make, caplog: pytest.LogCaptureFixture) -> None:
    fails_at_once(rtsp_servers("--audio-only").start().url, "has no video stream", caplog)


# Transient rows.

def test_server_started_late_is_reached(rtsp_servers: Make, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=SOURCE_LOG)
    server = rtsp_servers(port=free_port())
    with after(1.5, server.start):
        assert opens(server.url) == (768, 576)
    logged = warnings(caplog)
    assert logged and all("Connection refused" in message for message in logged)
    assert logged[0].startswith(f"cannot connect to {server.url} (Connection refused); reconnecting in")
    assert caplog.records[-1].getMessage() == f"connected to {server.url}"


@pytest.mark.slow
def test_frozen_server_times_out_until_thawed(rtsp_servers: Make, caplog: pytest.LogCaptureFixture) -> None:
    server = rtsp_servers().start()
    server.freeze()
    with after(3.0, server.thaw):
        assert opens(server.url, LiveOptions(open_timeout_s=1.0, reconnect_attempts=10, backoff_initial_s=0.2,
                                             backoff_max_s=0.2)) == (768, 576)
    assert warnings(caplog) and all("no answer within 1 s" in message for message in warnings(caplog))


def test_no_frame_size_yet_is_retried(rtsp_servers: Make, caplog: pytest.LogCaptureFixture) -> None:
    """A camera joined between keyframes whose SDP lacks the SPS: the size comes with the next keyframe."""
    server = rtsp_servers(*JOIN_AFTER_KEYFRAME).start()
    retried_then_given_up(server.url, "connected, but no frame size within 2 x 0.3 s", caplog)
    assert opens(server.url) == (768, 576), "learnt from the stream when the attempt lasts long enough"


def test_no_keyframe_yet_is_retried(rtsp_servers: Make, caplog: pytest.LogCaptureFixture) -> None:
    """The frame size is known from the SPS sent first, the picture waits for the next keyframe."""
    server = rtsp_servers(*JOIN_AFTER_KEYFRAME, "--sps-on-join").start()
    retried_then_given_up(server.url, "connected, but no keyframe within 2 x 0.3 s", caplog)
    assert opens(server.url) == (768, 576)


def test_a_stop_during_an_attempt_that_then_connects_keeps_no_connection(rtsp_servers: Make,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Told to stop while it waits for the camera's first keyframe (which comes 0.96 s after joining), the source
    neither says it connected nor goes on reading."""
    caplog.set_level(logging.INFO, logger=SOURCE_LOG)
    server = rtsp_servers(*JOIN_AFTER_KEYFRAME, "--sps-on-join").start()
    stop = threading.Event()
    with after(0.3, stop.set), pytest.raises(BadInputError, match="stopped before it could be opened"):
        VideoSource(server.url, live=PATIENT, stop=stop).open()
    assert not [r for r in caplog.records if r.name == SOURCE_LOG and "connected to" in r.getMessage()]


@pytest.mark.slow
def test_server_gone_mid_handshake_is_retried(rtsp_servers: Make, caplog: pytest.LogCaptureFixture) -> None:
    server = rtsp_servers().start()
    server.freeze()
    with after(0.5, server.kill), after(2.0, server.start):
        assert opens(server.url) == (768, 576)
    assert "Invalid data found" in warnings(caplog)[0]


def test_a_file_over_http_connects_like_a_stream_and_is_read_like_a_file(clip: Path) -> None:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(clip.parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        source = VideoSource(f"http://127.0.0.1:{server.server_address[1]}/{clip.name}", live=PATIENT)
        try:
            info = source.open()
            frames = list(source.frames())
        finally:
            source.close()
            server.shutdown()
    assert not info.live
    assert [f.seq for f in frames] == list(range(probe_video(clip).frames)), "every frame, the first one too"


def test_a_photo_over_http_is_refused_with_its_own_reason_not_a_camera_hint(shared: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """A URL of a photo failed as "cannot open URL: input URL is a still image", hinting at the address, the
    credentials and the camera; now the still image's own error, with the way to parse it (download it first)."""
    photos = shared / "data" / "photos"
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(photos))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/messi5.jpg"
        try:
            with pytest.raises(BadInputError) as raised:
                VideoSource(url, live=PATIENT).open()
        finally:
            server.shutdown()
    assert raised.value.message == f"input {url} is a still image, not a video"
    assert "download" in (raised.value.hint or "") and "credentials" not in (raised.value.hint or "")
    assert not warnings(caplog), "refused at once, not retried"


def test_a_transport_stream_file_over_http_is_read_once_like_a_file(tmp_path: Path) -> None:
    """A .ts file has no duration in its container; the server's length says it is a file: read once to its end,
    not taken for a stream that ended and read again from its start on every reconnect."""
    clip = vtest_h264(tmp_path / "c.mp4", 10)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-c", "copy", str(tmp_path / "c.ts")], check=True)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        source = VideoSource(f"http://127.0.0.1:{server.server_address[1]}/c.ts", live=PATIENT)
        try:
            info = source.open()
            frames = list(itertools.islice(source.frames(), 25))
        finally:
            source.close()
            server.shutdown()
    assert not info.live
    assert [f.seq for f in frames] == list(range(10))


def test_a_file_over_http_keeps_every_frame_under_the_default_policy(clip: Path, tmp_path: Path) -> None:
    """`vidparse run` on a file's URL: its source opens it as a file, so the default policy ("auto") keeps every
    frame however slow the parser, as for a local path, where a live input would drop the ones waiting."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(clip.parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            result = run_cli("run", f"http://127.0.0.1:{server.server_address[1]}/{clip.name}", "-o",
                             str(tmp_path / "o.mp4"), "--workers", "1", "--config",
                             str(Path(__file__).parent / "fast.yaml"))
        finally:
            server.shutdown()
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / "o.mp4").frames == probe_video(clip).frames, result.stdout


def run_over_plain_http(video: Path, output: Path) -> tuple[subprocess.CompletedProcess, str]:
    """`vidparse run` on ``video`` served by Python's own HTTP server (no Range requests), and the URL it read."""
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(video.parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"
        try:
            return run_cli("run", url, "-o", str(output), "--workers", "1", "--config",
                           str(Path(__file__).parent / "fast.yaml"), timeout=60), url
        finally:
            server.shutdown()


def test_an_mp4_indexed_at_its_end_on_a_server_without_ranges_fails_at_once(tmp_path: Path) -> None:
    """FFmpeg reads the index (moov) at the end of an MP4 that is not fast-start, then must seek back to its frames;
    a server that answers every request with the whole file (http.server ignores Range) cannot take it there. Every
    attempt fails alike: one line that says how to fix it and exit 3, not attempts for ever."""
    video = tmp_path / "index_last.mp4"
    noise = np.random.default_rng(0)
    with av.open(str(video), "w") as container:  # PyAV writes the moov atom after the frames
        stream = container.add_stream("libx264", rate=5, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(12):  # lossless noise: frames past FFmpeg's read buffer, within which it could go back
            frame = av.VideoFrame.from_ndarray(noise.integers(0, 256, (64, 64, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    data = video.read_bytes()
    assert data.find(b"mdat") < data.find(b"moov") and len(data) > 64 * 1024
    result, url = run_over_plain_http(video, tmp_path / "o.mp4")
    assert result.returncode == 3, result.stderr
    assert result.stderr.splitlines() == [
        f"error: cannot read {url}: none of this MP4's frames could be reached, as when the server does not allow "
        "seeking (no HTTP Range requests) and the MP4 keeps its index after its frames, or when the connection breaks "
        "while it is probed (Input/output error)",
        "hint: if it fails alike again, make it fast-start (ffmpeg -i IN -c copy -movflags +faststart OUT) or "
        "download it first"], result.stderr


def test_a_connection_cut_while_an_mp4_is_probed_is_not_called_a_server_without_ranges(tmp_path: Path) -> None:
    """A fast-start MP4 on a server that answers Range requests, its first answer cut short just past the index:
    FFmpeg's probing reaches no frame, as on a server without ranges, and the error said "the server does not allow
    seeking ... this MP4 keeps its index after its frames", both untrue."""
    fast = tmp_path / "faststart.mp4"  # PyAV's MP4 muxer writes the index last: remuxed to put it first
    with av.open(str(vtest_h264(tmp_path / "indexed_last.mp4", 2))) as source, av.open(str(fast), "w", options={"movflags": "+faststart"}) \
            as target:
        stream = target.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                target.mux(packet)
    data = fast.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    answers: list[str | None] = []

    class RangesCutOnce(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            asked = self.headers.get("Range")
            answers.append(asked)
            start = int(asked.split("=")[1].split("-")[0]) if asked else 0
            self.send_response(206 if asked else 200)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            self.end_headers()
            self.wfile.write(data[start:data.find(b"mdat") + 100] if len(answers) == 1 else data[start:])

    with ThreadingHTTPServer(("127.0.0.1", 0), RangesCutOnce) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with pytest.raises(BadInputError) as raised:
                VideoSource(f"http://127.0.0.1:{server.server_address[1]}/fast.mp4", live=TOO_SHORT).open()
        finally:
            server.shutdown()
    said = f"{raised.value.message} | {raised.value.hint}"
    assert "or when the connection breaks while it is probed" in said and "if it fails alike again" in said, said


def test_a_two_frame_mp4_over_http_is_parsed_whole(tmp_path: Path) -> None:
    """A clip so short that its decoder gives every frame only at the demuxer's end: connecting decodes the first one
    and reads that end, and the rest must come from what it decoded, not from a second end (it failed
    'unexpected EOFError', exit 7, with the second frame lost)."""
    video = vtest_h264(tmp_path / "two.mp4", 2)
    result, _ = run_over_plain_http(video, tmp_path / "o.mp4")
    assert result.returncode == 0, result.stderr
    assert probe_video(tmp_path / "o.mp4").frames == 2


@pytest.mark.slow
def test_sigterm_while_connecting_is_an_interruption_and_the_line_shows_the_attempts(tmp_path: Path) -> None:
    """`vidparse run` on a camera nobody answers yet: the progress line says which attempt failed and why; SIGTERM
    to the whole process group (as a service manager sends it) ends the run as interrupted (exit 130), not as a
    source process that died on a damaged input."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vidparse", "run", f"rtsp://127.0.0.1:{free_port()}/cam", "-o",
         str(tmp_path / "out.mp4"), "--workers", "1", "--config", str(Path(__file__).parent / "fast.yaml"),
         "--open-timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "200"},
        start_new_session=True)
    try:
        time.sleep(4)  # a few attempts fail meanwhile (backoff 0.5 s, 1 s, ...)
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr
    assert "died" not in stderr and "damaged" not in stderr and "error:" not in stderr, stderr
    assert re.search(r"connecting: attempt [2-9]\d* failed \(Connection refused\)", stderr), stderr
    assert "interrupted before a frame was written" in stderr
