"""A real RTSP server for tests: ``tests/rtsp_server.py`` run by the system Python as a child process.

Fixtures: ``h264_clip`` (50 vtest frames as H.264 at 25 fps) and ``rtsp_server`` (a started ``RtspServer``
looping that clip; kill, start again, freeze and thaw it to inject faults); ``rtsp_servers`` makes servers with
camera faults or credentials, started when the test says and stopped after it. Tests using the server are skipped
when the system Python lacks GStreamer's RTSP server; CI installs it with ``apt-get install -y`` and
``APT_PACKAGES``.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path

import av
import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
APT_PACKAGES = ("python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good "
                "gstreamer1.0-plugins-bad")
READY_TIMEOUT_S = 20.0
CLIP_FPS = 25


@cache
def server_unavailable() -> str | None:
    """Why the RTSP server cannot run here, or None when it can."""
    check = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        subprocess.run([SYSTEM_PYTHON, "-c", check], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return f"no GStreamer RTSP server for {SYSTEM_PYTHON}: apt-get install -y {APT_PACKAGES}"
    return None


def make_h264_clip(source: Path, target: Path, frames: int = 50, fps: int = CLIP_FPS, gop: int = CLIP_FPS,
                   size: tuple[int, int] | None = None) -> Path:
    """The first ``frames`` frames of ``source`` as H.264 in MP4 (scaled to ``size``, width x height, if given): a
    keyframe each ``gop`` frames, no B-frames, and one slice per frame (FFmpeg's RTSP demuxer hands out the slices of
    a multi-slice frame as separate frames)."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream("libx264", rate=fps)
        decoder = src.streams.video[0]
        stream.width, stream.height = size or (decoder.width, decoder.height)
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "26", "g": str(gop), "bf": "0"}
        stream.codec_context.thread_count = 1
        for index, frame in enumerate(src.decode(decoder)):
            if index == frames:
                break
            if size:
                frame = frame.reformat(width=size[0], height=size[1], format="yuv420p")
            frame.pts = None
            dst.mux(stream.encode(frame))
        dst.mux(stream.encode(None))
    return target


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (for connection-refused tests)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RtspServer:
    """One server process serving ``clip`` in a loop; keeps its port across kill and restart.

    ``port`` 0 lets the first start choose one (``url`` is known from then on); ``options`` are more
    ``rtsp_server.py`` flags (camera faults, credentials).
    """

    def __init__(self, clip: Path, fps: int = CLIP_FPS, path: str = "live", port: int = 0,
                 options: Sequence[str] = ()) -> None:
        self.clip = clip
        self.fps = fps
        self.mount = path
        self.port = port
        self.url = f"rtsp://127.0.0.1:{port}/{path}" if port else ""
        self.options = list(options)
        self._process: subprocess.Popen[str] | None = None

    def start(self) -> RtspServer:
        """Start serving; after ``kill()`` or ``stop()`` this starts again on the same port."""
        command = [SYSTEM_PYTHON, str(SERVER_SCRIPT), str(self.clip), "--port", str(self.port),
                   "--fps", str(self.fps), "--path", self.mount, *self.options]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        self.url = self._wait_ready()
        self.port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        return self

    def _wait_ready(self) -> str:
        assert self._process is not None and self._process.stdout is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if select.select([self._process.stdout], [], [], 0.1)[0]:
                line = self._process.stdout.readline()
                if line.startswith("READY "):
                    return line.split()[1]
                if not line:
                    break
        self.stop()
        raise RuntimeError(f"the RTSP server did not start within {READY_TIMEOUT_S} s (see its stderr)")

    def kill(self) -> None:
        """Die at once (SIGKILL), as a crashed or unplugged camera does."""
        self._signal(signal.SIGKILL)
        self._reap()

    def freeze(self) -> None:
        """Stop answering without closing anything (SIGSTOP): connections stay open, no data flows."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def stop(self) -> None:
        if self._process is None:
            return
        self.thaw()
        self._process.terminate()
        self._reap()

    def _signal(self, number: signal.Signals) -> None:
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, number)

    def _reap(self) -> None:
        assert self._process is not None
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
        self._process = None


@pytest.fixture(scope="session")
def h264_clip(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of vtest (50 frames, 768x576) as H.264 at 25 fps, a keyframe each second."""
    return make_h264_clip(shared / "data" / "video" / "vtest.avi", tmp_path_factory.mktemp("clips") / "vtest_h264.mp4")


@pytest.fixture
def rtsp_server(h264_clip: Path) -> Iterator[RtspServer]:
    """A running server looping ``h264_clip`` at 25 fps on 127.0.0.1; stopped after the test."""
    reason = server_unavailable()
    if reason:
        pytest.skip(reason)
    server = RtspServer(h264_clip).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def rtsp_servers(h264_clip: Path) -> Iterator[Callable[..., RtspServer]]:
    """``make(*options, port=0, clip=h264_clip)``: a server not started yet (with ``port`` its URL is known
    before it starts); every server made is stopped after the test."""
    reason = server_unavailable()
    if reason:
        pytest.skip(reason)
    made: list[RtspServer] = []

    def make(*options: str, port: int = 0, clip: Path = h264_clip) -> RtspServer:
        made.append(RtspServer(clip, port=port, options=options))
        return made[-1]

    try:
        yield make
    finally:
        for server in made:
            server.stop()
