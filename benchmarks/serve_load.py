"""Load on `vidparse serve` over loopback: photo requests from concurrent clients, then live streams for minutes.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/serve_load.py --minutes 10 --markdown /tmp/serve_load.md  # pasted into docs/serve.md

1. Starts `vidparse serve` on a free loopback port and waits for /readyz.
2. Sends ``--photos`` CIHP photos (format=json) from ``--clients`` concurrent clients: errors, p50 / p95 latency.
3. Starts ``--streams`` test RTSP servers (tests/rtsp_server.py, looping 50 vtest frames at 25 fps), adds each as
   a live stream and samples every 10 s: the server's process-tree memory (PSS), and each stream's fps, latency
   p50 / p95 and dropped frames from GET /v1/streams. Memory growth is measured from the end of the first minute.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from rtsp import RtspServer, free_port, make_h264_clip  # noqa: E402

from vidparse.pipeline.memory import MB, tree_pss_bytes  # noqa: E402
from vidparse.pipeline.stats import percentile  # noqa: E402

SAMPLE_S = 10


def start_server(args: argparse.Namespace, scratch: Path) -> tuple[subprocess.Popen, httpx.Client]:
    port = free_port()
    # the test RTSP servers listen on 127.0.0.1: a loopback host the server refuses unless allowed
    command = [sys.executable, "-m", "vidparse", "serve", "--port", str(port), "--data-dir", str(scratch / "data"),
               "--allow-host", "127.0.0.1"]
    command += ["--workers", str(args.workers)] if args.workers else []
    command += ["--config", str(args.config)] if args.config else []
    log = (scratch / "server.log").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if client.get("/readyz").status_code == 200:
                return process, client
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.5)
    raise SystemExit(f"the server did not get ready; see {scratch / 'server.log'}")


def photo_load(client: httpx.Client, photos: list[Path], count: int, clients: int) -> dict[str, float]:
    def one(index: int) -> tuple[float, int]:
        photo = photos[index % len(photos)]
        started = time.perf_counter()
        answer = client.post("/v1/images", files={"file": (photo.name, photo.read_bytes(), "image/jpeg")})
        return time.perf_counter() - started, answer.status_code

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, range(count)))
    wall = time.perf_counter() - started
    seconds = [s for s, _ in results]
    return {"requests": count, "clients": clients, "errors": sum(code != 200 for _, code in results),
            "p50_ms": percentile(seconds, 50) * 1000, "p95_ms": percentile(seconds, 95) * 1000,
            "max_ms": max(seconds) * 1000, "per_s": count / wall}


def stream_load(client: httpx.Client, pid: int, urls: list[str], minutes: float) -> list[dict]:
    ids = [client.post("/v1/streams", json={"url": url, "name": f"cam{i}"}).json()["id"] for i, url in enumerate(urls)]
    started = time.monotonic()
    samples = []
    while time.monotonic() - started < minutes * 60:
        time.sleep(SAMPLE_S)
        streams = {s["id"]: s for s in client.get("/v1/streams").json()}
        samples.append({"t": time.monotonic() - started, "pss_mb": tree_pss_bytes(pid) / MB,
                        "streams": [streams.get(i, {}) for i in ids]})
        line = ", ".join(f"{s.get('state')} {s.get('fps')} fps p95 {s.get('latency_p95_ms')} ms"
                         for s in samples[-1]["streams"])
        print(f"{samples[-1]['t']:6.0f} s  {samples[-1]['pss_mb']:7.0f} MB  {line}", flush=True)
    for ident in ids:
        client.delete(f"/v1/streams/{ident}")
    return samples


def markdown(args: argparse.Namespace, photos: dict[str, float], samples: list[dict]) -> str:
    lines = [f"machine: {platform.node()}, {platform.processor() or platform.machine()}, shared with other work",
             "", f"Photos (`format=json`, CIHP, {photos['clients']} concurrent clients):", "",
             "| requests | errors | p50 ms | p95 ms | max ms | requests/s |", "|---|---|---|---|---|---|",
             f"| {photos['requests']} | {photos['errors']} | {photos['p50_ms']:.0f} | {photos['p95_ms']:.0f} | "
             f"{photos['max_ms']:.0f} | {photos['per_s']:.2f} |", ""]
    if samples:
        lines += [f"{len(args.rtsp)} live streams for {args.minutes:g} min (one row a minute; fps summed, latency "
                  "the worst stream's):", "", "| minute | tree PSS MB | fps (all) | latency p50 ms | latency p95 ms "
                  "| dropped (all) |", "|---|---|---|---|---|---|"]
        for minute in range(1, int(args.minutes) + 1):
            row = min(samples, key=lambda s: abs(s["t"] - minute * 60))
            streams = row["streams"]
            lines.append(f"| {minute} | {row['pss_mb']:.0f} | {sum(s.get('fps') or 0 for s in streams):.1f} | "
                         f"{max(s.get('latency_p50_ms') or 0 for s in streams)} | "
                         f"{max(s.get('latency_p95_ms') or 0 for s in streams)} | "
                         f"{sum(s.get('dropped') or 0 for s in streams)} |")
        after = [s for s in samples if s["t"] >= 60]
        if after:
            base = after[0]["pss_mb"]
            growth = (max(s["pss_mb"] for s in after) - base) / base
            worst = max(max(x.get("latency_p95_ms") or 0 for x in s["streams"]) for s in after)
            lines += ["", f"Memory after the first minute: {base:.0f} MB, at most {base * (1 + growth):.0f} MB "
                      f"(growth {growth:.1%}). Worst p95 latency after the first minute: {worst} ms."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--streams", type=int, default=3)
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--workers", type=int, help="the server's --workers (default: its own)")
    parser.add_argument("--config", type=Path, help="the server's --config (e.g. tests/fast.yaml)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="vidparse-serve-load-"))
    photos = sorted((args.shared / "data" / "cihp" / "images").glob("*.jpg"))
    process, client = start_server(args, scratch)
    servers: list[RtspServer] = []
    try:
        photo_results = photo_load(client, photos, args.photos, args.clients)
        print(photo_results, flush=True)
        samples: list[dict] = []
        if args.streams and args.minutes > 0:
            clip = make_h264_clip(args.shared / "data" / "video" / "vtest.avi", scratch / "clip.mp4")
            servers = [RtspServer(clip).start() for _ in range(args.streams)]
            args.rtsp = [server.url for server in servers]
            samples = stream_load(client, process.pid, args.rtsp, args.minutes)
        else:
            args.rtsp = []
    finally:
        for server in servers:
            server.stop()
        process.terminate()
        process.wait(timeout=60)
        client.close()
    text = markdown(args, photo_results, samples)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
