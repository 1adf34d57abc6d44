"""`vidparse serve` end to end: the real command on a free loopback port, real photos, a real vtest job, a real
RTSP server and a real headless Chromium. One server serves the whole file (the models load once); the last test
stops it with SIGTERM while a job runs. The metrics test counts the job test's frames (both slow)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import httpx
import numpy as np
import pytest
import yaml
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from conftest import REPO, SHARED, VTEST, probe_video, run_cli
from rtsp import RtspServer, free_port

TOKEN = "test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PHOTO = SHARED / "data" / "cihp" / "images" / "0002190.jpg"
UPLOAD_LIMIT_MB = 2
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


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, clip: Path) -> Iterator[Server]:
    """BodyPix and small crops (tests/fast.yaml), one worker, at most one job and one stream at a time, uploads up
    to 2 MB; the vtest folder and the clips' folder are allowed as JSON inputs."""
    folder = tmp_path_factory.mktemp("serve")
    config = yaml.safe_load((REPO / "tests" / "fast.yaml").read_text())
    config["serve"] = {"max_jobs": 1, "max_streams": 1}
    (folder / "serve.yaml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "vidparse", "serve", "--port", str(port), "--token", TOKEN, "--workers", "1",
         "--config", str(folder / "serve.yaml"), "--max-upload-mb", str(UPLOAD_LIMIT_MB),
         "--data-dir", str(folder / "data"), "--allow-dir", str(VTEST.parent), "--allow-dir", str(clip.parent)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "200"})
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers=AUTH, timeout=60)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert process.poll() is None, f"server exited: {process.stdout.read()}"
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.5)
        yield Server(process, url, folder / "data", client)
    finally:
        client.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=30)


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

    masks = zipfile.ZipFile(io.BytesIO(server.client.get(f"/v1/jobs/{job_id}/masks.zip").content))
    assert sorted(masks.namelist()) == [f"{i:06d}.png" for i in range(12)]
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
    time.sleep(2)
    rtsp_server.start()
    deadline = time.monotonic() + 90
    while (now := {s["id"]: s for s in server.client.get("/v1/streams").json()}[stream["id"]])["reconnects"] < 1:
        assert time.monotonic() < deadline, now
        time.sleep(1)
    while server.client.get("/v1/streams").json()[0]["frames"] <= now["frames"]:
        assert time.monotonic() < deadline
        time.sleep(0.5)

    assert server.client.delete(f"/v1/streams/{stream['id']}").status_code == 200
    assert server.client.get(stream["snapshot"]).status_code == 404
    assert stream["id"] not in {s["id"] for s in server.client.get("/v1/streams").json()}


def test_no_public_address_without_a_token() -> None:
    refused = run_cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=60)
    assert refused.returncode == 2
    assert "without a token" in refused.stderr and "hint: pass --token" in refused.stderr


def test_token_required_except_healthz(server: Server) -> None:
    anonymous = httpx.Client(base_url=server.url, timeout=30)
    assert anonymous.get("/healthz").status_code == 200
    for path in ("/", "/readyz", "/metrics", "/v1/streams", "/v1/jobs/x"):
        denied = anonymous.get(path)
        assert denied.status_code == 401 and denied.json()["hint"], path
    assert anonymous.post("/v1/images", files={"file": ("a.jpg", PHOTO.read_bytes())}).status_code == 401
    assert anonymous.get("/v1/streams", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert anonymous.get("/v1/streams", params={"token": TOKEN}).status_code == 200


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


@pytest.mark.slow
def test_browser_uploads_a_photo_and_sees_the_overlay(server: Server, tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
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
    finally:
        driver.quit()
    assert (tmp_path / "page.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_camera_refusing_us_fails_alone(server: Server, rtsp_servers) -> None:
    url = rtsp_servers("--user", "viewer:secret").start().url  # no credentials given: 401, a permanent failure
    job = server.wait(server.client.post("/v1/jobs", json={"input": url}).json()["id"])
    assert job["state"] == "failed" and "401" in job["error"]
    stream = server.client.post("/v1/streams", json={"url": url, "name": "locked"}).json()
    deadline = time.monotonic() + 60
    while (listed := server.client.get("/v1/streams").json()[0])["state"] != "failed":
        assert time.monotonic() < deadline, listed
        time.sleep(0.5)
    assert listed["id"] == stream["id"] and "401" in listed["error"]
    assert server.client.delete(f"/v1/streams/{stream['id']}").status_code == 200
    assert server.client.get("/readyz").status_code == 200  # the engine goes on (the next test uses it)


def wait_for_frames(server: Server, job_id: str, frames: int) -> None:
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while server.client.get(f"/v1/jobs/{job_id}").json()["frames"] < frames:
        assert time.monotonic() < deadline
        time.sleep(0.3)


@pytest.mark.slow
def test_delete_cancels_a_job_then_removes_it(server: Server) -> None:
    job_id = server.client.post("/v1/jobs", json={"input": str(VTEST)}).json()["id"]
    wait_for_frames(server, job_id, 2)
    assert server.client.delete(f"/v1/jobs/{job_id}").status_code == 200
    job = server.wait(job_id)
    assert job["state"] == "cancelled" and 2 <= job["frames"] < 795
    mp4 = server.data_dir.parent / "cancelled.mp4"
    mp4.write_bytes(server.client.get(job["result"]).content)
    assert probe_video(mp4).frames == job["frames"]
    assert server.client.delete(f"/v1/jobs/{job_id}").status_code == 200  # a finished job: removed
    assert server.client.get(f"/v1/jobs/{job_id}").status_code == 404
    assert not (server.data_dir / "jobs" / job_id).exists()


@pytest.mark.slow
def test_sigterm_leaves_the_running_job_playable(server: Server) -> None:
    """Last: stops the module's server."""
    posted = server.client.post("/v1/jobs", json={"input": str(VTEST)})
    assert posted.status_code == 202, posted.text
    job_id = posted.json()["id"]
    wait_for_frames(server, job_id, 3)
    server.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    assert server.process.wait(timeout=30) == -signal.SIGTERM  # uvicorn ends by the signal once it shut down
    assert time.monotonic() - started < 15
    with av.open(str(server.data_dir / "jobs" / job_id / "result.mp4")) as container:
        frames = sum(1 for _ in container.decode(video=0))
    assert 3 <= frames < 795
    assert "Traceback" not in server.process.stdout.read()
