"""`vidparse serve` end to end: the real command on a free loopback port, real photos, a real vtest job, a real
RTSP server and a real headless Chromium. One server with a token serves most of the file (the models load once);
the last test stops it with SIGTERM while a job runs. The metrics test counts the job test's frames (both slow).
A second server, without a token, serves the Host check and the expiry of jobs.

Every address these tests send traffic to is on loopback (127.0.0.1): the refusal of private and link-local
addresses is tested on the check itself, with a stand-in resolver; the fuzzer's cases that name a URL are
skipped."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import io
import json
import os
import signal
import struct
import socket
import subprocess
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import cv2
import httpx
import numpy as np
import psutil
import pytest
import schemathesis
from fastapi import FastAPI
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, SHARED, VTEST, probe_video, run_cli
from rtsp import RtspServer, free_port
from vidparse.config import load_config
from vidparse.errors import VidparseError
from vidparse.service.errors import ApiError, install_handlers
from vidparse.service.server import GRACEFUL_S
from vidparse.service.inputs import InputPolicy, UrlPolicy
from vidparse.service.job_manager import Job, JobManager
from vidparse.service.metrics import Metrics
from vidparse.service.streams import Viewers

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHOTO = SHARED / "data" / "cihp" / "images" / "0002190.jpg"
UPLOAD_LIMIT_MB = 2
VTEST_PIXELS = 768 * 576
CAMERA_SECRET = "camera-secret"  # a camera's password: never in an answer, a log line or a metric
READY_TIMEOUT_S = 120
JOB_TIMEOUT_S = 240
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    data_dir: Path
    client: httpx.Client

    def wait(self, job_id: str, until: tuple[str, ...] = ("done", "failed", "cancelled", "interrupted")) -> dict:
        deadline = time.monotonic() + JOB_TIMEOUT_S
        while time.monotonic() < deadline:
            job = self.client.get(f"/v1/jobs/{job_id}").json()
            if job["state"] in until:
                return job
            time.sleep(0.5)
        raise AssertionError(f"job {job_id} did not end: {job}")


def start_server(folder: Path, serve_config: dict, *flags: str) -> tuple[subprocess.Popen, str]:
    """`vidparse serve` on a free loopback port with tests/fast.yaml, one worker and ``serve_config``; loopback
    URLs allowed (the test RTSP and HTTP servers)."""
    config = yaml.safe_load((REPO / "tests" / "fast.yaml").read_text())
    config["serve"] = serve_config
    (folder / "serve.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vidparse", "serve", "--port", str(port), "--workers", "1", "--config",
         str(folder / "serve.yaml"), "--data-dir", str(folder / "data"), "--allow-host", "127.0.0.1", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    return process, f"http://127.0.0.1:{port}"


def wait_until_up(process: subprocess.Popen, client: httpx.Client, path: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        assert process.poll() is None, f"server exited: {process.stdout.read()}"
        try:
            if client.get(path).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "server not ready"
        time.sleep(0.5)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(timeout=30)


@contextlib.contextmanager
def running_server(folder: Path, serve_config: dict, *flags: str, headers: dict | None = None,
                   ready_path: str = "/readyz") -> Iterator[Server]:
    """A started server, up on ``ready_path``, killed when the block ends."""
    process, url = start_server(folder, serve_config, *flags)
    client = httpx.Client(base_url=url, headers=headers, timeout=60)
    try:
        wait_until_up(process, client, ready_path)
        yield Server(process, url, folder / "data", client)
    finally:
        client.close()
        stop(process)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Iterator[Server]:
    """BodyPix and small crops (tests/fast.yaml), one worker, at most one job and one stream at a time, two viewers
    a stream, one photo at a time, uploads up to 2 MB, frames up to vtest's size; the vtest folder and the clips'
    folder are allowed as JSON inputs."""
    folder = tmp_path_factory.mktemp("serve")
    with running_server(folder, {"max_jobs": 1, "max_streams": 1, "max_viewers": 2, "photo_queue": 1,
                                 "max_video_pixels": VTEST_PIXELS}, "--token", TOKEN, "--max-upload-mb",
                        str(UPLOAD_LIMIT_MB), "--allow-dir", str(VTEST.parent), "--allow-dir", str(clip.parent),
                        headers=AUTH) as started:
        yield started


def photo_size() -> tuple[int, int]:
    with Image.open(PHOTO) as image:
        return image.size


def test_photo_in_each_format(server: Server) -> None:
    files = {"file": ("../../etc/passwd", PHOTO.read_bytes(), "image/jpeg")}  # a client's name is never a path
    answer = server.client.post("/v1/images", params={"format": "json"}, files=files)
    assert answer.status_code == 200, answer.text
    parsed = answer.json()
    width, height = photo_size()
    assert (parsed["width"], parsed["height"]) == (width, height)
    assert parsed["label_set"] == "bodypix" and parsed["labels"][0]["name"] == "background"
    assert parsed["persons"] and all(len(p["box"]) == 4 and p["parts"] for p in parsed["persons"])
    assert sum(parsed["parts"].values()) > 0.02 * width * height

    labels = server.client.post("/v1/images", params={"format": "labels"}, files=files)
    assert labels.status_code == 200 and labels.headers["content-type"] == "image/png"
    png = Image.open(io.BytesIO(labels.content))
    assert png.mode == "P" and png.size == (width, height)
    ids = np.asarray(png)
    names = {label["name"]: label["id"] for label in parsed["labels"]}
    assert {name: int((ids == names[name]).sum()) for name in parsed["parts"]} == parsed["parts"]

    overlay = server.client.post("/v1/images", params={"format": "overlay"}, files=files)
    assert overlay.status_code == 200 and overlay.headers["content-type"] == "image/jpeg"
    drawn = cv2.imdecode(np.frombuffer(overlay.content, np.uint8), cv2.IMREAD_COLOR)
    original = cv2.imread(str(PHOTO))
    assert drawn.shape == original.shape
    changed = np.abs(drawn.astype(int) - original).max(axis=2) > 40
    assert changed[ids > 0].mean() > 0.5 > changed[ids == 0].mean()  # colored where labelled, not elsewhere


@pytest.mark.slow
def test_job_runs_to_the_end_and_the_mp4_plays(server: Server, clip: Path) -> None:
    posted = server.client.post("/v1/jobs", files={"file": ("clip.avi", clip.read_bytes(), "video/x-msvideo")})
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["id"]
    refused = server.client.post("/v1/jobs", json={"input": str(clip)})  # one job at a time in this server
    assert refused.status_code == 429 and refused.json()["hint"]
    seen = server.wait(job_id, until=("running", "done"))
    assert seen["total"] == 12
    job = server.wait(job_id)
    assert job["state"] == "done" and job["frames"] == 12 and job["progress"] == 1.0 and job["fps"] > 0

    ranged = server.client.get(job["result"], headers={"Range": "bytes=100-1099"})
    assert ranged.status_code == 206 and len(ranged.content) == 1000
    assert ranged.headers["content-range"].startswith("bytes 100-1099/")
    result = server.client.get(job["result"])
    assert result.status_code == 200 and result.headers["content-type"] == "video/mp4"
    mp4 = server.data_dir.parent / "downloaded.mp4"
    mp4.write_bytes(result.content)
    facts = probe_video(mp4)
    assert (facts.codec, facts.width, facts.height, facts.frames) == ("h264", 768, 576, 12)

    with ThreadPoolExecutor(4) as pool:  # first requests at once: each zips on its own, all get the same
        zips = list(pool.map(lambda _: server.client.get(f"/v1/jobs/{job_id}/masks.zip"), range(4)))
    assert all(z.status_code == 200 for z in zips)
    for answer in zips:
        masks = zipfile.ZipFile(io.BytesIO(answer.content))
        assert sorted(masks.namelist()) == [f"{i:06d}.png" for i in range(12)]
    assert not list((server.data_dir / "jobs" / job_id).glob("*.part"))
    stats = server.client.get(f"/v1/jobs/{job_id}/stats.jsonl").text.splitlines()
    assert [json.loads(line)["seq"] for line in stats] == list(range(12))


@pytest.mark.slow
def test_live_stream_preview_reconnect_then_removed(server: Server, rtsp_server: RtspServer) -> None:
    added = server.client.post("/v1/streams", json={"url": rtsp_server.url, "name": "door"})
    assert added.status_code == 201, added.text
    stream = added.json()
    refused = server.client.post("/v1/streams", json={"url": rtsp_server.url, "name": "again"})
    assert refused.status_code == 429
    jpegs = []
    with server.client.stream("GET", stream["preview"], timeout=120) as preview:
        assert preview.headers["content-type"].startswith("multipart/x-mixed-replace")
        buffer = b""
        for chunk in preview.iter_bytes():
            buffer += chunk
            while (start := buffer.find(b"\xff\xd8")) >= 0 and (end := buffer.find(b"\xff\xd9", start)) >= 0:
                jpegs.append(buffer[start:end + 2])
                buffer = buffer[end + 2:]
            if len(jpegs) >= 10:
                break
    assert len(jpegs) >= 10
    deadline = time.monotonic() + 10
    while True:  # serve.max_viewers is 2; the first viewer's place is free once the server saw it go
        with server.client.stream("GET", stream["preview"]) as second, \
                server.client.stream("GET", stream["preview"]) as third:
            if second.status_code == third.status_code == 200:
                with server.client.stream("GET", stream["preview"]) as fourth:
                    assert fourth.status_code == 429 and fourth.headers["Retry-After"]
                break
        assert time.monotonic() < deadline, "a closed preview still counts as a viewer"
        time.sleep(0.2)
    frames = [cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) for data in jpegs]
    assert all(frame is not None and frame.shape == (576, 768, 3) for frame in frames)
    assert len(set(jpegs)) >= 5, "a moving picture (the 2 s clip loops, so a frame may come again)"
    listed = {s["id"]: s for s in server.client.get("/v1/streams").json()}[stream["id"]]
    assert listed["state"] == "live" and listed["name"] == "door" and listed["fps"] > 0
    assert listed["latency_p95_ms"] >= listed["latency_p50_ms"] > 0
    snapshot = server.client.get(stream["snapshot"])
    assert snapshot.status_code == 200 and snapshot.content[:2] == b"\xff\xd8"
    metrics = server.client.get("/metrics").text
    assert f'vidparse_frames_parsed_total{{stream="{stream["id"]}"}}' in metrics

    rtsp_server.kill()  # the camera goes away and comes back: the stream reconnects by itself and counts it
    deadline = time.monotonic() + 60
    while (down := {s["id"]: s for s in server.client.get("/v1/streams").json()}[stream["id"]])["state"] == "live":
        assert time.monotonic() < deadline, "a stream whose camera is gone still says live"
        time.sleep(0.5)
    assert down["state"] == "reconnecting" and down["failed_attempts"] >= 1, down
    rtsp_server.start()
    deadline = time.monotonic() + 90
    while (now := {s["id"]: s for s in server.client.get("/v1/streams").json()}[stream["id"]])["reconnects"] < 1:
        assert time.monotonic() < deadline, now
        time.sleep(1)
    while server.client.get("/v1/streams").json()[0]["frames"] <= now["frames"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)
    back = server.client.get("/v1/streams").json()[0]
    assert back["state"] == "live" and back["failed_attempts"] == 0, back

    assert server.client.delete(f"/v1/streams/{stream['id']}").status_code == 200
    assert server.client.get(stream["snapshot"]).status_code == 404
    assert stream["id"] not in {s["id"] for s in server.client.get("/v1/streams").json()}


def test_no_public_address_without_a_token() -> None:
    refused = run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert refused.returncode == 2
    assert "without a token" in refused.stderr and "hint: pass --token" in refused.stderr


def test_the_token_help_names_the_routes_open_without_it() -> None:
    """`vidparse serve --help` says what --token guards as the guard does: every route but /healthz and the page /
    (it said /healthz alone)."""
    from vidparse.service.guard import OPEN_PATHS

    said = " ".join(run_cli("serve", "--help", timeout=60).stdout.replace("│", " ").split())
    assert OPEN_PATHS == ("/healthz", "/"), "the help below names these two"
    assert "Bearer token required on every route but /healthz and the page /." in said, said


def test_token_required_except_healthz(server: Server) -> None:
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/").status_code == 200, "the page holds no data: a reload finds its token in the tab"
    for path in ("/readyz", "/metrics", "/v1/streams", "/v1/jobs/x", "/docs", "/redoc", "/openapi.json"):
        denied = anonymous.get(path)
        assert denied.status_code == 401 and denied.json()["hint"], path
    assert anonymous.post("/v1/images", files={"file": ("a.jpg", PHOTO.read_bytes())}).status_code == 401
    assert anonymous.get("/v1/streams", headers={"Authorization": "Bearer wrong"}).status_code == 401
    # ?token= passes only on the GETs a browser makes without headers: previews, snapshots, downloads
    unknown = "0123456789abcdef01234567"
    for path in (f"/v1/streams/{unknown}/snapshot.jpg", f"/v1/streams/{unknown}/preview.mjpg",
                 f"/v1/jobs/{unknown}/result", f"/v1/jobs/{unknown}/masks.zip", f"/v1/jobs/{unknown}/stats.jsonl"):
        assert anonymous.get(path, params={"token": TOKEN}).status_code == 404, path  # past the token
        assert anonymous.get(path, params={"token": "wrong"}).status_code == 401, path
    assert anonymous.get("/v1/streams", params={"token": TOKEN}).status_code == 401
    assert anonymous.get("/openapi.json", params={"token": TOKEN}).status_code == 401
    assert anonymous.post("/v1/streams", params={"token": TOKEN}, json={"url": "rtsp://127.0.0.1:1/x"}).status_code \
        == 401
    assert anonymous.delete(f"/v1/jobs/{unknown}", params={"token": TOKEN}).status_code == 401


def test_the_log_tells_a_jobs_life_and_a_new_server_finds_the_job(tmp_path: Path, clip: Path) -> None:
    """The multipart parser's own errors had no hint, and it logged a warning without the request in it; at the
    default level nothing told when a job started or ended. A finished job outlives its server: one started again
    on the same --data-dir after a SIGTERM serves it as it was (jobs lived in the server's memory)."""
    with running_server(tmp_path, {}, "--token", TOKEN, headers=AUTH) as server:
        for content_type in ("multipart/form-data", "multipart/form-data; boundary=xyz"):
            answer = server.client.post("/v1/jobs", content=b"garbage", headers={"Content-Type": content_type})
            assert answer.status_code == 400 and "multipart/form-data" in answer.json()["hint"], answer.text
        posted = server.client.post("/v1/jobs", files={"file": ("clip.avi", clip.read_bytes())})
        assert posted.status_code == 202, posted.text
        job = server.wait(posted.json()["id"])
        mp4 = server.client.get(job["result"]).content
        server.process.terminate()
        log = server.process.communicate(timeout=60)[0]
    assert "WARNING" not in log and "boundary" not in log, log
    assert f"job {job['id']} running" in log and f"job {job['id']} done after {job['frames']} frames" in log, log
    with running_server(tmp_path, {}, "--token", TOKEN, headers=AUTH, ready_path="/healthz") as again:
        found = again.client.get(f"/v1/jobs/{job['id']}").json()
        assert {key: found[key] for key in ("state", "frames", "total", "source", "result")} == \
            {"state": "done", "frames": 12, "total": 12, "source": "upload", "result": job["result"]}, found
        assert found["fps"] == pytest.approx(job["fps"], abs=0.01), found  # from the frame times recorded
        assert again.client.get(job["result"]).content == mp4
        assert len(again.client.get(f"/v1/jobs/{job['id']}/stats.jsonl").text.splitlines()) == 12


def test_no_docs_page_and_no_outside_script(server: Server) -> None:
    assert server.client.get("/docs").status_code == 404 and server.client.get("/redoc").status_code == 404
    assert server.client.get("/openapi.json").json()["paths"]
    page = server.client.get("/").text
    assert "<script src" not in page and "cdn" not in page.lower()


def test_an_unauthenticated_body_is_never_read(server: Server) -> None:
    """200 MB of chunked JSON and 80 MB of chunked multipart without the token: 401 before the body is read; the
    server's memory grows by under 50 MB."""
    process = psutil.Process(server.process.pid)
    before = peak = process.memory_info().rss
    anonymous = httpx.Client(base_url=server.url, timeout=60)

    def chunks(megabytes: int, head: bytes = b"") -> Iterator[bytes]:
        nonlocal peak
        yield head
        for i in range(megabytes):
            if i % 8 == 0:
                peak = max(peak, process.memory_info().rss)
            yield b"0" * (1 << 20)

    for route, megabytes, kind, head in (
            ("/v1/streams", 200, "application/json", b'{"url": "'),
            ("/v1/images", 80, "multipart/form-data; boundary=b",
             b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n')):
        try:
            answer = anonymous.post(route, content=chunks(megabytes, head), headers={"Content-Type": kind})
            assert answer.status_code == 401, route
        except httpx.TransportError:
            pass  # the server answered 401 and closed the connection while the body was still being sent
        peak = max(peak, process.memory_info().rss)
    assert peak - before < 50 * (1 << 20), f"the server grew by {(peak - before) >> 20} MB"
    assert not list((server.data_dir / "uploads").iterdir())


def test_bodies_are_counted_as_they_arrive(server: Server) -> None:
    """Chunked bodies (no Content-Length) past a route's limit: 413."""
    def chunks(megabytes: float, head: bytes = b"") -> Iterator[bytes]:
        yield head
        yield b"0" * int(megabytes * (1 << 20))

    too_long = server.client.post("/v1/streams", content=chunks(1, b'{"url": "'),
                                  headers={"Content-Type": "application/json"})
    assert too_long.status_code == 413 and "KB" in too_long.json()["error"]
    head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
    for route in ("/v1/images", "/v1/jobs"):
        too_large = server.client.post(route, content=chunks(UPLOAD_LIMIT_MB + 0.5, head),
                                       headers={"Content-Type": "multipart/form-data; boundary=b"})
        assert too_large.status_code == 413 and "MB" in too_large.json()["error"], route


def test_a_full_job_queue_refuses_an_upload_before_its_body(server: Server) -> None:
    """max_jobs is 1: while a job runs, an upload gets its 429 once its headers are in, as a request without the
    token does, not after the server has read the whole upload; the connection closes."""
    job_id = server.client.post("/v1/jobs", json={"input": str(VTEST)}).json()["id"]
    host, port = server.url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10) as upload:
            upload.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                           "Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 1900000\r\n\r\n"
                           .encode() + b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.mp4"\r\n\r\n'
                           + b"x" * 50_000)
            answer, closed = b"", False
            with contextlib.suppress(TimeoutError):
                while chunk := upload.recv(65536):
                    answer += chunk
                closed = True
    finally:
        server.client.delete(f"/v1/jobs/{job_id}")
        server.wait(job_id)
    assert answer, "no answer while the upload was still unsent"
    assert closed, "the connection stayed open (the rest of the upload would be read)"
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 429 ") and b"retry-after: 5" in head.lower(), head
    assert "already queued or running" in json.loads(body)["error"]


@pytest.fixture(scope="module")
def finished_job(server: Server, clip: Path) -> dict:
    """A job of the clip's first two frames, done."""
    job = server.wait(server.client.post("/v1/jobs", json={"input": str(clip), "max_frames": 2}).json()["id"])
    assert job["state"] == "done", job
    return job


def test_head_answers_as_get_does_without_the_body(server: Server, finished_job: dict) -> None:
    """curl -I, a video player's probe: every GET route answers HEAD, with GET's status and headers."""
    job_id = finished_job["id"]
    unknown = "0123456789abcdef01234567"
    for path in ("/healthz", "/readyz", "/metrics", "/v1/streams", f"/v1/jobs/{job_id}", finished_job["result"],
                 f"/v1/jobs/{job_id}/stats.jsonl", f"/v1/jobs/{unknown}", f"/v1/streams/{unknown}/preview.mjpg"):
        get, head = server.client.get(path), server.client.head(path)
        assert head.status_code == get.status_code and head.content == b"", path
        assert head.headers["content-type"] == get.headers["content-type"], path
    result = server.client.head(finished_job["result"])
    assert int(result.headers["content-length"]) == len(server.client.get(finished_job["result"]).content) > 1000
    assert result.headers["accept-ranges"] == "bytes"
    assert server.client.head("/v1/jobs").status_code == 405  # a POST route stays one


def test_a_range_outside_the_file_is_a_json_416(server: Server, finished_job: dict) -> None:
    size = len(server.client.get(finished_job["result"]).content)
    outside = server.client.get(finished_job["result"], headers={"Range": f"bytes={size}-"})
    assert outside.status_code == 416 and outside.headers["content-range"] == f"bytes */{size}"
    assert set(outside.json()) == {"error", "hint"} and str(size) in outside.json()["error"]
    malformed = server.client.get(finished_job["result"], headers={"Range": "bytes=x-y"})
    assert malformed.status_code == 400 and set(malformed.json()) == {"error", "hint"}


def test_unknown_ids_and_routes_are_404(server: Server) -> None:
    for path in ("/v1/jobs/0123456789abcdef01234567", "/v1/jobs/0123456789abcdef01234567/result",
                 "/v1/streams/0123456789abcdef01234567/preview.mjpg", "/no/such/route"):
        missing = server.client.get(path)
        assert missing.status_code == 404 and set(missing.json()) == {"error", "hint"}, path
    assert server.client.delete("/v1/streams/0123456789abcdef01234567").status_code == 404


def test_uploads_too_large_not_media_or_not_allowed(server: Server, tmp_path: Path) -> None:
    big = os.urandom(UPLOAD_LIMIT_MB * (1 << 20) + 200_000)
    for route in ("/v1/images", "/v1/jobs"):
        too_large = server.client.post(route, files={"file": ("big.jpg", big, "image/jpeg")})
        assert too_large.status_code == 413 and "MB" in too_large.json()["error"], route
    text = b"this is not media\n" * 100
    not_image = server.client.post("/v1/images", files={"file": ("a.jpg", text, "image/jpeg")})
    assert not_image.status_code == 415 and not_image.json()["hint"]
    assert server.client.post("/v1/jobs", files={"file": ("a.mp4", text, "video/mp4")}).status_code == 415
    (tmp_path / "notes.mp4").write_bytes(text)
    assert server.client.post("/v1/jobs", json={"input": str(tmp_path / "notes.mp4")}).status_code == 403
    assert server.client.post("/v1/jobs", json={"input": "/etc/passwd"}).status_code == 403
    assert server.client.post("/v1/jobs", json={"input": "file:///etc/passwd"}).status_code == 400
    assert server.client.post("/v1/streams", json={"url": "/dev/video0"}).status_code == 400
    upper_case = server.client.post("/v1/images", headers={"Content-Type": "Multipart/Form-Data; boundary=XX"},
                                    content=b'--XX\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n'
                                            b"Content-Type: image/jpeg\r\n\r\n" + PHOTO.read_bytes() + b"\r\n--XX--\r\n")
    assert upper_case.status_code == 200, upper_case.text  # media types are case-insensitive
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as cut_short:  # a tab closed mid-upload: no error in the log
        cut_short.sendall(f"POST /v1/jobs HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\n"
                          "Content-Type: multipart/form-data; boundary=XX\r\nContent-Length: 1900000\r\n\r\n"
                          .encode() + b"--XX\r\n" + b"x" * 50_000)
    negative = server.client.post("/v1/jobs", json={"input": str(VTEST), "max_frames": -3})
    assert negative.status_code == 422, negative.text
    assert "max_frames: Input should be greater than or equal to 1" in negative.json()["error"], "names the field"


def test_unknown_fields_are_refused_not_ignored(server: Server) -> None:
    """A misspelt field ("max_frame") is a 422 naming it, not a job of the whole video or a stream without its name.
    The inputs are ones the policy refuses, so that the old behaviour answered 403 and started nothing."""
    job = server.client.post("/v1/jobs", json={"input": "/etc/passwd", "max_frame": 2})
    assert job.status_code == 422 and "max_frame" in job.json()["error"], job.text
    live = server.client.post("/v1/streams", json={"url": "rtsp://127.0.0.2:9/x", "nmae": "door"})
    assert live.status_code == 422 and "nmae" in live.json()["error"], live.text
    for not_a_number in (True, "3", 2.5):  # pydantic's lax mode took true as 1 and "3" as 3
        job = server.client.post("/v1/jobs", json={"input": "/etc/passwd", "max_frames": not_a_number})
        assert job.status_code == 422 and "max_frames" in job.json()["error"], job.text
    unnamed = server.client.post("/v1/streams", json={"url": "rtsp://127.0.0.2:9/x", "name": 7})
    assert unnamed.status_code == 422 and "name" in unnamed.json()["error"], unnamed.text


def test_a_stream_body_that_is_not_json_is_answered_as_a_jobs_is(server: Server) -> None:
    """POST /v1/streams answered broken JSON with "body.1: JSON decode error", undecodable or too deeply nested
    JSON with a 400 whose hint was about multipart uploads, and another content type with a 422: now as
    POST /v1/jobs does, a 422 saying the JSON is invalid with a hint naming the fields, and a 415."""
    json_type = {"Content-Type": "application/json"}
    for body in (b'{"url": ', b"\xff\xfe{", b"[" * 30_000 + b"]" * 30_000, b""):
        refused = server.client.post("/v1/streams", content=body, headers=json_type)
        assert refused.status_code == 422, (body[:10], refused.text)
        assert refused.json()["error"].startswith("invalid JSON body") and '"url"' in refused.json()["hint"]
    as_text = server.client.post("/v1/streams", content=b'{"url": "rtsp://127.0.0.2:9/x"}',
                                 headers={"Content-Type": "text/plain"})
    assert as_text.status_code == 415 and "application/json" in as_text.json()["hint"], as_text.text


def test_a_folder_as_a_jobs_input_is_called_a_folder(server: Server) -> None:
    """An allowed folder given as a job's input was "no such file in the allowed folders"."""
    folder = server.client.post("/v1/jobs", json={"input": str(VTEST.parent)})
    assert folder.status_code == 400 and "is a folder" in folder.json()["error"], folder.text


def test_url_policy_refuses_internal_addresses() -> None:
    """On the check itself: no address here is ever connected to, and no name is resolved (the resolver is a
    stand-in), so no traffic leaves for a private or link-local range."""
    def resolver(*addresses: str) -> Callable[[str, int], list[str]]:
        return lambda host, port: list(addresses)

    def refusal(url: str, policy: UrlPolicy | None = None, resolved: tuple[str, ...] = ("93.184.215.14",)) -> int:
        try:
            (policy or UrlPolicy()).check(url, resolver(*resolved))
        except ApiError as error:
            return error.status
        return 0

    for url in ("rtsp://127.0.0.1:6379/x", "rtsp://127.8.0.1/x", "rtsp://[::1]/x", "rtsp://169.254.169.254/latest",
                "http://[fe80::1]/x", "rtsp://10.1.2.3/x", "rtsp://172.16.0.1/x", "rtsp://192.168.1.1/x",
                "rtsp://100.64.0.1/x", "rtsp://0.0.0.0/x", "rtsp://[::ffff:127.0.0.1]/x", "rtsp://[fd00::1]/x",
                "http://224.0.0.1/x", "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:a9fe:a9fe::]/"):  # NAT64, 6to4
        assert refusal(url) == 403, url
    assert refusal("http://[64:ff9b::808:808]/") == 0, "NAT64 to a public address"
    assert refusal("rtsp://camera.example/x", resolved=("93.184.215.14", "10.0.0.7")) == 403  # every address counts
    assert refusal("rtsp://camera.example/x", resolved=("169.254.169.254",)) == 403
    assert refusal("rtsp://camera.example/x") == 0
    assert refusal("rtsp://user:pass@93.184.215.14:554/x") == 0
    for url in ("rtsp://93.184.215.14/x\r\nFLUSHALL", "rtsp://93.184.215.14/x\x00", "rtsp://93.184.215.14/a b",
                "rtsp://93.184.215.14/caf\u00e9", "rtsp:///x", "rtsp://:554/x", "file:///etc/passwd",
                "gopher://93.184.215.14/", "rtsp://93.184.215.14:99999/x", "", "rtsp://[::1/x", "http://[zz]/a",
                "rtsp://93.184.215.14:x/y"):
        assert refusal(url) == 400, url
    assert refusal("rtsp://10.1.2.3/x", UrlPolicy(frozenset({"10.1.2.3"}))) == 0
    assert refusal("rtsp://nvr.lan/x", UrlPolicy(frozenset({"nvr.lan"})), resolved=("10.0.0.7",)) == 0
    assert refusal("rtsp://10.1.2.4/x", UrlPolicy(frozenset({"10.1.2.3"}))) == 403
    assert refusal("rtsp://169.254.169.254/x", UrlPolicy(allow_private=True)) == 0
    assert refusal("rtsp://[::1]:554/x", UrlPolicy.allowing(["[::1]"], private=False)) == 0  # as --allow-host says
    assert refusal("rtsp://NVR.lan/x", UrlPolicy.allowing(["nvr.LAN"], private=False), resolved=("10.0.0.7",)) == 0


def test_inputs_refused_before_any_connection(server: Server) -> None:
    """Loopback hosts other than the allowed 127.0.0.1, control characters, no host, NUL: refused before FFmpeg
    is asked for anything."""
    for url in ("rtsp://127.0.0.2:6379/x", "rtsp://[::1]:6379/x"):  # literals: nothing is resolved
        refused = server.client.post("/v1/streams", json={"url": url})
        assert refused.status_code == 403 and "--allow-host" in refused.json()["hint"], url
        assert server.client.post("/v1/jobs", json={"input": url}).status_code == 403, url
    assert server.client.post("/v1/streams", json={"url": "rtsp://127.0.0.1:6379/x\r\nFLUSHALL"}).status_code == 400
    assert server.client.post("/v1/streams", json={"url": "rtsp:///x"}).status_code == 400
    nul = server.client.post("/v1/jobs", json={"input": f"{VTEST}\u0000.avi"})
    assert nul.status_code == 400 and set(nul.json()) == {"error", "hint"}
    long_name = server.client.post("/v1/jobs", json={"input": str(VTEST.parent / ("a" * 300))})
    assert long_name.status_code == 400, long_name.text


def png_header(width: int, height: int) -> bytes:
    """A PNG that says it is ``width`` x ``height`` (its pixels are a 1x1 image's: never decoded)."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def test_photo_formats_and_pixel_cap(server: Server) -> None:
    avif = io.BytesIO()
    Image.open(PHOTO).save(avif, format="AVIF")  # a phone's or a browser's photo: `vidparse run` takes it too
    answer = server.client.post("/v1/images", params={"format": "json"}, files={"file": ("a.avif", avif.getvalue())})
    assert answer.status_code == 200 and (answer.json()["width"], answer.json()["height"]) == photo_size(), answer.text
    bomb = server.client.post("/v1/images", files={"file": ("bomb.png", png_header(10_000, 10_000), "image/png")})
    assert bomb.status_code == 413 and "pixels" in bomb.json()["error"]
    gif = io.BytesIO()
    Image.open(PHOTO).save(gif, format="GIF")  # PIL reads GIF: refused all the same, it is not on the list
    refused = server.client.post("/v1/images", files={"file": ("a.gif", gif.getvalue(), "image/gif")})
    assert refused.status_code == 415 and "jpeg, png" in refused.json()["error"]
    empty = server.client.post("/v1/images", files={"file": ("a.jpg", b"", "image/jpeg")})
    assert empty.status_code == 400 and set(empty.json()) == {"error", "hint"}
    assert empty.json()["error"] == "the uploaded file is empty (0 bytes)"


def tiny_video(path: Path, width: int, height: int) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=5)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for _ in range(2):
            frame = av.VideoFrame.from_ndarray(np.zeros((height, width, 3), np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    return path


def test_video_pixel_cap_and_container_allow_list(server: Server, clip: Path, tmp_path: Path) -> None:
    """Frames past serve.max_video_pixels: 413. A playlist under an --allow-dir folder naming a file elsewhere,
    as a JSON input or an upload, and a concat list: 415 (no hls or concat demuxer). No job is left behind."""
    jobs_before = set((server.data_dir / "jobs").iterdir())
    large = tiny_video(tmp_path / "large.avi", 1024, 768)
    too_large = server.client.post("/v1/jobs", files={"file": ("large.avi", large.read_bytes(), "video/x-msvideo")})
    assert too_large.status_code == 413 and "pixels" in too_large.json()["error"]
    elsewhere = tmp_path / "elsewhere.avi"
    elsewhere.write_bytes(clip.read_bytes())
    playlist = clip.parent / "escape.m3u8"
    playlist.write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1,\nfile://{elsewhere}\n#EXT-X-ENDLIST\n")
    concat = clip.parent / "escape.ffconcat"
    concat.write_text(f"ffconcat version 1.0\nfile '{elsewhere}'\n")
    try:
        for listing in (playlist, concat):
            assert server.client.post("/v1/jobs", json={"input": str(listing)}).status_code == 415, listing
            upload = server.client.post("/v1/jobs", files={"file": (listing.name, listing.read_bytes(), "text/plain")})
            assert upload.status_code == 415, listing
    finally:
        playlist.unlink()
        concat.unlink()
    assert set((server.data_dir / "jobs").iterdir()) == jobs_before  # refused inputs took no job with them
    families = {f.name: f for f in text_string_to_metric_families(server.client.get("/metrics").text)}
    assert {s.labels["state"]: s.value for s in families["vidparse_jobs"].samples}["queued"] == 0


def test_a_reserved_job_is_forgotten_whatever_fails(tmp_path: Path) -> None:
    """Between reserve and start anything may raise (a client gone, a bug): the job and its slot go with it."""
    config = load_config(None, {"serve.max_jobs": 1})
    jobs = JobManager(config, None, tmp_path, Metrics(), InputPolicy(UrlPolicy()))  # the engine is never reached
    with pytest.raises(RuntimeError), jobs.reserved("upload") as job:
        assert jobs.count("queued") == 1 and job.directory.is_dir()
        raise RuntimeError("between reserve and start")
    assert jobs.count("queued") == 0 and not job.directory.exists()
    with pytest.raises(ApiError), jobs.reserved("upload"):  # the slot is free again: this one is reserved
        raise ApiError(415, "not a video")


def test_a_cancelling_job_promises_no_eta(tmp_path: Path) -> None:
    """A job cancelled at frame 33 of 60 still said "eta_s": 3.0, the time to parse the whole file, while it stops
    once the frames in flight are written."""
    job = Job("0123456789abcdef01234567", "clip.avi", tmp_path, state="running", frames=33, total=60,
              first_frame_at=100.0, last_frame_at=104.0)
    assert job.describe()["eta_s"] is not None
    job.cancel_asked = True
    assert job.describe()["state"] == "cancelling" and job.describe()["eta_s"] is None


def test_a_bug_is_a_json_500_that_names_no_path() -> None:
    """The handlers on an app of their own: a bug's 500 is the one JSON error, without the exception's text."""
    app = FastAPI()
    install_handlers(app)

    @app.get("/bug")
    def bug() -> None:
        raise FileNotFoundError(2, "No such file or directory", "/srv/vidparse/data/jobs/secret/input")

    @app.get("/engine")
    def engine() -> None:
        raise VidparseError("worker failed reading /srv/vidparse/models/parser.onnx")

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await client.get(path)

    for path in ("/bug", "/engine"):
        answer = asyncio.run(get(path))
        assert answer.status_code == 500 and answer.json() == {"error": "internal error",
                                                               "hint": "the server log has the details"}, path


def test_viewers_are_woken_by_the_writer_thread() -> None:
    """A preview waits on its event; the stream's writer thread sets it (a new frame, the stream's end): no
    polling. One viewer more than the cap: 429."""
    async def woken_after() -> float:
        viewers = Viewers()
        event = viewers.join(limit=1)
        with pytest.raises(ApiError) as refused:
            viewers.join(limit=1)
        assert refused.value.status == 429
        writer = threading.Timer(0.2, viewers.wake)
        started = time.monotonic()
        writer.start()
        await asyncio.wait_for(event.wait(), 5)
        viewers.leave(event)
        viewers.join(limit=1)  # its place is free again
        return time.monotonic() - started

    assert 0.15 < asyncio.run(woken_after()) < 0.5


def test_photos_queue_is_bounded_and_healthz_answers(server: Server, tmp_path: Path) -> None:
    """serve.photo_queue is 1: while a large photo is parsed, the next ones get 429 at once; /healthz answers."""
    large = io.BytesIO()
    Image.open(PHOTO).resize((4000, 3000)).save(large, format="JPEG")
    files = {"file": ("large.jpg", large.getvalue(), "image/jpeg")}
    with ThreadPoolExecutor(4) as pool:
        answers = [pool.submit(server.client.post, "/v1/images", files=files) for _ in range(4)]
        time.sleep(0.5)
        started = time.monotonic()
        assert server.client.get("/healthz").status_code == 200
        health_s = time.monotonic() - started
        statuses = sorted(answer.result().status_code for answer in answers)
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    assert health_s < 1.0


def test_metrics_pass_promtool(server: Server) -> None:
    checked = subprocess.run(["promtool", "check", "metrics"], input=server.client.get("/metrics").text,
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.slow
def test_schema_fuzzing_finds_no_500(server: Server) -> None:
    """schemathesis on the live server's OpenAPI, with the token: no answer is a 500. Cases naming a URL are left
    out: the server would resolve its host (only loopback traffic leaves these tests)."""
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=AUTH)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 14

    @given(case=st.sampled_from(operations).flatmap(lambda operation: operation.as_strategy()))
    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def no_server_error(case: schemathesis.Case) -> None:
        assume("://" not in repr(case.body) + repr(case.query))
        answer = case.call(base_url=server.url, headers=AUTH, timeout=60)
        assert answer.status_code < 500, (case.method, case.path, case.body, answer.text)

    no_server_error()


def test_serve_refuses_at_start_what_would_fail_later(tmp_path: Path) -> None:
    """A missing or file --allow-dir, a file as --data-dir and a port already taken: one line each, exit 2, before
    "serving on" is printed."""
    (tmp_path / "a-file").write_text("x")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for flags, message in ((["--allow-dir", str(tmp_path / "nowhere")], "does not exist"),
                               (["--allow-dir", str(tmp_path / "a-file")], "is not a folder"),
                               (["--data-dir", str(tmp_path / "a-file")], "is a file"),
                               ([], f"cannot listen on 127.0.0.1:{port}")):
            result = run_cli("serve", "--port", str(port if not flags else free_port()), *flags, timeout=120)
            assert result.returncode == 2 and message in result.stderr, result.stderr
            assert "hint:" in result.stderr and "serving on" not in result.stdout + result.stderr


def test_missing_serve_extra_names_it(tmp_path: Path) -> None:
    (tmp_path / "fastapi").mkdir()
    (tmp_path / "fastapi" / "__init__.py").write_text("raise ImportError('not installed', name='fastapi')\n")
    missing = run_cli("serve", "--port", str(free_port()), timeout=120,
                      env={"PYTHONPATH": os.pathsep.join(filter(None, (str(tmp_path), os.environ.get("PYTHONPATH"))))})
    assert missing.returncode != 0 and 'pip install "vidparse[serve]"' in missing.stderr, missing.stderr


def test_a_damaged_photo_model_is_reported_not_awaited(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BodyPix's file cut short: /readyz and every photo request say why (one log line, no traceback), instead of
    "still loading" for ever."""
    models = tmp_path / "models"
    models.mkdir()
    for folder in (SHARED / "models").iterdir():
        (models / folder.name).symlink_to(folder)
    (models / "bodypix").unlink()
    (models / "bodypix").mkdir()
    weights = SHARED / "models" / "bodypix" / "MobileNetV1-x050-stride16.onnx"
    (models / "bodypix" / weights.name).write_bytes(weights.read_bytes()[:100_000])
    monkeypatch.setenv("VIDPARSE_MODEL_DIR", str(models))
    with running_server(tmp_path, {}, ready_path="/healthz") as started:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while "error" not in (ready := started.client.get("/readyz")).json():
            assert time.monotonic() < deadline, ready.text
            time.sleep(0.5)
        assert ready.status_code == 503 and "cannot load model" in ready.json()["error"]
        answer = started.client.post("/v1/images", files={"file": ("p.jpg", PHOTO.read_bytes(), "image/jpeg")})
        assert answer.status_code == 503, answer.text
        assert "the photo model cannot be loaded" in answer.json()["error"] and "models pull" in answer.json()["hint"]
    log = started.process.stdout.read()
    assert "the photo model cannot be loaded" in log and "Traceback" not in log, log


