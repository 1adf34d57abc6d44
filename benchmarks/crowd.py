"""Crowds with exact truth: people cut from labelled photos (by default the 30 CCP check photos) pasted at known
heights and places onto an empty street, then detected and parsed as `vidparse run` does; recall, false boxes and
garments mIoU per height band.

The street is the per-pixel median of vtest's frames (its people walk, so the median is empty), scaled to
``--size``. Each crowd has ``--persons`` people, a third in each height band (30-60, 60-100, 100-200 pixels), placed
as a camera looking down on a square sees them: the smaller, the farther up the frame (their feet lie between a
quarter of the frame's height, for 30 pixels, and its bottom, for 200). Farther people are pasted first, so nearer
ones cover them. Each image is written with its label map (CCP ids) and its people's boxes (JSON) into ``--out``.

A person is found when a detected box overlaps its truth box by IoU >= 0.5 (one detection per person, Hungarian
matching); a false box matches no person. Garments mIoU is scored inside each person's truth box against the
crowd's label map (`vidparse eval --scheme garments`'s classes). Times are one process with ``--threads``. Usage,
from the repository root, on a quiet machine:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/crowd.py --shared ../shared --out /tmp/crowd \\
        --setting detector.tiles=0 --setting detector.tiles=3,detector.tile_min_width=0
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from PIL import Image
from scipy.optimize import linear_sum_assignment

from adaptive_scale import setting
from vidparse.config import load_config
from vidparse.evaluation.datasets import find_samples, read_sample
from vidparse.evaluation.runs import Tally, image_report
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.tracker import iou_matrix

BANDS = ((30, 60), (60, 100), (100, 200))
MATCH_IOU = 0.5
FEET_FROM, FEET_TO = 0.25, 1.0  # where the feet of a 30- and a 200-pixel person lie, share of the frame's height


@dataclass
class Person:
    image: np.ndarray  # BGR, cropped to the person
    labels: np.ndarray  # CCP ids, 0 off the person


def empty_background(video: Path, size: tuple[int, int], samples: int = 40) -> np.ndarray:
    """The per-pixel median of ``samples`` frames spread over the video, scaled to ``size`` (width, height)."""
    with av.open(str(video)) as container:
        step = max(1, container.streams.video[0].frames // samples)
        chosen = [f.to_ndarray(format="bgr24") for i, f in enumerate(container.decode(video=0)) if i % step == 0]
    median = np.median(np.stack(chosen), axis=0).astype(np.uint8)
    return cv2.resize(median, size, interpolation=cv2.INTER_CUBIC)


def cut_persons(shared: Path, people: str = "ccp") -> list[Person]:
    """Every photo's person in ``shared``/data/``people`` (CCP labels; photos whose label map is empty are left
    out), cropped to its label map's non-zero pixels."""
    truth = load_label_set("ccp")
    root = shared / "data" / people
    persons = []
    for sample in find_samples(root / "images", root / "labels"):
        image, labels = read_sample(sample, truth)
        rows, cols = np.nonzero(labels)
        if not rows.size:
            continue
        y1, y2, x1, x2 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        persons.append(Person(image[y1:y2, x1:x2], labels[y1:y2, x1:x2]))
    return persons


def paste(canvas: np.ndarray, canvas_labels: np.ndarray, person: Person, height: int, x: int, feet_y: int
          ) -> list[int]:
    """Paste ``person`` scaled to ``height`` pixels with its left side at ``x`` and its feet at ``feet_y``, over
    what is there; returns its box (x1, y1, x2, y2) in the canvas, clipped."""
    scale = height / person.labels.shape[0]
    size = (max(1, round(person.labels.shape[1] * scale)), height)
    image = cv2.resize(person.image, size, interpolation=cv2.INTER_AREA)
    labels = cv2.resize(person.labels, size, interpolation=cv2.INTER_NEAREST)
    y1 = feet_y - height
    cy1, cx1 = max(0, y1), max(0, x)
    cy2, cx2 = min(canvas.shape[0], feet_y), min(canvas.shape[1], x + size[0])
    part = labels[cy1 - y1 : cy2 - y1, cx1 - x : cx2 - x]
    mask = part != 0
    canvas[cy1:cy2, cx1:cx2][mask] = image[cy1 - y1 : cy2 - y1, cx1 - x : cx2 - x][mask]
    canvas_labels[cy1:cy2, cx1:cx2][mask] = part[mask]
    rows, cols = np.nonzero(mask)
    return [int(cx1 + cols.min()), int(cy1 + rows.min()), int(cx1 + cols.max() + 1), int(cy1 + rows.max() + 1)]


