"""`vidparse run` on a live RTSP stream from a real server on 127.0.0.1: reconnects, Ctrl-C, bounded latency."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import probe_video
from rtsp import CLIP_FPS, RtspServer, free_port, make_h264_clip

# tests/fast.yaml keeps parsing near a few fps on 2 cores: still slower than the 25 fps camera.
LIVE_FLAGS = ["--workers", "1", "--read-timeout", "2", "--open-timeout", "3", "--config", str(Path(__file__).parent / "fast.yaml")]


def start_cli(url: str, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "vidparse", "run", url, "-o", str(out), *LIVE_FLAGS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "COLUMNS": "200"}, start_new_session=True)


def interrupt(process: subprocess.Popen) -> tuple[float, str]:
    """Ctrl-C; returns how long the process took to exit and what it printed on stderr."""
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, stderr = process.communicate(timeout=30)
    return time.monotonic() - started, stderr


def run_cli(url: str, out: Path, *extra: str, timeout_s: float = 120) -> subprocess.CompletedProcess:
    process = start_cli(url, out, *extra)
    try:
        stdout, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:  # the pipeline's processes too: they hold the pipes open
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="session")
def camera_clip(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of vtest with a single keyframe: a camera's 2 s keyframe interval."""
    return make_h264_clip(shared / "data" / "video" / "vtest.avi", tmp_path_factory.mktemp("clips") / "gop2.mp4",
                          gop=2 * CLIP_FPS)