def left_job(data_dir: Path, job_id: str, record: dict | str | None, result: bytes = b"") -> Path:
    """The folder an earlier server left for job ``job_id``: its record (``job.json``: fields over a done job's, or
    the file's text) and its MP4."""
    folder = data_dir / "jobs" / job_id
    folder.mkdir(parents=True)
    if isinstance(record, dict):
        record = json.dumps({"id": job_id, "source": "upload", "state": "done", "frames": 12, "dropped": 0,
                             "total": 12, "error": None, "created_at": time.time() - 90_000,
                             "ended_at": time.time() - 60, **record})
    if record is not None:
        (folder / "job.json").write_text(record)
    (folder / "result.mp4").write_bytes(result)
    return folder


def test_jobs_an_earlier_server_left_come_back_or_go(tmp_path: Path) -> None:
    """A server started again on the same --data-dir finds the jobs of the one before from their records (jobs lived
    in the server's memory: their folders went, their ids answered 404). Finished ones expire from their real end
    and hold the quota as before, oldest first; one the record says was running (the server was killed) is
    interrupted; a folder without a readable record goes (kept, it would only hold the quota). Their fps (null
    before) comes from the frames' times: the record's, or for a killed job its first frame's and its stats' last
    write."""
    data = tmp_path / "data"
    first_frame_at = time.time() - 1000
    killed = left_job(data, "0123456789abcdef0123456a", {"state": "running", "frames": 0, "ended_at": None,
                                                         "first_frame_at": first_frame_at}, b"\1" * 1000)
    (killed / "stats.jsonl").write_text('{"frame": 0}\n' * 7 + '{"fra')  # 7 frames written, the 8th cut off
    os.utime(killed / "stats.jsonl", (first_frame_at + 3, first_frame_at + 3))  # 6 frames after the first in 3 s
    newer = left_job(data, "0123456789abcdef0123456b", {"first_frame_at": first_frame_at,
                                                        "last_frame_at": first_frame_at + 5.5}, b"\0" * 600_000)
    older = left_job(data, "0123456789abcdef0123456c", {"ended_at": time.time() - 1800}, b"\0" * 600_000)
    expired = left_job(data, "0123456789abcdef0123456d", {"state": "failed", "ended_at": time.time() - 4000})
    unrecorded = left_job(data, "0123456789abcdef0123456e", None)  # reserved, never started
    damaged = left_job(data, "0123456789abcdef0123456f", '{"id": "0123456789abcdef0123456f", "sta')
    with running_server(tmp_path, {"max_data_mb": 1, "job_ttl_s": 3600}, ready_path="/healthz") as started:
        for gone in (older, expired, unrecorded, damaged):
            assert started.client.get(f"/v1/jobs/{gone.name}").status_code == 404, gone.name
            assert not gone.exists(), gone.name
        done = started.client.get(f"/v1/jobs/{newer.name}").json()
        assert done["state"] == "done" and done["fps"] == pytest.approx(2.0), done  # 11 frames after the first
        interrupted = started.client.get(f"/v1/jobs/{killed.name}").json()
        assert interrupted["state"] == "interrupted" and "server stopped" in interrupted["error"], interrupted
        assert interrupted["frames"] == 7 and interrupted["fps"] == pytest.approx(2.0), interrupted
        assert started.client.get(interrupted["result"]).content == b"\1" * 1000
        assert json.loads((killed / "job.json").read_text())["state"] == "interrupted"