def make_crowd(background: np.ndarray, persons: list[Person], count: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """One crowd image, its label map and its people's boxes."""
    frame_h, frame_w = background.shape[:2]
    placed: list[tuple[int, int, int, Person]] = []  # feet y, x, height, person
    boxes: list[list[int]] = []
    for index in range(count):
        low, high = BANDS[index % len(BANDS)]
        height = int(rng.integers(low, high))
        person = persons[int(rng.integers(len(persons)))]
        width = round(person.labels.shape[1] * height / person.labels.shape[0])
        depth = (height - BANDS[0][0]) / (BANDS[-1][1] - BANDS[0][0])
        for _ in range(50):  # somewhere it hides no more than a fifth of anyone already placed
            feet = int(frame_h * (FEET_FROM + (FEET_TO - FEET_FROM) * depth) + rng.normal(0, 0.03 * frame_h))
            feet = int(np.clip(feet, height, frame_h))
            x = int(rng.integers(0, max(1, frame_w - width)))
            box = np.array([[x, feet - height, x + width, feet]], np.float32)
            if not boxes or iou_matrix(box, np.array(boxes, np.float32)).max() < 0.2:
                break
        boxes.append(box[0].astype(int).tolist())
        placed.append((feet, x, height, person))
    image, labels = background.copy(), np.zeros(background.shape[:2], np.uint8)
    truth = [paste(image, labels, person, height, x, feet) for feet, x, height, person in sorted(placed, key=lambda p: p[0])]
    return image, labels, truth


def write_crowds(shared: Path, out: Path, images: int, persons: int, size: tuple[int, int], seed: int,
                 people: str = "ccp") -> list[Path]:
    """Make ``images`` crowds of the people of ``shared``/data/``people`` into ``out``/images, labels and boxes;
    returns the image paths."""
    rng = np.random.default_rng(seed)
    background = empty_background(shared / "data" / "video" / "vtest.avi", size)
    cut = cut_persons(shared, people)
    out.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out / "street.png"), background)
    for folder in ("images", "labels", "boxes"):
        (out / folder).mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(images):
        image, labels, boxes = make_crowd(background, cut, persons, rng)
        name = f"{index:03d}"
        cv2.imwrite(str(out / "images" / f"{name}.png"), image)
        Image.fromarray(labels).save(out / "labels" / f"{name}.png")
        (out / "boxes" / f"{name}.json").write_text(json.dumps({"boxes": boxes}))
        paths.append(out / "images" / f"{name}.png")
    return paths


def band_of(box: np.ndarray) -> int | None:
    height = box[3] - box[1]
    return next((i for i, (low, high) in enumerate(BANDS) if low <= height < high or (i == len(BANDS) - 1 and height == high)), None)


@dataclass
class Score:
    setting: str
    images: int = 0
    persons: list[int] = field(default_factory=lambda: [0] * len(BANDS))
    found: list[int] = field(default_factory=lambda: [0] * len(BANDS))
    false_boxes: int = 0
    street_boxes: int = 0  # boxes on the empty street (cones, bins...): false boxes no pasted person causes
    detect_s: float = 0.0
    total_s: float = 0.0
    miou: list[float | None] = field(default_factory=list)

    def row(self) -> str:
        recall = [f"{f / p:.2f}" if p else "-" for f, p in zip(self.found, self.persons)]
        miou = [f"{m:.3f}" if m is not None else "-" for m in self.miou]
        return (f"| {self.setting} | {' | '.join(recall)} | {self.false_boxes / self.images:.2f} | {self.street_boxes} | {' | '.join(miou)} "
                f"| {1000 * self.detect_s / self.images:.0f} | {self.images / self.total_s:.2f} |")


