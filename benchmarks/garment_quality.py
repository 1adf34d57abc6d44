"""Parsers against labelled photos in every scoring scheme (coarse, garments, fine) from one parse per photo: the
same stage and scores as `vidparse eval`, one Markdown table per scheme. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/garment_quality.py --shared ../shared \\
        --models cihp-lite,cihp-net [--json docs/garment_quality.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from vidparse.config import load_config
from vidparse.evaluation.datasets import find_samples, read_sample
from vidparse.evaluation.runs import ImageReport, Tally, image_report, quality_settings
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import SCHEMES, load_label_set
from vidparse.stages.parsers import LABEL_SETS

DATASETS = {"ccp": "ccp", "cihp": "cihp"}  # folder under data/ -> its label set


def score(model: str, shared: Path, dataset: str) -> dict[str, ImageReport]:
    config = load_config(overrides={"model": model})
    truth = load_label_set(DATASETS[dataset])
    tallies = {scheme: Tally(truth, load_label_set(LABEL_SETS[model]), scheme) for scheme in SCHEMES}
    parser = build_person_parser(config, ResolvedModels.for_config(config), threads=None)
    parser.open()
    try:
        for sample in find_samples(shared / "data" / dataset / "images", shared / "data" / dataset / "labels"):
            image, labels = read_sample(sample, truth)
            predicted = parser.process(image)[0]
            for tally in tallies.values():
                tally.add(labels, predicted)
    finally:
        parser.close()
    return {scheme: image_report(truth, tally, model, quality_settings(config)) for scheme, tally in tallies.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--models", default="cihp-lite,cihp-net")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    reports = {(model, dataset): score(model, args.shared, dataset)
               for model in args.models.split(",") for dataset in DATASETS}
    for scheme, classes in SCHEMES.items():
        print(f"\n{scheme} scheme, IoU %\n")
        print("| photos, model | " + " | ".join(classes) + " | mIoU |")
        print("|---|" + "---:|" * (len(classes) + 1))
        for (model, dataset), by_scheme in reports.items():
            report = by_scheme[scheme]
            cells = ["n/a" if c.iou is None else f"{100 * c.iou:.1f}" for c in report.classes]
            miou = "n/a" if report.miou is None else f"**{100 * report.miou:.1f}**"
            print(f"| {dataset.upper()} ({report.images}), {model} | " + " | ".join(cells) + f" | {miou} |")
    if args.json:
        args.json.write_text(json.dumps({f"{model} {dataset}": {s: dataclasses.asdict(r) for s, r in by_scheme.items()}
                                         for (model, dataset), by_scheme in reports.items()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