@pytest.fixture(scope="module")
def open_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A second server without a token (loopback only): finished jobs expire after 3 s, the data dir's quota is
    1 MB."""
    folder = tmp_path_factory.mktemp("open")
    with running_server(folder, {"job_ttl_s": 3, "max_data_mb": 1, "job_connect_attempts": 0},
                        ready_path="/healthz") as started:
        yield started


def test_host_and_origin_checked_without_a_token(open_server: Server) -> None:
    """DNS rebinding: a page of another origin whose name resolves to 127.0.0.1 still sends its own Host."""
    port = open_server.url.rsplit(":", 1)[1]
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", "127.0.0.1", f"[::1]:{port}"):
        assert open_server.client.get("/v1/streams", headers={"Host": host}).status_code == 200, host
    for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.attacker.example:{port}", ""):
        refused = open_server.client.get("/v1/streams", headers={"Host": host})
        assert refused.status_code == 403 and refused.json()["hint"], host
    # blind CSRF: another site's page posting to 127.0.0.1 sends its own Origin
    forged = open_server.client.post("/v1/streams", json={"url": "rtsp://127.0.0.1:1/x"},
                                     headers={"Origin": "https://attacker.example"})
    assert forged.status_code == 403 and "another site" in forged.json()["error"]
    for other_local_app in (f"http://localhost:{int(port) + 1}", "http://127.0.0.1", "http://127.0.0.1:3000"):
        forged = open_server.client.post("/v1/streams", json={"url": "rtsp://127.0.0.1:1/x"},
                                         headers={"Origin": other_local_app})
        assert forged.status_code == 403, other_local_app  # a dev server or a notebook on another port
    for own_page in (open_server.url, f"http://localhost:{port}"):
        assert open_server.client.get("/v1/streams", headers={"Origin": own_page}).status_code == 200, own_page


def dead_url_job(server: Server) -> str:
    """A job of a loopback port nothing listens on: it must end failed (never stay queued)."""
    posted = server.client.post("/v1/jobs", json={"input": f"rtsp://127.0.0.1:{free_port()}/x"})
    assert posted.status_code == 202, posted.text
    return posted.json()["id"]


@pytest.mark.slow
def test_finished_jobs_expire_and_the_data_dir_has_a_quota(open_server: Server) -> None:
    job_id = dead_url_job(open_server)
    assert open_server.wait(job_id)["state"] == "failed"
    deadline = time.monotonic() + 15  # 3 s of TTL, a sweep every 1.5 s
    while open_server.client.get(f"/v1/jobs/{job_id}").status_code != 404:
        assert time.monotonic() < deadline, "the finished job did not expire"
        time.sleep(0.5)
    assert not (open_server.data_dir / "jobs" / job_id).exists()

    kept = dead_url_job(open_server)
    assert open_server.wait(kept)["state"] == "failed"
    filler = open_server.data_dir / "filler.bin"  # 2 MB that are not jobs': past the 1 MB quota
    filler.write_bytes(bytes(2 << 20))
    try:
        refused = open_server.client.post("/v1/jobs", json={"input": f"rtsp://127.0.0.1:{free_port()}/x"})
        assert refused.status_code == 507 and "quota" in refused.json()["error"]
        assert open_server.client.get(f"/v1/jobs/{kept}").status_code == 404  # the oldest finished job went first
    finally:
        filler.unlink()
    assert open_server.wait(dead_url_job(open_server))["state"] == "failed"


@pytest.mark.slow
def test_metrics_scrape(server: Server) -> None:
    families = {f.name: f for f in text_string_to_metric_families(server.client.get("/metrics").text)}
    jobs = {s.labels["state"]: s.value for s in families["vidparse_jobs"].samples}
    assert set(jobs) >= {"queued", "running", "done", "failed"} and jobs["done"] >= 1
    parsed = {s.labels["stream"]: s.value for s in families["vidparse_frames_parsed"].samples
              if s.name.endswith("_total")}
    assert parsed.get("jobs", 0) >= 12
    photos = {s.name: s.value for s in families["vidparse_photo_seconds"].samples}
    assert photos["vidparse_photo_seconds_count"] >= 3


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """Headless Chromium driven by selenium."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
def test_browser_uploads_a_photo_and_sees_the_overlay(server: Server, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with browser() as driver:
        driver.get(f"{server.url}/?token={TOKEN}")
        driver.find_element(By.ID, "photo-file").send_keys(str(PHOTO))
        overlay = driver.find_element(By.ID, "photo-overlay")
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(
            "const i = arguments[0]; return i.complete && i.naturalWidth > 0", overlay))
        size = driver.execute_script("const i = arguments[0]; return [i.naturalWidth, i.naturalHeight]", overlay)
        assert tuple(size) == photo_size()
        legend = driver.find_element(By.ID, "photo-legend").text
        assert "px" in legend
        shot = cv2.imdecode(np.frombuffer(overlay.screenshot_as_png, np.uint8), cv2.IMREAD_COLOR)
        assert shot.std() > 20  # a photo with colored persons, not a blank box
        driver.save_screenshot(str(tmp_path / "page.png"))
        not_a_photo = tmp_path / "notes.jpg"
        not_a_photo.write_text("not a photo")
        driver.find_element(By.ID, "photo-file").send_keys(str(not_a_photo))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "photo-status").get_attribute("class")
                                        == "error")
        assert overlay.get_attribute("src") in ("", None) and not driver.find_element(By.ID, "photo-legend").text
    assert (tmp_path / "page.png").stat().st_size > 10_000