def stats_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_twenty_seconds_live_then_ctrl_c(rtsp_server: RtspServer, tmp_path: Path) -> None:
    """Parsing (about 3 fps on one worker) is slower than the camera (25 fps): frames are dropped, latency stays
    bounded, timestamps only go up, and Ctrl-C leaves a file that plays to its end."""
    process = start_cli(rtsp_server.url, tmp_path / "live.mp4", "--stats", str(tmp_path / "stats.jsonl"))
    time.sleep(20)
    exit_after, stderr = interrupt(process)
    assert process.returncode == 130, stderr
    assert exit_after < 5
    facts = probe_video(tmp_path / "live.mp4")
    stats = stats_lines(tmp_path / "stats.jsonl")
    assert facts.codec == "h264" and facts.frames == len(stats) >= 5
    assert all(b > a for a, b in zip(facts.pts_s, facts.pts_s[1:])), "timestamps increase monotonically"
    # Bounded: a frame waits for at most the frame being parsed before it, so latency stays within a few parse
    # times whatever the machine's speed; and it does not grow: the last frames wait no longer than the first.
    work_ms = sorted(sum(s["timings_ms"].get(k, 0) for k in ("detect", "parse")) for s in stats)
    latencies = [s["latency_ms"] for s in stats]
    p95 = sorted(latencies)[int(len(latencies) * 0.95)]
    assert p95 < 3 * work_ms[int(len(work_ms) * 0.95)] + 1500, (p95, work_ms)
    quarter = len(latencies) // 4
    early, late = sorted(latencies[:quarter])[quarter // 2], sorted(latencies[-quarter:])[quarter // 2]
    assert late < 1.5 * early + 500, f"latency grew from {early} to {late} ms"
    summary = stderr.replace("\n", " ")
    assert "frames dropped (live policy)" in summary and "latency p50 / p95" in summary
    assert "decode, with the wait for the camera" in " ".join(summary.split()), "not called busy time"


@pytest.mark.slow
def test_server_killed_and_restarted_reconnects_by_itself(rtsp_server: RtspServer, tmp_path: Path) -> None:
    process = start_cli(rtsp_server.url, tmp_path / "live.mp4", "--stats", str(tmp_path / "stats.jsonl"))
    time.sleep(8)
    rtsp_server.kill()
    time.sleep(3)
    rtsp_server.start()
    time.sleep(10)
    _, stderr = interrupt(process)
    assert process.returncode == 130, stderr
    assert "disconnected from" in stderr and "reconnected to" in stderr
    times = [s["time_s"] for s in stats_lines(tmp_path / "stats.jsonl")]
    gap_at = max(range(1, len(times)), key=lambda i: times[i] - times[i - 1])
    assert times[gap_at] - times[gap_at - 1] >= 2, "the outage shows as a gap"
    assert gap_at >= 3 and len(times) - gap_at >= 3, "frames from before and after the outage"
    written = probe_video(tmp_path / "live.mp4").pts_s
    assert len(written) == len(times)
    assert all(b > a for a, b in zip(written, written[1:])), "the file's timestamps rise across the reconnect"
    assert written[gap_at] - written[gap_at - 1] >= 2, "and keep the outage as a gap"


@pytest.mark.slow
def test_stream_lost_without_reconnects_exits_6_with_a_playable_file(rtsp_server: RtspServer, tmp_path: Path) -> None:
    stats = tmp_path / "stats.jsonl"
    process = start_cli(rtsp_server.url, tmp_path / "live.mp4", "--reconnect-attempts", "0", "--stats", str(stats))
    deadline = time.monotonic() + 60
    while not (stats.exists() and len(stats.read_text().splitlines()) >= 5):
        assert time.monotonic() < deadline and process.poll() is None, "the run made no progress"
        time.sleep(0.1)
    rtsp_server.kill()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 6, stderr
    (line,) = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert "reconnecting is off" in line and "hint:" in stderr and "Traceback" not in stderr
    assert probe_video(tmp_path / "live.mp4").frames == len(stats_lines(stats)) >= 5, "every frame read is written"


def test_unreachable_stream_without_reconnects_fails_fast(tmp_path: Path) -> None:
    started = time.monotonic()
    process = start_cli(f"rtsp://127.0.0.1:{free_port()}/none", tmp_path / "live.mp4", "--reconnect-attempts", "0")
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 3
    assert time.monotonic() - started < 15
    assert [line for line in stderr.splitlines() if line.startswith("error:")][0].startswith("error: cannot open rtsp://")
    assert "Traceback" not in stderr
    assert not (tmp_path / "live.mp4").exists()


@pytest.mark.slow
def test_keyframe_mode_on_a_live_stream_carries_labels_across_dropped_frames(rtsp_server: RtspServer,
                                                                            tmp_path: Path) -> None:
    process = start_cli(rtsp_server.url, tmp_path / "live.mp4", "--stats", str(tmp_path / "stats.jsonl"),
                        "--parse-every", "3")
    time.sleep(12)
    _, stderr = interrupt(process)
    assert process.returncode == 130, stderr
    stats = stats_lines(tmp_path / "stats.jsonl")
    assert probe_video(tmp_path / "live.mp4").frames == len(stats) >= 5
    carried = [s for s in stats if s["carried_from"] is not None]
    assert carried and len(carried) < len(stats), "both parsed and carried frames"
    for record in carried:
        assert record["carried_from"] < record["seq"] and "propagate" in record["timings_ms"]
        assert "parse" not in record["timings_ms"]
    parsed_seqs = {s["seq"] for s in stats if s["carried_from"] is None}
    assert {r["carried_from"] for r in carried} <= parsed_seqs, "carried from a frame that was written parsed"
    per_keyframe = [sum(r["carried_from"] == seq for r in carried) for seq in parsed_seqs]
    assert max(per_keyframe) <= 2, "one frame in 3 is parsed, across drops too"


# (access unit the camera is joined at, seconds between the server's start and the run's): the longest wait for a
# keyframe (joined one unit after it), a keyframe at once (joined one unit before it) and one midway, each with the
# run started with the server and 2 s later. benchmarks/first_connect.py draws them at random, for as many runs.
CAMERA_JOINS = [(1, 0.0), (1, 2.0), (CLIP_FPS, 1.0), (2 * CLIP_FPS - 1, 0.0), (2 * CLIP_FPS - 1, 2.0)]


@pytest.mark.slow
def test_first_connections_to_a_camera_started_just_before(rtsp_servers, camera_clip: Path, tmp_path: Path) -> None:
    """The issue's report: a server started 0 to 2 s before `vidparse run`. The server plays a camera joined within
    its 2 s keyframe interval, with no SPS in its SDP: the frame size comes with the next keyframe, up to 2 s later,
    after FFmpeg's probing within a 1.5 s open timeout would have stopped."""
    for join_at, delay in CAMERA_JOINS:
        server = rtsp_servers("--join-at", str(join_at), clip=camera_clip).start()
        time.sleep(delay)
        out = tmp_path / f"live{join_at}-{delay}.mp4"
        result = run_cli(server.url, out, "--max-frames", "3", "--open-timeout", "1.5")
        server.stop()
        assert result.returncode == 0, f"joined at {join_at}, {delay} s later: {result.stderr}"
        assert probe_video(out).frames >= 1


@pytest.mark.slow
def test_server_started_5_s_after_run_is_reached(rtsp_servers, tmp_path: Path) -> None:
    server = rtsp_servers(port=free_port())
    process = start_cli(server.url, tmp_path / "live.mp4", "--max-frames", "3")
    time.sleep(5)
    server.start()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    log = stderr.replace("\n", " ")
    assert f"cannot connect to {server.url} (Connection refused); reconnecting in" in log
    assert "(attempt 2)" in log and f"connected to {server.url}" in log
    assert probe_video(tmp_path / "live.mp4").frames >= 1


def test_wrong_path_gives_its_permanent_error_at_once(rtsp_server: RtspServer, tmp_path: Path) -> None:
    result = run_cli(rtsp_server.url + "-missing", tmp_path / "live.mp4", timeout_s=60)  # attempts: unlimited
    assert result.returncode == 3, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot open {rtsp_server.url}-missing: Server returned 404 Not Found"]
    assert "reconnecting" not in result.stderr and "Traceback" not in result.stderr


def udp_socket_count(pid: int) -> int:
    """UDP sockets process ``pid`` holds open (its socket fds matched against the kernel's UDP table)."""
    inodes = set()
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            inodes.add(line.split()[9])
    held = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        held += target.startswith("socket:[") and target[8:-1] in inodes
    return held


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["udp", "tcp"])
def test_rtsp_transport_sets_how_the_stream_is_received(transport: str, rtsp_server: RtspServer,
                                                       tmp_path: Path) -> None:
    """Frames arrive over either transport; over UDP the source process receives RTP on UDP sockets of its own
    (two per stream, RTP and RTCP), over TCP (interleaved) it holds none."""
    from test_faults import source_pid

    stats = tmp_path / "stats.jsonl"
    process = start_cli(rtsp_server.url, tmp_path / "live.mp4", "--rtsp-transport", transport, "--stats", str(stats))
    try:
        deadline = time.monotonic() + 60
        while not (stats.exists() and len(stats.read_text().splitlines()) >= 5):
            assert time.monotonic() < deadline and process.poll() is None, "no frames came"
            time.sleep(0.1)
        sockets = udp_socket_count(source_pid(process.pid))
    finally:
        _, stderr = interrupt(process)
    assert process.returncode == 130, stderr
    assert (sockets >= 2) if transport == "udp" else (sockets == 0), sockets
    assert probe_video(tmp_path / "live.mp4").frames == len(stats_lines(stats)) >= 5


