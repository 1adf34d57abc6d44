"""First connections to a camera whose SDP carries no SPS and whose keyframes are far apart.

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/first_connect.py --runs 8

Each run starts the test RTSP server (tests/rtsp_server.py) playing 8 s of vtest with a single keyframe, joined at a
random access unit (so the frame size comes only with the next keyframe, up to 8 s later), waits 0 to 2 s, then
opens it with vidparse's default live options and reads 5 frames. Prints each run and how many connected.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from rtsp import CLIP_FPS, RtspServer, make_h264_clip  # noqa: E402

from vidparse.errors import VidparseError  # noqa: E402
from vidparse.stages.source import VideoSource  # noqa: E402

CLIP_FRAMES = 8 * CLIP_FPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args()
    clip = make_h264_clip(args.shared / "data" / "video" / "vtest.avi",
                          Path(tempfile.mkdtemp(prefix="vidparse-connect-")) / "gop8.mp4",
                          frames=CLIP_FRAMES, gop=CLIP_FRAMES)
    connected = 0
    for run in range(args.runs):
        join_at = random.randrange(CLIP_FRAMES)
        server = RtspServer(clip, options=["--join-at", str(join_at)]).start()
        time.sleep(random.uniform(0, 2))
        source = VideoSource(server.url, max_frames=5)
        started = time.monotonic()
        try:
            info = source.open()
            frames = sum(1 for _ in source.frames())
            outcome = f"connected, {info.width}x{info.height}, {frames} frames"
            connected += 1
        except VidparseError as exc:
            outcome = f"failed: {exc.message}"
        finally:
            source.close()
            server.stop()
        print(f"run {run + 1}: keyframe {(CLIP_FRAMES - join_at) % CLIP_FRAMES / CLIP_FPS:.2f} s away, "
              f"{outcome} after {time.monotonic() - started:.1f} s", flush=True)
    print(f"{connected} of {args.runs} runs connected")


if __name__ == "__main__":
    main()