@pytest.mark.slow
def test_browser_finds_its_video_job_again_after_a_reload(server: Server, clip: Path, tmp_path: Path) -> None:
    """The page keeps the job it shows across a reload (it would otherwise run on unseen, holding a place in
    max_jobs), and a failed upload clears the last result."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    def video_ready(driver: Any) -> bool:
        return driver.execute_script("const v = document.getElementById('video-result');"
                                     "return !v.hidden && v.readyState >= 1 && v.duration > 0")

    with browser() as driver:
        driver.get(f"{server.url}/?token={TOKEN}")
        driver.find_element(By.ID, "video-file").send_keys(str(clip))
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "video-status").text.startswith(
            ("queued", "running", "done")))
        driver.get(f"{server.url}/")  # loaded again in the same tab, the token out of the address: the tab kept it
        WebDriverWait(driver, JOB_TIMEOUT_S).until(video_ready)
        assert driver.find_element(By.ID, "video-status").text == "done: 12 frames"
        assert driver.find_element(By.ID, "video-file").is_enabled()
        assert not driver.find_element(By.ID, "video-cancel").is_displayed()
        not_a_video = tmp_path / "notes.mp4"
        not_a_video.write_text("not a video")
        driver.find_element(By.ID, "video-file").send_keys(str(not_a_video))
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "video-status").get_attribute("class")
                                        == "error")
        assert not driver.find_element(By.ID, "video-result").is_displayed()
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
                  and " 415 " not in entry["message"]]
        assert not errors, errors


@pytest.mark.slow
def test_a_camera_refusing_us_fails_alone(server: Server, rtsp_servers) -> None:
    """A URL job's error is the same whatever answered (a camera's 401, a closed port): a caller learns nothing
    of which ports answer. A failed stream does not count against max_streams; a camera's password shows nowhere."""
    camera = rtsp_servers("--user", f"viewer:{CAMERA_SECRET}").start()
    url = camera.url  # no credentials given: 401, a permanent failure
    refused = server.wait(server.client.post("/v1/jobs", json={"input": url}).json()["id"])
    dead = server.wait(dead_url_job(server))
    assert refused["state"] == dead["state"] == "failed" and refused["error"] == dead["error"]
    assert "401" not in refused["error"] and "refused" not in dead["error"].lower()
    for download in ("result", "masks.zip", "stats.jsonl"):  # nothing written: nothing to download, not an empty zip
        assert server.client.get(f"/v1/jobs/{refused['id']}/{download}").status_code == 404, download
    stream = server.client.post("/v1/streams", json={"url": url, "name": "locked"}).json()
    deadline = time.monotonic() + 60
    while (listed := server.client.get("/v1/streams").json()[0])["state"] != "failed":
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    assert listed["id"] == stream["id"] and listed["error"] == refused["error"]
    for path in (stream["snapshot"], stream["preview"]):  # no frame will come: said, not waited for
        answer = server.client.get(path)
        assert answer.status_code == 409 and answer.json()["error"] == f"the stream failed: {refused['error']}", path

    with_password = url.replace("rtsp://", f"rtsp://viewer:{CAMERA_SECRET}@")
    added = server.client.post("/v1/streams", json={"url": with_password, "name": "unlocked"})
    assert added.status_code == 201, added.text  # max_streams is 1: the failed stream does not count
    assert added.json()["url"] == url
    deadline = time.monotonic() + 60
    while {s["id"]: s for s in server.client.get("/v1/streams").json()}[added.json()["id"]]["state"] != "live":
        assert time.monotonic() < deadline
        time.sleep(0.5)
    for answer in (added, server.client.get("/v1/streams"), server.client.get("/metrics")):
        assert CAMERA_SECRET not in answer.text
    for ident in (stream["id"], added.json()["id"]):
        assert server.client.delete(f"/v1/streams/{ident}").status_code == 200
    assert server.client.get("/readyz").status_code == 200  # the engine goes on (the next test uses it)


