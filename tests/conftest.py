"""Shared fixtures: real media from ../shared (never copied into the repo) and clips cut from it."""

from __future__ import annotations

import os
import shlex
import struct
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rtsp import h264_clip, rtsp_server, rtsp_servers  # noqa: F401  (fixtures: a real RTSP server, see tests/rtsp.py)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VIDPARSE_SHARED", REPO.parent / "shared")).resolve()
MODELS = SHARED / "models"
VTEST = SHARED / "data" / "video" / "vtest.avi"

if not os.environ.get("VIDPARSE_MODEL_DIR"):
    os.environ["VIDPARSE_MODEL_DIR"] = str(MODELS)


def cut_clip(source: Path, target: Path, packets: int) -> Path:
    """Stream-copy the first ``packets`` video packets (vtest's first keyframe is packet 0)."""
    with av.open(str(source)) as src, av.open(str(target), "w") as dst:
        stream = dst.add_stream_from_template(src.streams.video[0])
        for i, packet in enumerate(src.demux(src.streams.video[0])):
            if i >= packets or packet.dts is None:
                break
            packet.stream = stream
            dst.mux(packet)
    return target


@pytest.fixture(scope="session")
def shared() -> Path:
    if not VTEST.exists():
        pytest.fail(f"shared media not found at {SHARED}; set VIDPARSE_SHARED")
    return SHARED


@pytest.fixture(scope="session")
def clip(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 frames of vtest (MS-MPEG4v3 in AVI, 10 fps), cut without re-encoding."""
    return cut_clip(VTEST, tmp_path_factory.mktemp("clips") / "vtest12.avi", 12)


def vtest_h264(target: Path, frames: int, size: tuple[int, int] = (768, 576), tone_hz: float | None = None) -> Path:
    """The first ``frames`` vtest frames scaled to ``size`` as H.264 at 10 fps, with a mono AAC tone of ``tone_hz``
    as long as the video if given, written to ``target`` (MP4)."""
    with av.open(str(VTEST)) as src, av.open(str(target), "w") as dst:
        video = dst.add_stream("libx264", rate=10)
        video.width, video.height, video.pix_fmt = *size, "yuv420p"
        audio = dst.add_stream("aac", rate=48000) if tone_hz else None
        if audio:
            audio.layout = "mono"
        for i, frame in enumerate(src.decode(video=0)):
            if i == frames:
                break
            if (frame.width, frame.height) != size:
                frame = frame.reformat(*size)
            frame.pts = None
            dst.mux(video.encode(frame))
        dst.mux(video.encode(None))
        if audio:
            samples = 48000 * frames // 10
            tone = (0.3 * np.sin(2 * np.pi * tone_hz * np.arange(samples) / 48000)).astype(np.float32)
            for start in range(0, samples, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts, chunk.time_base = 48000, start, Fraction(1, 48000)
                dst.mux(audio.encode(chunk))
            dst.mux(audio.encode(None))
    return target


@pytest.fixture(scope="session")
def clip_with_audio(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 vtest frames as H.264 at 10 fps plus a 440 Hz AAC tone, in MP4."""
    return vtest_h264(tmp_path_factory.mktemp("clips") / "vtest_audio.mp4", 8, tone_hz=440)


@pytest.fixture(scope="session")
def vtest_frame(shared: Path) -> np.ndarray:
    """Frame 100 of vtest (BGR): seven or more people walking."""
    with av.open(str(VTEST)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i == 100:
                return frame.to_ndarray(format="bgr24")
    raise AssertionError("vtest has fewer than 101 frames")


def make_audio_only(path: Path) -> Path:
    """An MP4/M4A holding one AAC frame of silence and no video stream."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=16000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def mkv_without_a_frame_rate(path: Path, durations_ms: list[int]) -> Path:
    """H.264 frames lasting ``durations_ms`` each in Matroska without a frame rate in its header (no default
    duration, as muxers that know none write it; the duration counts the last frame's): FFmpeg guesses 1000 fps, its
    time base's, for a file of up to 5 frames."""
    starts_ms = [sum(durations_ms[:index]) for index in range(len(durations_ms))]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264")
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        stream.codec_context.time_base, stream.codec_context.framerate = Fraction(1, 1000), Fraction(0, 1)
        stream.options = {"bf": "0"}  # packets in presentation order: each is given its frame's duration
        for index, start_ms in enumerate([*starts_ms, None]):
            frame = None
            if start_ms is not None:
                frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), index * 40, np.uint8), format="bgr24")
                frame.pts, frame.time_base = start_ms, Fraction(1, 1000)
            for packet in stream.encode(frame):
                packet.duration = durations_ms[starts_ms.index(packet.pts)]
                container.mux(packet)
    return path


@dataclass
class VideoFacts:
    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: int
    duration_s: float
    pts_s: list[float]
    audio_codec: str | None
    audio_packets: int


