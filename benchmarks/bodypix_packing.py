"""BodyPix on the person crops of vtest frames: one inference call per crop against all crops of a frame packed
onto one canvas (stages/roi.py ``pack``), time per frame and how many labels agree. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/bodypix_packing.py --frames 10 --max-upscale 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np

from vidparse.config import load_config
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.model_store import resolve_model
from vidparse.stages.parsers.bodypix import STRIDE, BodyPixParser, Options
from vidparse.stages.roi import crop_person, pack, unpack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=Path("../shared/data/video/vtest.avi"))
    parser.add_argument("--frames", type=int, default=10)
    parser.add_argument("--max-upscale", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    config = load_config(overrides={"model": "bodypix"})
    detector = build_person_parser(config, ResolvedModels.for_config(config), args.threads).detector
    detector.open()
    capture = cv2.VideoCapture(str(args.video))
    frames = [capture.read()[1] for _ in range(args.frames)]
    crops = [[crop_person(frame, box, config.roi.margin, config.roi.person_height, args.max_upscale).image
              for box in detector.process(frame).boxes] for frame in frames]
    bodypix = BodyPixParser(resolve_model("bodypix"), Options(), args.threads)
    bodypix.open()
    start = time.perf_counter()
    one_by_one = [bodypix.parse(frame_crops) for frame_crops in crops]
    one_ms = 1000 * (time.perf_counter() - start) / len(frames)
    start = time.perf_counter()
    packed = []
    for frame_crops in crops:
        canvas, placements = pack(frame_crops, align=STRIDE)
        packed.append(unpack(bodypix.parse([canvas])[0], placements))
    packed_ms = 1000 * (time.perf_counter() - start) / len(frames)
    pairs = [(a, b) for fa, fb in zip(one_by_one, packed) for a, b in zip(fa, fb)]
    print(f"{len(pairs) / len(frames):.1f} crops a frame (max_upscale {args.max_upscale}): one by one {one_ms:.0f} "
          f"ms/frame, packed {packed_ms:.0f} ms/frame; equal labels {100 * np.mean([np.mean(a == b) for a, b in pairs]):.1f}%, "
          f"equal person mask {100 * np.mean([np.mean((a > 0) == (b > 0)) for a, b in pairs]):.1f}%")


if __name__ == "__main__":
    main()