@pytest.mark.slow
def test_redirects_are_not_followed(server: Server, clip: Path) -> None:
    """An allowed host that redirects elsewhere: the job fails and the other host gets no request."""
    requests: list[str] = []

    class Target(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(clip.parent), **kwargs)

        def do_GET(self) -> None:
            requests.append(self.path)
            super().do_GET()

        def log_message(self, *args: object) -> None:
            pass

    target = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Target)

    class Redirect(Target):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", f"http://127.0.0.1:{target.server_address[1]}/{clip.name}")
            self.end_headers()

    redirect = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for running in (target, redirect):
        threading.Thread(target=running.serve_forever, daemon=True).start()
    try:
        direct = server.wait(server.client.post(
            "/v1/jobs", json={"input": f"http://127.0.0.1:{target.server_address[1]}/{clip.name}"}).json()["id"])
        # the server is a fine source (an HTTP input drops frames the worker is too busy for, like a live one)
        assert direct["state"] == "done" and direct["frames"] >= 1 and requests
        assert direct["frames"] + direct["dropped"] == 12, direct  # the clip's frames: written or let go
        requests.clear()
        job = server.wait(server.client.post(
            "/v1/jobs", json={"input": f"http://127.0.0.1:{redirect.server_address[1]}/{clip.name}"}).json()["id"])
        assert job["state"] == "failed" and not requests
    finally:
        for running in (target, redirect):
            running.shutdown()
            running.server_close()


