"""cihp-net's k-fold networks through the real path: each training photo parsed as `vidparse run` parses a frame
(FastestDet, every person it finds, the crops pasted back) by the fold network that did not learn from it, scored in
every scheme, the confusions pooled over all held-out photos. The yardstick for changes outside the network
(detection, crops, pasting, settings) on the 673 ccp-train photos no fold network saw, where data/ccp has 30.
Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/held_out_real_path.py ../shared/data/ccp-train/images \\
        ../shared/data/ccp-train/labels --networks /tmp/folds [--folds 4 --seed 0 --cache C] \\
        [--setting default --setting roi.margin=0.2]

The fold networks (`vidparse train`'s recipe; about 21 minutes for four on 2 CPUs) are trained once into
``--networks`` (FOLD/cihp-net.onnx) and reused by later runs; scoring takes about 4 minutes a setting.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from adaptive_scale import setting
from garment_quality import print_tables, scheme_tallies, tally_photos
from vidparse.config import load_config
from vidparse.evaluation.datasets import find_samples
from vidparse.evaluation.runs import ImageReport, image_report, quality_settings
from vidparse.model_store import training_cache_dir
from vidparse.pipeline.cpus import usable_cpus
from vidparse.stages.labels import load_label_set
from vidparse.training import dataset, fit
from vidparse.training.network import export_onnx

MODEL = "cihp-net"


def fold_networks(images: Path, labels: Path, label_set: str, folds: int, seed: int, cache: Path,
                  networks: Path) -> list[Path]:
    """Each fold's network (trained on the other folds' photos), trained now unless ``networks`` has them."""
    paths = [networks / f"fold{fold}" / "cihp-net.onnx" for fold in range(folds)]
    if not all(path.is_file() for path in paths):
        torch.set_num_threads(usable_cpus())
        examples = dataset.extract(find_samples(images, labels), label_set, seed, usable_cpus(), cache)
        for fold, model, _ in fit.fold_models(examples, folds, fit.TrainSettings(seed=seed)):
            export_onnx(model, paths[fold])
            print(f"fold {fold + 1} of {folds} trained", flush=True)
    return paths


def score(images: Path, labels: Path, label_set: str, networks: list[Path], overrides: dict) -> dict[str, ImageReport]:
    """Every photo parsed with ``overrides`` by its fold's network, one tally per scheme over all of them."""
    truth = load_label_set(label_set)
    tallies = scheme_tallies(truth, MODEL)
    samples = find_samples(images, labels)
    for fold, network in enumerate(networks):
        config = load_config(overrides={**overrides, "model": MODEL, "model_path": str(network)})
        held_out = [sample for sample in samples if fit.fold_of(sample.name, len(networks)) == fold]
        tally_photos(config, held_out, truth, tallies)
    return {scheme: image_report(truth, tally, MODEL, quality_settings(config)) for scheme, tally in tallies.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("labels", type=Path)
    parser.add_argument("--networks", type=Path, required=True, help="the fold networks: kept here, reused")
    parser.add_argument("--label-set", default="ccp")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="the frozen models' outputs (as `vidparse train --cache`)")
    parser.add_argument("--setting", action="append", default=[],
                        help="config overrides, key=value[,key=value]; 'default' for none (repeat for rows)")
    args = parser.parse_args()
    networks = fold_networks(args.images, args.labels, args.label_set, args.folds, args.seed,
                             args.cache or training_cache_dir(), args.networks)
    reports = {}
    for text in args.setting or ["default"]:
        by_scheme = score(args.images, args.labels, args.label_set, networks, {} if text == "default" else setting(text))
        reports[f"held out ({by_scheme['garments'].images}), {text}"] = by_scheme
    print_tables(reports)


if __name__ == "__main__":
    main()