def probe_video(path: Path) -> VideoFacts:
    """Decode every frame (what a player does) and report what the file really holds."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        pts = [float(f.pts * f.time_base) for f in container.decode(stream)]
        duration = float(stream.duration * stream.time_base) if stream.duration else container.duration / av.time_base
        audio = container.streams.audio[0] if container.streams.audio else None
        facts = VideoFacts(stream.codec_context.name, stream.codec_context.pix_fmt, stream.width, stream.height,
                           len(pts), duration, pts, audio.codec_context.codec.canonical_name if audio else None, 0)
    if facts.audio_codec:
        with av.open(str(path)) as container:
            facts.audio_packets = sum(1 for p in container.demux(audio=0) if p.size)
    return facts


def audio_packets(path: Path) -> list[tuple[float, float, bytes]]:
    """(pts and duration in seconds, bytes) of every audio packet: a copy keeps them all, a re-encode does not."""
    with av.open(str(path)) as container:
        return [(float(p.pts * p.time_base), float(p.duration * p.time_base), bytes(p))
                for p in container.demux(audio=0) if p.size]


def assert_audio_copied(copied: Path, source: Path) -> None:
    """Every audio packet of ``source`` with its bytes, duration and timestamp (the AAC priming packet's before 0
    too): copied, not re-encoded."""
    ours, theirs = audio_packets(copied), audio_packets(source)
    assert len(theirs) > 30 and [p[1:] for p in ours] == [p[1:] for p in theirs], "same bytes and durations"
    assert [p[0] for p in ours] == pytest.approx([p[0] for p in theirs], abs=1e-9), "same timestamps"


# A 10 ms 1 kHz beep at 1.0 s of the audio track's own clock, in silence: where it is heard tells the audio's place.
BEEP = r"aevalsrc=if(between(t\,1\,1.01)\,sin(2*PI*1000*t)\,0):s=48000:d=2.5"


def beep_heard_at(path: Path) -> float:
    """Where a player hears the beep from the video's start: ffmpeg applies the edit lists, keeps the file's clock
    (-copyts: the video's first frame is at 0 in every MP4 written here), pads what starts late with silence from 0
    and cuts what an edit list puts before 0."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-copyts", "-i", str(path), "-map", "0:a:0", "-af",
                          "aresample=async=1:first_pts=0", "-ac", "1", "-ar", "48000", "-f", "f32le", "-"],
                         capture_output=True, check=True).stdout
    loud = np.flatnonzero(np.abs(np.frombuffer(raw, np.float32)) > 0.3)
    assert len(loud), "the beep is heard"
    return float(loud[0] / 48000)


def beep_played_at(path: Path) -> float:
    """Where a browser hears the beep from the video's start: Chromium plays the audio's samples one after another
    from the first's time (edit lists applied), closing gaps in their timestamps that FFmpeg fills with silence
    (`beep_heard_at`). Within 10 ms of where a headless Chromium's analyser heard it (docs/faults.md)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    samples = np.concatenate([frame.to_ndarray().mean(axis=0) for frame in frames])
    loud = np.flatnonzero(np.abs(samples) > 0.3)
    assert len(loud) and frames[0].time is not None, "the beep is heard"
    return frames[0].time + float(loud[0] / frames[0].sample_rate)


def decode_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` grey pixels and holds almost none: PIL opens it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(100))) + chunk(b"IEND", b""))


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MB tmpfs (the tests need root, as in CI): room for the first fragments of a clip's video and its masks and
    stats, not for all of them."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1000k", "tmpfs", str(mount_point)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs ({mounted.stderr.strip()}): the tests need root, as in CI")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=False)


def wait_for_stats(path: Path, lines: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not (path.exists() and len(path.read_text().splitlines()) >= lines):
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.1)


def run_in_a_private_tmpfs(folder: Path, kilobytes: int, command: list[str],
                           timeout: float = 300) -> subprocess.CompletedProcess:
    """``command`` with a tmpfs of ``kilobytes`` mounted on ``folder`` that it alone sees (its own mount namespace;
    skipped without the right to mount)."""
    mount = f"mount -t tmpfs -o size={kilobytes}k tmpfs {shlex.quote(str(folder))}"
    if subprocess.run(["unshare", "-m", "sh", "-c", mount], capture_output=True).returncode != 0:
        pytest.skip("a private filesystem needs unshare and mount (root)")
    return subprocess.run(["unshare", "-m", "sh", "-c", f"{mount} && exec {shlex.join(command)}"], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def run_cli(*args: str, timeout: float = 600, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidparse", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


# A skipped test is a test that did not run: the run fails on any skip that is not listed here. Add an entry only
# with a reason that holds wherever the suite runs (nothing is allowed today). VIDPARSE_ALLOW_SKIPS=1 turns the
# check off for a local run (say, a machine without GStreamer's RTSP server); CI never sets it.
ALLOWED_SKIPS: dict[str, str] = {}  # test id (or its prefix) -> why skipping it is fine


def unallowed_skips(reports: list[pytest.TestReport]) -> list[str]:
    return [f"{r.nodeid}: {r.longrepr[2] if isinstance(r.longrepr, tuple) else r.longrepr}"
            for r in reports if r.skipped and not hasattr(r, "wasxfail")
            and not any(r.nodeid.startswith(allowed) for allowed in ALLOWED_SKIPS)]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("VIDPARSE_ALLOW_SKIPS") == "1" or exitstatus not in (0, 1):
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = unallowed_skips(reporter.stats.get("skipped", []) if reporter else [])
    if skipped:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if reporter:
            reporter.ensure_newline()
            reporter.write_sep("=", f"{len(skipped)} skipped test(s) not in ALLOWED_SKIPS (tests/conftest.py)",
                               red=True)
            for line in skipped:
                reporter.write_line(f"SKIPPED {line}")


from batch_media import batch_clips, batch_reference  # noqa: E402, F401  (fixtures: `vidparse batch` media; needs the names above)