def wait_for_frames(server: Server, job_id: str, frames: int) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while server.client.get(f"/v1/jobs/{job_id}").json()["frames"] < frames:
        assert time.monotonic() < deadline
        time.sleep(0.3)


@pytest.mark.slow
def test_delete_cancels_a_job_then_removes_it(server: Server) -> None:
    job_id = server.client.post("/v1/jobs", json={"input": str(VTEST)}).json()["id"]
    wait_for_frames(server, job_id, 2)
    cancel = server.client.delete(f"/v1/jobs/{job_id}")
    assert cancel.status_code == 200 and cancel.json()["state"] in ("cancelling", "cancelled"), cancel.text
    job = server.wait(job_id)
    assert job["state"] == "cancelled" and 2 <= job["frames"] < 795
    mp4 = server.data_dir.parent / "cancelled.mp4"
    mp4.write_bytes(server.client.get(job["result"]).content)
    assert probe_video(mp4).frames == job["frames"]
    with ThreadPoolExecutor(8) as pool:  # a finished job, removed while it is being downloaded
        downloads = [pool.submit(server.client.get, job["result"]) for _ in range(8)]
        assert server.client.delete(f"/v1/jobs/{job_id}").status_code == 200
        answers = [download.result() for download in downloads]
    assert all(a.status_code == 404 or a.content == mp4.read_bytes() for a in answers), \
        [a.status_code for a in answers]
    assert server.client.get(f"/v1/jobs/{job_id}").status_code == 404
    deadline = time.monotonic() + 10  # the files go once the server has closed the last download
    while (server.data_dir / "jobs" / job_id).exists():
        assert time.monotonic() < deadline, "a deleted job's files stayed"
        time.sleep(0.1)


