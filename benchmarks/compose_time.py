"""Time of the compose stage (``Recolor.process``, alpha 0.6, no legend) on vtest frames, with a label map that
fills every detected person's box with stripes of random classes. Prints the median ms a frame. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/compose_time.py --frames 20
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import cv2
import numpy as np

from vidparse.config import load_config
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.recolor import ComposeOptions, Recolor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=Path("../shared/data/video/vtest.avi"))
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    config = load_config()
    detector = build_person_parser(config, ResolvedModels.for_config(config), 1).detector
    detector.open()
    capture = cv2.VideoCapture(str(args.video))
    rng = np.random.default_rng(0)
    label_set = load_label_set(LABEL_SETS[config.model])
    pairs = []
    for _ in range(args.frames):
        ok, image = capture.read()
        if not ok:
            break
        labels = np.zeros(image.shape[:2], np.uint8)
        for x1, y1, x2, y2 in detector.process(image).boxes.astype(int):
            labels[max(0, y1):y2, max(0, x1):x2] = rng.integers(1, len(label_set), (1, max(1, x2 - max(0, x1))))
        pairs.append((image, labels))
    recolor = Recolor(label_set, ComposeOptions(alpha=0.6))
    times = []
    for image, labels in pairs * args.repeats:
        start = time.perf_counter()
        recolor.process(image, labels)
        times.append(time.perf_counter() - start)
    share = np.mean([(labels > 0).mean() for _, labels in pairs])
    print(f"compose: {1000 * statistics.median(times):.1f} ms a frame (median of {len(times)}), "
          f"{100 * share:.1f}% of the pixels labelled")


if __name__ == "__main__":
    main()