def score(overrides: dict[str, Any], name: str, paths: list[Path], threads: int) -> Score:
    config = load_config(overrides=overrides)
    ccp = load_label_set("ccp")
    tallies = [Tally(ccp, load_label_set(LABEL_SETS[config.model]), "garments") for _ in BANDS]
    parser = build_person_parser(config, ResolvedModels.for_config(config), threads)
    result = Score(name)
    parser.open()
    try:
        result.street_boxes = len(parser.detector.process(cv2.imread(str(paths[0].parent.parent / "street.png"))))
        for path in paths:
            image = cv2.imread(str(path))
            truth_labels = np.array(Image.open(path.parent.parent / "labels" / path.name))
            truth = np.array(json.loads((path.parent.parent / "boxes" / f"{path.stem}.json").read_text())["boxes"],
                             np.float32)
            start = time.perf_counter()
            labels, frame, detections = parser.process_with_detections(image)
            result.total_s += time.perf_counter() - start
            result.detect_s += frame.timings["detect"]
            iou = iou_matrix(truth, detections.boxes)
            rows, cols = linear_sum_assignment(-iou)
            matched = [(r, c) for r, c in zip(rows, cols) if iou[r, c] >= MATCH_IOU]
            result.false_boxes += len(detections) - len(matched)
            hit = {r for r, _ in matched}
            for index, box in enumerate(truth):
                band = band_of(box)
                if band is None:
                    continue
                result.persons[band] += 1
                result.found[band] += index in hit
                x1, y1, x2, y2 = box.astype(int)
                tallies[band].add(truth_labels[y1:y2, x1:x2], labels[y1:y2, x1:x2])
            result.images += 1
    finally:
        parser.close()
    result.miou = [image_report(ccp, tally, config.model, {}).miou for tally in tallies]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--out", type=Path, required=True, help="Folder for the crowd images, labels and boxes.")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--persons", type=int, default=12)
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the crowds.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--people", default="ccp",
                        help="Labelled photos the people are cut from, a folder of SHARED/data: ccp (the 30 check "
                             "photos, never trained on: the default) or ccp-train (674, cihp-net's training photos).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--setting", action="append", default=[],
                        help="Config overrides, e.g. detector.tiles=3,detector.tile_rows=1 (repeatable); "
                             "'default' for none.")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    paths = write_crowds(args.shared, args.out, args.images, args.persons, (width, height), args.seed, args.people)
    print(f"load average before: {os.getloadavg()}", flush=True)
    scores = []
    for text in args.setting or ["default"]:
        scores.append(score({} if text == "default" else setting(text), text, paths, args.threads))
        print(scores[-1].row(), flush=True)
    print(f"load average after: {os.getloadavg()}")
    bands = [f"{low}-{high} px" for low, high in BANDS]
    print(f"\n{args.images} crowds of {args.persons} from {args.people} at {args.size} (seed {args.seed}), "
          f"{sum(scores[0].persons)} persons ({', '.join(f'{b}: {p}' for b, p in zip(bands, scores[0].persons))}); "
          f"one process, {args.threads} thread(s)\n")
    print(f"| setting | {' | '.join(f'recall {b}' for b in bands)} | false boxes / image | boxes on the empty street | "
          f"{' | '.join(f'garments mIoU {b}' for b in bands)} | detector ms / image | fps |")
    print("|---|" + "---:|" * (2 * len(BANDS) + 4))
    for result in scores:
        print(result.row())


if __name__ == "__main__":
    main()
