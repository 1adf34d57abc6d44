"""Where parsing quality stops improving with crop size for small people: CIHP and CCP photos scaled DOWN so their
people are about as tall as vtest's (about 100 pixels), then scored (coarse mIoU, as `vidparse eval`) with crops
parsed at a fixed height (today's defaults) or at most ``max_upscale`` times their height in the image.

Each photo is scaled so that the bounding box of its ground-truth people is ``--person`` pixels tall (labels with
nearest neighbour). Prints a Markdown table (docs/benchmarks.md holds a run) and the parser input per vtest frame
for each setting. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/adaptive_scale.py --shared ../shared --model bodypix \\
        --person 100 --person 160 --setting roi.max_upscale=0 --setting roi.max_upscale=2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml
from PIL import Image

from vidparse.config import load_config
from vidparse.evaluation.datasets import find_samples, read_sample
from vidparse.evaluation.runs import evaluate_images
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import load_label_set
from vidparse.stages.roi import crop_person

DATASETS = ("cihp", "ccp")
VTEST_FRAMES = 20


def setting(text: str) -> dict[str, Any]:
    """``roi.max_upscale=2,parsers.cihp-lite.material_upscale=1.25`` -> overrides (values parsed as YAML)."""
    return {key: yaml.safe_load(value) for key, value in (part.split("=", 1) for part in text.split(","))}


def scaled_copy(shared: Path, dataset: str, person: int, work: Path) -> tuple[Path, Path]:
    """The dataset's photos and labels scaled so the ground-truth people are ``person`` pixels tall."""
    truth = load_label_set(dataset)
    images, labels = work / f"{dataset}-{person}" / "images", work / f"{dataset}-{person}" / "labels"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for sample in find_samples(shared / "data" / dataset / "images", shared / "data" / dataset / "labels"):
        image, label = read_sample(sample, truth)
        rows = np.nonzero((label != 0).any(axis=1))[0]
        scale = person / (rows[-1] - rows[0] + 1)
        size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
        cv2.imwrite(str(images / f"{sample.name}.png"), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
        Image.fromarray(cv2.resize(label, size, interpolation=cv2.INTER_NEAREST)).save(labels / f"{sample.name}.png")
    return images, labels


def vtest_kilopixels(shared: Path, overrides: dict[str, Any], threads: int) -> float:
    """Parser input (BodyPix crops) per vtest frame with these settings, first VTEST_FRAMES frames."""
    config = load_config(overrides=overrides)
    detector = build_person_parser(config, ResolvedModels.for_config(config), threads).detector
    detector.open()
    capture = cv2.VideoCapture(str(shared / "data" / "video" / "vtest.avi"))
    pixels = 0
    for _ in range(VTEST_FRAMES):
        ok, image = capture.read()
        if not ok:
            break
        for box in detector.process(image).boxes:
            crop = crop_person(image, box, config.roi.margin, config.roi.person_height, config.roi.max_upscale)
            pixels += crop.image.shape[0] * crop.image.shape[1]
    capture.release()
    detector.close()
    return pixels / VTEST_FRAMES / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--model", default="bodypix")
    parser.add_argument("--person", type=int, action="append", help="person heights to scale the photos to")
    parser.add_argument("--setting", type=setting, action="append", required=True,
                        help="config overrides for one row, e.g. roi.max_upscale=2 (repeatable)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    persons = args.person or [100]
    with tempfile.TemporaryDirectory(prefix="adaptive-scale-") as tmp:
        folders = {(d, p): scaled_copy(args.shared, d, p, Path(tmp)) for d in DATASETS for p in persons}
        print(f"model {args.model}; photos scaled so their people are P pixels tall; coarse mIoU %\n")
        print("| setting | " + " | ".join(f"{d.upper()} P={p}" for p in persons for d in DATASETS)
              + " | vtest parser input, kpx/frame |\n|---|" + "---:|" * (len(persons) * len(DATASETS) + 1))
        for overrides in args.setting:
            config = load_config(overrides={"model": args.model, **overrides})
            models = ResolvedModels.for_config(config)
            scores = [evaluate_images(config, models, load_label_set(d), find_samples(*folders[d, p]), args.threads).miou
                      for p in persons for d in DATASETS]
            name = ", ".join(f"{k} {v}" for k, v in overrides.items())
            print(f"| {name} | " + " | ".join(f"{100 * (s or 0):.1f}" for s in scores)
                  + f" | {vtest_kilopixels(args.shared, {'model': args.model, **overrides}, args.threads):.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
