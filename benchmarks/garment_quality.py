"""Parsers against labelled photos in every scoring scheme (coarse, garments, fine) from one parse per photo: the
same stage and scores as `vidparse eval`, one Markdown table per scheme. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/garment_quality.py --shared ../shared \\
        --models cihp-lite,cihp-net [--json docs/garment_quality.json] [--datasets ccp,cihp] [--every N]
        [--people labelled]

``--people labelled`` parses only the crop of the detected box that best matches the labelled people's bounds (as
`vidparse train` scores its folds) instead of every detected person: CCP labels one person per photo, so the others
in the street count as false there.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from vidparse.config import Config, load_config
from vidparse.evaluation.datasets import Sample, find_samples, read_sample
from vidparse.evaluation.runs import ImageReport, Tally, image_report, quality_settings
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import SCHEMES, load_label_set
from vidparse.stages.parsers import LABEL_SETS
from vidparse.stages.person_parser import PersonParser
from vidparse.stages.roi import crop_person, paste_labels
from vidparse.stages.types import LabelSet
from vidparse.training.dataset import fine_lut, labelled_person, person_box

DATASETS = {"ccp": "ccp", "cihp": "cihp"}  # folder under data/ -> its label set
LABEL_SET_OF = {**DATASETS, "ccp-train": "ccp"}


def parse_labelled_person(parser: PersonParser, image: np.ndarray, labels: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """The parse of the one crop around the detected box that best matches the labelled people (their own bounds
    where no box does), the person as `vidparse train` finds it; ``lut``: the truth's classes to fine ones."""
    person = labelled_person(lut[labels])
    predicted = np.zeros(labels.shape, np.uint8)
    if person.any():
        options = parser.options
        crop = crop_person(image, person_box(parser.detector, image, person).tolist(), options.margin,
                           options.person_height, options.max_upscale)
        paste_labels(predicted, crop, parser.parser.parse_crops([crop])[0])
    return predicted


def scheme_tallies(truth: LabelSet, model: str) -> dict[str, Tally]:
    """An empty tally for each scheme, of ``truth``'s labels against ``model``'s."""
    return {scheme: Tally(truth, load_label_set(LABEL_SETS[model]), scheme) for scheme in SCHEMES}


def tally_photos(config: Config, samples: Sequence[Sample], truth: LabelSet, tallies: dict[str, Tally],
                 people: str = "all") -> None:
    """Parse each photo with ``config``'s parser (every detected person, or ``people="labelled"``: only the crop
    around the labelled one) and add it to every scheme's tally."""
    lut = fine_lut(truth)
    parser = build_person_parser(config, ResolvedModels.for_config(config), threads=None)
    parser.open()
    try:
        for sample in samples:
            image, labels = read_sample(sample, truth)
            predicted = parse_labelled_person(parser, image, labels, lut) if people == "labelled" else parser.process(image)[0]
            for tally in tallies.values():
                tally.add(labels, predicted)
    finally:
        parser.close()


def score(model: str, shared: Path, dataset: str, every: int = 1, people: str = "all",
          model_path: Path | None = None) -> dict[str, ImageReport]:
    config = load_config(overrides={"model": model, "model_path": str(model_path) if model_path else None})
    truth = load_label_set(LABEL_SET_OF[dataset])
    tallies = scheme_tallies(truth, model)
    samples = find_samples(shared / "data" / dataset / "images", shared / "data" / dataset / "labels")[::every]
    tally_photos(config, samples, truth, tallies, people)
    return {scheme: image_report(truth, tally, model, quality_settings(config)) for scheme, tally in tallies.items()}


def print_tables(reports: dict[str, dict[str, ImageReport]]) -> None:
    """One Markdown table per scheme, a row per ``reports`` key (its label) with each scheme's report."""
    for scheme, classes in SCHEMES.items():
        print(f"\n{scheme} scheme, IoU %\n")
        print("| photos, model | " + " | ".join(classes) + " | mIoU |")
        print("|---|" + "---:|" * (len(classes) + 1))
        for label, by_scheme in reports.items():
            report = by_scheme[scheme]
            cells = ["n/a" if c.iou is None else f"{100 * c.iou:.1f}" for c in report.classes]
            miou = "n/a" if report.miou is None else f"**{100 * report.miou:.1f}**"
            print(f"| {label} | " + " | ".join(cells) + f" | {miou} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--models", default="cihp-lite,cihp-net")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--datasets", default=",".join(DATASETS), help="folders under data/: ccp, cihp, ccp-train")
    parser.add_argument("--every", type=int, default=1, help="score every Nth photo")
    parser.add_argument("--people", choices=("all", "labelled"), default="all")
    args = parser.parse_args()
    reports = {(model, dataset): score(model, args.shared, dataset, args.every, args.people)
               for model in args.models.split(",") for dataset in args.datasets.split(",")}
    print_tables({f"{dataset.upper()} ({by_scheme['garments'].images}), {model}": by_scheme
                  for (model, dataset), by_scheme in reports.items()})
    if args.json:
        args.json.write_text(json.dumps({f"{model} {dataset}": {s: dataclasses.asdict(r) for s, r in by_scheme.items()}
                                         for (model, dataset), by_scheme in reports.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
