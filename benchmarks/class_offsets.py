"""Class offsets for cihp-net (`parsers.cihp-net.class_offsets`) chosen on held-out photos: the training recipe's
k-fold networks (as `vidparse train --folds K` makes them), each photo's logits from the network that did not see
it, then offsets added to the logits by coordinate ascent on pooled garments mIoU (steps 1, 0.5, 0.25; the photos
scored at ``--scale`` of their size, the chosen offsets at full size). Prints the path and the config block.
Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/class_offsets.py ../shared/data/ccp-train/images \\
        ../shared/data/ccp-train/labels --folds 4 --seed 0 [--logits held-out.pkl] [--classes pants,dress,...] \\
        [--confusion]

``--logits`` keeps the held-out logits (made once: the k-fold training takes about 21 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import copy
import pickle
from pathlib import Path

import cv2
import numpy as np
import torch

from vidparse.evaluation.datasets import find_samples, read_sample
from vidparse.evaluation.runs import ImageReport, Tally, image_report
from vidparse.model_store import training_cache_dir
from vidparse.pipeline.cpus import usable_cpus
from vidparse.stages.labels import FINE_CLASSES, SCHEMES, load_label_set
from vidparse.stages.options import CihpNetOptions
from vidparse.stages.parsers import cihp_net
from vidparse.training import dataset, fit
from vidparse.training.dataset import Example

SEARCHED = ("pants", "dress", "upper", "coat", "shoes", "background", "skin", "hair")  # not skirt: docs/garments.md
SCORED = ("garments", "fine")  # the schemes searched on and printed


def held_out_logits(examples: list[Example], folds: int, seed: int) -> dict[str, np.ndarray]:
    """Each photo's full-size view's logits (padding cut off) from the fold network that did not learn from it."""
    logits = {}
    for fold, model, held_out in fit.fold_models(examples, folds, fit.TrainSettings(seed=seed)):
        for example in held_out:
            logits[example.name] = fit.crop_logits(model, example).astype(np.float16)
        print(f"fold {fold + 1} of {folds} done", flush=True)
    return logits


class HeldOut:
    """The held-out photos at ``scale`` of their size, ready to be labelled with any offsets by the parser's own
    `cihp_net.labels_at`: each photo's logits and the frozen models' outputs in its example, the truth over its
    person region, and the tallies of the pixels outside every region (labelled background whatever the offsets)."""

    def __init__(self, examples: list[Example], samples: dict, logits: dict[str, np.ndarray], label_set: str,
                 scale: float) -> None:
        self.truth_set, cihp = load_label_set(label_set), load_label_set("cihp")
        self.outside = {scheme: Tally(self.truth_set, cihp, scheme) for scheme in SCORED}
        self.photos = []
        for example in examples:
            if example.small or example.name not in logits:
                continue
            _, truth = read_sample(samples[example.name], self.truth_set)
            shape = (round(truth.shape[0] * scale), round(truth.shape[1] * scale))
            truth = cv2.resize(truth, shape[::-1], interpolation=cv2.INTER_NEAREST)
            x1, y1, x2, y2 = (round(v * scale) for v in example.region)
            x2, y2 = max(x2, x1 + 1), max(y2, y1 + 1)
            frozen = fit.frozen_outputs(example, (y2 - y1, x2 - x1))
            outside = np.ones(truth.shape, bool)
            outside[y1:y2, x1:x2] = False
            for tally in self.outside.values():
                tally.add(truth[outside], np.zeros(np.count_nonzero(outside), np.uint8))
            no_person = frozen.person < CihpNetOptions().min_pixel_person_probability
            network = logits[example.name].astype(np.float32)
            self.photos.append((np.ascontiguousarray(truth[y1:y2, x1:x2]), network, frozen.parts, frozen.segmenter,
                                no_person))

    def score(self, offsets: np.ndarray) -> dict[str, ImageReport]:
        """Pooled reports over every held-out photo labelled as `fit.predict` labels them, with ``offsets``."""
        return {scheme: image_report(self.truth_set, tally, "cihp-net", {})
                for scheme, tally in self.tallies(offsets).items()}

    def tallies(self, offsets: np.ndarray) -> dict[str, Tally]:
        tallies = copy.deepcopy(self.outside)
        shift = offsets.astype(np.float32)
        for truth, network, parts, planes, no_person in self.photos:
            labels = cihp_net.labels_at(network, parts, planes, no_person, True, shift)
            for tally in tallies.values():
                tally.add(truth, labels)
        return tallies


def summary(reports: dict[str, ImageReport]) -> str:
    garments, fine = reports["garments"], reports["fine"]
    classes = " ".join(f"{c.name} {100 * c.iou:.1f}" for c in garments.classes if c.iou is not None)
    types = " ".join(f"{c.name} {100 * c.iou:.1f}" for c in fine.classes
                     if c.iou is not None and c.name in ("coat", "dress", "skirt", "pants"))
    return f"garments {100 * (garments.miou or 0):.2f} ({classes}); fine {100 * (fine.miou or 0):.2f} ({types})"


def confusion_table(held_out: HeldOut, offsets: np.ndarray) -> str:
    """Where each garment type's truth pixels go (% of the row), the fine scheme's classes in the truth."""
    matrix = held_out.tallies(offsets)["fine"].matrix
    names = SCHEMES["fine"]
    lines = ["| truth \\ labelled | " + " | ".join(names) + " | pixels |", "|---" * (len(names) + 2) + "|"]
    for index, name in enumerate(names):
        row = matrix[index, :len(names)]
        if row.sum():
            lines.append(f"| {name} | " + " | ".join(f"{100 * v / row.sum():.1f}" for v in row) + f" | {row.sum()} |")
    return "\n".join(lines)


def search(held_out: HeldOut, classes: list[str]) -> np.ndarray:
    offsets = np.zeros(len(FINE_CLASSES))
    best = held_out.score(offsets)["garments"].miou or 0.0
    for step in (1.0, 0.5, 0.25):
        for name in classes:
            for delta in (step, -step):
                trial = offsets.copy()
                trial[FINE_CLASSES.index(name)] += delta
                reports = held_out.score(trial)
                if (reports["garments"].miou or 0.0) > best + 1e-4:
                    offsets, best = trial, reports["garments"].miou or 0.0
                    print(f"| {name} {delta:+.2f} | {summary(reports)} |", flush=True)
                    break
    return offsets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--label-set", default="ccp")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="the frozen models' outputs (as `vidparse train --cache`)")
    parser.add_argument("--logits", type=Path, help="keep the held-out logits here (read them if it exists)")
    parser.add_argument("--classes", default=",".join(SEARCHED), help="the garment types whose offsets are searched")
    parser.add_argument("--scale", type=float, default=0.5, help="the photos' size while searching")
    parser.add_argument("--confusion", action="store_true",
                        help="print where each garment type's pixels go with the shipped offsets, and stop")
    args = parser.parse_args()
    torch.set_num_threads(usable_cpus())
    samples = {s.name: s for s in find_samples(args.images, args.labels)}
    examples = dataset.extract(list(samples.values()), args.label_set, args.seed, usable_cpus(),
                               args.cache or training_cache_dir())
    if args.logits and args.logits.exists():
        logits = pickle.loads(args.logits.read_bytes())
    else:
        logits = held_out_logits(examples, args.folds, args.seed)
        if args.logits:
            args.logits.write_bytes(pickle.dumps(logits))
    print(f"\n{len(logits)} held-out photos, offsets searched at {args.scale:g} of their size\n")
    held_out = HeldOut(examples, samples, logits, args.label_set, args.scale)
    if args.confusion:
        print(confusion_table(held_out, cihp_net.class_offsets(CihpNetOptions())))
        return
    print(f"| step | held-out scores |\n|---|---|\n| none | {summary(held_out.score(np.zeros(len(FINE_CLASSES))))} |")
    offsets = search(held_out, args.classes.split(","))
    full = HeldOut(examples, samples, logits, args.label_set, 1.0)
    print(f"\nat full size: none {summary(full.score(np.zeros(len(FINE_CLASSES))))}")
    print(f"at full size: chosen {summary(full.score(offsets))}\n")
    print("    class_offsets:\n" + "\n".join(f"      {name}: {value:g}" for name, value in zip(FINE_CLASSES, offsets)))


if __name__ == "__main__":
    main()
