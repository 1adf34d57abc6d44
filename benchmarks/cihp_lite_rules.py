"""Measurements behind cihp-lite's fusion table (configs/fusion/cihp-lite.yaml).

Parses the CIHP and CCP photos through the real detect -> crop -> parse -> paste stage, but pastes, instead of CIHP
labels, the pair (BodyPix part group, segmenter material) of every pixel. Prints, per pair, its pixel count and
what the ground truth calls those pixels: CIHP classes, and CCP classes in the garments scheme. A rule of the table
should pick, per row, the class most of a cell's pixels have on both datasets.

Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/cihp_lite_rules.py --shared ../shared
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from vidparse.config import load_config
from vidparse.evaluation.datasets import find_samples, read_sample
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers.cihp_lite import MATERIALS
from vidparse.stages.types import LabelSet

GROUPS = ("no person", "face", "torso", "left arm", "right arm", "left leg", "right leg", "left foot", "right foot")


def part_groups() -> np.ndarray:
    """BodyPix part index -> index into GROUPS, in the fusion table's row order."""
    spec = yaml.safe_load((Path(__file__).parents[1] / "configs" / "fusion" / "cihp-lite.yaml").read_text())
    names = load_label_set("bodypix").names
    groups = np.zeros(len(names), np.uint8)
    for row, rule in enumerate(spec["rules"], start=1):
        groups[[names.index(part) for part in rule["parts"]]] = row
    return groups


def tally(shared: Path, truth_name: str, scheme: str | None) -> dict[tuple[int, int], Counter]:
    config = load_config(None, {"model": "cihp-lite"})
    parser = build_person_parser(config, ResolvedModels.for_config(config), 1)
    # Paste a code instead of a class: 1 + group * 5 + material (0: outside every crop).
    parser.parser.table = (1 + part_groups()[:, None] * len(MATERIALS) + np.arange(len(MATERIALS))).astype(np.uint8)
    codes = tuple(str(code) for code in range(1 + len(GROUPS) * len(MATERIALS)))
    parser.parser.label_set = LabelSet("codes", codes, np.zeros((len(codes), 3), np.uint8))
    truth = load_label_set(truth_name)
    names = [truth.groups[scheme][n] if scheme else n for n in truth.names]
    cells: dict[tuple[int, int], Counter] = {}
    parser.open()
    for sample in find_samples(shared / "data" / truth_name / "images", shared / "data" / truth_name / "labels"):
        image, labels = read_sample(sample, truth)
        codes = parser.process(image)[0]
        for code in np.unique(codes)[1:]:
            where = codes == code
            counts = np.bincount(labels[where], minlength=len(truth))
            cell = cells.setdefault(divmod(int(code) - 1, len(MATERIALS)), Counter())
            for index in np.nonzero(counts)[0]:
                cell[names[index]] += int(counts[index])
    parser.close()
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    args = parser.parse_args()
    tables = {"CIHP classes": tally(args.shared, "cihp", None), "CCP, garments": tally(args.shared, "ccp", "garments")}
    print("| BodyPix part | material | " + " | ".join(f"{name}: px, top classes" for name in tables) + " |")
    print("|---|---|" + "---|" * len(tables))
    for group in range(len(GROUPS)):
        for material in range(len(MATERIALS)):
            cols = []
            for cells in tables.values():
                cell = cells.get((group, material), Counter())
                total = sum(cell.values())
                top = ", ".join(f"{name} {100 * n / total:.0f}%" for name, n in cell.most_common(3)) if total else ""
                cols.append(f"{total:,}: {top}" if total else "0")
            print(f"| {GROUPS[group]} | {MATERIALS[material]} | " + " | ".join(cols) + " |")


if __name__ == "__main__":
    main()
