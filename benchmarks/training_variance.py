"""How far one retraining moves cihp-net's scores: `vidparse train` (final weights only, ``--folds 0``) for each
class-weight power and seed, each network then scored as the product runs it: on the check photos (CCP and CIHP,
every detected person, as `benchmarks/garment_quality.py`) and on a video's stability (`vidparse eval-video`, the
labels as written: flow-moved person IoU and part mIoU, and agreement with the frame's own parse). Weight files
given with ``--weights`` are scored the same way without training. Trained weights already in ``--out`` are reused.
Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/training_variance.py --shared ../shared \\
        --powers 0.25,0.5 --seeds 0,1 --out /tmp/variance [--weights weights/cihp-net.onnx] [--frames 300]

Each training takes 10-20 minutes on 2 CPUs (float32), each scoring about 8 (300 video frames).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from garment_quality import score

VIDPARSE = [sys.executable, "-m", "vidparse"]


def train(shared: Path, power: float, seed: int, out: Path) -> Path:
    weights = out / f"power{power}-seed{seed}" / "cihp-net.onnx"
    if not (weights.exists() and (weights.parent / "MODEL_CARD.md").exists()):
        data = shared / "data" / "ccp-train"
        weights.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*VIDPARSE, "train", str(data / "images"), str(data / "labels"), "--label-set", "ccp",
                        "--folds", "0", "--seed", str(seed), "--class-weight-power", str(power), "-o", str(weights)],
                       check=True)
    return weights


def video_stability(weights: Path, video: Path, frames: int, report: Path) -> dict[str, float]:
    """The written labels' row of `vidparse eval-video` for these weights (the defaults: vote and tracking), its
    report kept in ``report``."""
    subprocess.run([*VIDPARSE, "eval-video", str(video), "--max-frames", str(frames), "--model", "cihp-net",
                    "--model-dir", str(weights), "--json", str(report)], check=True, stdout=subprocess.DEVNULL)
    written = [row for row in json.loads(report.read_text())["rows"] if row["mode"] != "per-frame"][-1]
    return {key: 100 * written[key] for key in ("warped_person", "warped_part", "parse_person")}


def photo_scores(weights: Path, shared: Path) -> dict[str, str]:
    """Garments / coarse / fine mIoU % per dataset."""
    reports = {dataset: score("cihp-net", shared, dataset, model_path=weights) for dataset in ("ccp", "cihp")}
    return {dataset: " / ".join("n/a" if (miou := by_scheme[scheme].miou) is None else f"{100 * miou:.1f}"
                                for scheme in ("garments", "coarse", "fine"))
            for dataset, by_scheme in reports.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--powers", default="0.5", help="comma-separated --class-weight-power values")
    parser.add_argument("--seeds", default="0,1", help="comma-separated seeds; empty: score --weights only")
    parser.add_argument("--out", type=Path, required=True, help="folder for the trained weights and reports")
    parser.add_argument("--weights", type=Path, action="append", default=[], help="also score this weights file")
    parser.add_argument("--video", type=Path, help="default: data/video/vtest.avi under --shared")
    parser.add_argument("--frames", type=int, default=300)
    args = parser.parse_args()
    video = args.video or args.shared / "data" / "video" / "vtest.avi"
    runs = [(str(path), path) for path in args.weights]
    runs += [(f"power {power}, seed {seed}", train(args.shared, float(power), int(seed), args.out))
             for power in args.powers.split(",") for seed in args.seeds.split(",") if power and seed]
    print(f"load average before scoring: {os.getloadavg()}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = [(name, photo_scores(weights, args.shared),
             video_stability(weights, video, args.frames, args.out / f"eval-video-{number}.json"))
            for number, (name, weights) in enumerate(runs)]
    print(f"load average after: {os.getloadavg()}\n")
    print(f"mIoU % (garments / coarse / fine); {video.name} 0-{args.frames - 1} as written, %\n")
    print("| weights | CCP | CIHP | moved person IoU | moved part mIoU | vs parse person IoU |")
    print("|---|---|---|---:|---:|---:|")
    for name, photos, stability in rows:
        print(f"| {name} | {photos['ccp']} | {photos['cihp']} | " + " | ".join(f"{v:.1f}" for v in stability.values())
              + " |")


if __name__ == "__main__":
    main()