@pytest.mark.slow
def test_sighup_stops_as_sigterm_does_and_leaves_the_running_job_playable(server: Server,
                                                                         rtsp_server: RtspServer) -> None:
    """Last: stops the module's server. A closed terminal's SIGHUP is handled as uvicorn handles SIGTERM. An open
    preview ends at once, not cancelled after the grace with an error in the log."""
    stream = server.client.post("/v1/streams", json={"url": rtsp_server.url}).json()
    deadline = time.monotonic() + 60
    while server.client.get(stream["snapshot"]).status_code != 200:
        assert time.monotonic() < deadline, "the stream never showed a frame"
        time.sleep(0.5)
    posted = server.client.post("/v1/jobs", json={"input": str(VTEST)})
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["id"]
    wait_for_frames(server, job_id, 3)

    def watch() -> float:
        with server.client.stream("GET", stream["preview"]) as preview:
            for _ in preview.iter_bytes():
                pass
        return time.monotonic()

    with ThreadPoolExecutor(1) as pool:
        viewer = pool.submit(watch)
        time.sleep(1)
        server.process.send_signal(signal.SIGHUP)
        started = time.monotonic()
        assert viewer.result(timeout=30) - started < GRACEFUL_S, "the preview ended before the grace ran out"
    assert server.process.wait(timeout=30) == -signal.SIGTERM  # uvicorn ends by the signal once it shut down
    assert time.monotonic() - started < 15
    with av.open(str(server.data_dir / "jobs" / job_id / "result.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert 3 <= frames < 795
    log = server.process.stdout.read()
    assert "Traceback" not in log and "ERROR" not in log and CAMERA_SECRET not in log, log
    # started again at once on the same port, which the closed connections' TIME_WAIT still names; the job it
    # interrupted is found again as it ended
    again = subprocess.Popen(server.process.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until_up(again, server.client, "/readyz")
        job = server.client.get(f"/v1/jobs/{job_id}").json()
        assert (job["state"], job["frames"], job["error"]) == ("interrupted", frames, None), job
    finally:
        stop(again)
