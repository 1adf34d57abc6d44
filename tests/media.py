"""A corpus of real-world media made by ffmpeg from vtest at test time (never committed): the files phones,
cameras and editors produce. Each entry is one row of the table in docs/faults.md.

Every clip takes every 10th vtest frame (people move a lot between frames, so frame order is visible), at
384x288 and 10 fps, a second or so long.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

SELECT = r"select=not(mod(n\,10))"
EVERY_10TH = SELECT + ",setpts=N/(10*TB),scale=384:288"
# 2^33 ticks of 90 kHz is 95443.7 s; the TS muxer starts 1.4 s after the offset, so the wrap falls mid-clip.
TS_WRAP_OFFSET_S = 95441.8

# name -> ffmpeg arguments after the input (vtest); "{plain}" entries are remuxed from plain.mp4 instead.
VIDEOS: dict[str, list[str]] = {
    "bframes.avi": ["-vf", EVERY_10TH, "-frames:v", "12", "-c:v", "libx264", "-bf", "3", "-an"],
    "plain.mp4": ["-vf", EVERY_10TH, "-frames:v", "8", "-c:v", "libx264", "-an"],
    "wrap.ts": ["-vf", EVERY_10TH, "-frames:v", "12", "-c:v", "libx264", "-an", "-output_ts_offset",
                str(TS_WRAP_OFFSET_S)],
    "vfr_audio.mkv": ["-f", "lavfi", "-i", "sine=f=440:d=3", "-vf",
                      SELECT + r",scale=384:288,setpts=(N+3*gte(N\,6))/(10*TB)", "-frames:v", "12",
                      "-fps_mode", "passthrough", "-c:v", "libx264", "-c:a", "aac", "-shortest"],
    "10bit.mp4": ["-vf", EVERY_10TH, "-frames:v", "8", "-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-an"],
    "444.mp4": ["-vf", EVERY_10TH, "-frames:v", "8", "-c:v", "libx264", "-pix_fmt", "yuv444p", "-an"],
    "odd_333x241.mkv": ["-vf", SELECT + ",setpts=N/(10*TB),scale=333:241", "-frames:v", "8", "-c:v", "libx264",
                        "-pix_fmt", "yuv444p", "-an"],
    "interlaced.mpg": ["-vf", EVERY_10TH, "-frames:v", "8", "-c:v", "mpeg2video", "-flags", "+ilme+ildct",
                       "-top", "1", "-q:v", "4", "-an"],
}
ROTATED = {f"rotate{angle}.mp4": angle for angle in (90, 180, 270)}  # plain.mp4 with a display matrix


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


def build_corpus(vtest: Path, folder: Path) -> dict[str, Path]:
    """Every corpus file, by name."""
    made = {}
    for name, args in VIDEOS.items():
        ffmpeg("-i", str(vtest), *args, str(folder / name))
        made[name] = folder / name
    for name, angle in ROTATED.items():
        ffmpeg("-i", str(folder / "plain.mp4"), "-c", "copy", "-metadata:s:v:0", f"rotate={angle}", str(folder / name))
        made[name] = folder / name
    parts = [folder / "part_384x288.ts", folder / "part_320x240.ts"]
    ffmpeg("-i", str(folder / "plain.mp4"), "-c:v", "libx264", str(parts[0]))
    ffmpeg("-i", str(folder / "plain.mp4"), "-vf", "scale=320:240", "-c:v", "libx264", str(parts[1]))
    made["size_change.ts"] = folder / "size_change.ts"  # two captures joined: the frame size changes midway
    made["size_change.ts"].write_bytes(parts[0].read_bytes() + parts[1].read_bytes())
    sequence = folder / "sequence"
    sequence.mkdir()
    ffmpeg("-i", str(vtest), "-vf", EVERY_10TH, "-frames:v", "8", str(sequence / "%06d.png"))
    made["sequence"] = sequence
    return made


def exif_rotated_jpeg(photo: Path, target: Path) -> Path:
    """``photo`` stored a quarter turn counterclockwise, with EXIF orientation 6 (turn clockwise to show):
    a viewer that honours EXIF shows the original photo."""
    with Image.open(photo) as image:
        stored = image.convert("RGB").transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    stored.save(target, exif=exif, quality=95)
    return target


def reference_frames(path: Path, folder: Path) -> list[np.ndarray]:
    """Every frame as ffmpeg's own command line decodes it, display matrix applied (autorotate), BGR."""
    folder.mkdir(parents=True, exist_ok=True)
    ffmpeg("-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough", str(folder / "%06d.png"))
    return [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]