@pytest.mark.slow
def test_a_live_source_that_goes_silent_is_restarted_by_the_watchdog(rtsp_server: RtspServer,
                                                                     tmp_path: Path) -> None:
    """The source process hangs (SIGSTOP: stuck where no FFmpeg timeout reaches, so it neither reads nor
    reconnects). After read + open timeouts + longest backoff + 5 s (2 + 3 + 1 + 5) the watchdog kills it, starts
    another that connects again, and frames keep coming, their timestamps still rising."""
    from test_faults import source_pid

    config = tmp_path / "live.yaml"
    config.write_text(Path(LIVE_FLAGS[-1]).read_text() + "live:\n  backoff_max_s: 1\n")
    stats = tmp_path / "stats.jsonl"

    def written() -> int:
        return len(stats.read_text().splitlines()) if stats.exists() else 0

    process = start_cli(rtsp_server.url, tmp_path / "live.mp4", "--stats", str(stats), "--config", str(config))
    try:
        deadline = time.monotonic() + 60
        while written() < 5:
            assert time.monotonic() < deadline and process.poll() is None, "no frames came"
            time.sleep(0.1)
        hung = source_pid(process.pid)
        os.kill(hung, signal.SIGSTOP)
        before = written()
        deadline = time.monotonic() + 60
        while written() < before + 5:
            assert time.monotonic() < deadline and process.poll() is None, "no frames after the source hung"
            time.sleep(0.1)
        assert source_pid(process.pid) != hung, "a new source process"
    finally:
        _, stderr = interrupt(process)
    assert process.returncode == 130, stderr
    assert "source 0 sent nothing for 11 s; restarting it" in stderr.replace("\n", " ")
    times = [s["time_s"] for s in stats_lines(stats)]
    assert max(b - a for a, b in zip(times, times[1:])) >= 10, "the silence shows as a gap"
    pts = probe_video(tmp_path / "live.mp4").pts_s
    assert len(pts) == len(times) and all(b > a for a, b in zip(pts, pts[1:]))
