"""Training cihp-net: seeded, on CPU; k-fold scores on the training photos, then the final weights on all of them."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vidparse.errors import ConfigError
from vidparse.evaluation.datasets import Sample, read_sample
from vidparse.evaluation.runs import ImageReport, Tally, image_report
from vidparse.stages.labels import FINE_CLASSES, SCHEMES, load_label_set
from vidparse.stages.options import CihpNetOptions
from vidparse.stages.parsers import cihp_net
from vidparse.training.dataset import IGNORED, ROI_HEIGHT, ROI_MARGIN, ROI_UPSCALE, Example
from vidparse.training.network import GarmentUNet

log = logging.getLogger(__name__)


@dataclass
class TrainSettings:
    epochs: int = field(default=16, metadata={"range": (1, 1000)})
    batch_size: int = field(default=16, metadata={"range": (1, 1024)})
    learning_rate: float = field(default=3e-3, metadata={"range": (1e-6, 1.0)})
    weight_decay: float = field(default=1e-4, metadata={"range": (0.0, 1.0)})
    seed: int = 0
    # each class's loss weight is its pixel share to the power -class_weight_power: 0.5 the inverse square root,
    # 0 unweighted (docs/garments.md)
    class_weight_power: float = field(default=0.5, metadata={"range": (0.0, 1.0)})
    bfloat16: bool = True  # where the CPU computes it natively (bfloat16_native); float32 elsewhere


def bfloat16_native() -> bool:
    """Whether this CPU has bfloat16 instructions (AVX-512 BF16 or AMX). Without them autocast emulates bfloat16,
    slower than float32."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def uses_bfloat16(settings: TrainSettings) -> bool:
    return settings.bfloat16 and bfloat16_native()


def class_weights(examples: Sequence[Example], power: float) -> torch.Tensor:
    """Each class's pixel share to the power ``-power`` (rare garments count more), mean 1 over the classes seen."""
    counts = np.zeros(len(FINE_CLASSES))
    for example in examples:
        counts += np.bincount(example.labels.ravel(), minlength=256)[:len(FINE_CLASSES)]
    weights = np.where(counts > 0, (np.maximum(counts, 1) / counts.sum()) ** -power, 0.0)
    return torch.tensor(weights / weights[counts > 0].mean(), dtype=torch.float32)


def batch_tensors(examples: Sequence[Example], rng: np.random.Generator | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Examples padded to the widest; with ``rng``, mirrored at random and the pixels' brightness jittered."""
    width = max(e.features.shape[2] for e in examples)
    context = np.zeros((len(examples), cihp_net.FEATURES, cihp_net.NET_HEIGHT, width), np.float32)
    details = np.zeros((len(examples), cihp_net.DETAILS, cihp_net.DETAIL_HEIGHT, 2 * width), np.float32)
    coarse = np.zeros((len(examples), cihp_net.COARSE_CHANNELS, cihp_net.COARSE_HEIGHT, width // cihp_net.NET_MULTIPLE),
                      np.float32)
    targets = np.full((len(examples), cihp_net.DETAIL_HEIGHT, 2 * width), IGNORED, np.int64)
    for index, example in enumerate(examples):
        features, fine, cells = (example.features.astype(np.float32), example.details.astype(np.float32),
                                 example.coarse.astype(np.float32))
        labels, used = example.labels, example.width
        if rng is not None:
            if rng.random() < 0.5:
                features, fine, cells = cihp_net.mirrored(features, fine, cells, used)
                labels = cihp_net.reversed_columns(labels, 2 * used)
            gain, offset = rng.uniform(0.75, 1.25), rng.uniform(-0.1, 0.1)
            features[0:3, :, :used] = np.clip(features[0:3, :, :used] * gain + offset, 0, 1)
            fine[0:3, :, :2 * used] = np.clip(fine[0:3, :, :2 * used] * gain + offset, 0, 1)
        context[index, :, :, :features.shape[2]] = features
        details[index, :, :, :fine.shape[2]] = fine
        coarse[index, :, :, :cells.shape[2]] = cells
        targets[index, :, :labels.shape[1]] = labels
    return torch.from_numpy(context), torch.from_numpy(details), torch.from_numpy(coarse), torch.from_numpy(targets)


def width_batches(examples: Sequence[Example], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Example indices in batches of one input width each (no padding to a wider crop), shuffled within each width
    and then batch by batch."""
    widths = np.array([e.features.shape[2] for e in examples])
    batches: list[np.ndarray] = []
    for width in np.unique(widths):
        same = rng.permutation(np.nonzero(widths == width)[0])
        batches.extend(same[start:start + batch_size] for start in range(0, len(same), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def train(examples: Sequence[Example], settings: TrainSettings,
          on_epoch: Callable[[int, float], None] | None = None) -> GarmentUNet:
    """A network trained on ``examples``; the same seed and examples give the same weights."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    model = GarmentUNet()
    # channels-last: about 1.7x faster convolutions on CPU (the keyword is missing from torch's type stubs)
    model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    # the batch count does not depend on the shuffle: a generator of its own leaves the seeded one untouched
    steps = settings.epochs * len(width_batches(examples, settings.batch_size, np.random.default_rng()))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings.learning_rate, total_steps=steps, pct_start=0.15)
    weights = class_weights(examples, settings.class_weight_power)
    # bfloat16 convolutions: 1.4x faster steps on AVX-512 BF16 (the optimizer's weights and the loss stay float32)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=uses_bfloat16(settings))
    model.train()
    for epoch in range(settings.epochs):
        total = 0.0
        for batch in width_batches(examples, settings.batch_size, rng):
            *inputs, targets = batch_tensors([examples[i] for i in batch], rng)
            with autocast:
                logits = model(*(tensor.contiguous(memory_format=torch.channels_last) for tensor in inputs))
            loss = F.cross_entropy(logits.float(), targets, weight=weights, ignore_index=IGNORED)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(targets)
        if on_epoch:
            on_epoch(epoch, total / len(examples))
    model.to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    return model.eval()


@dataclass
class FrozenOutputs:
    """What the frozen models said about an example's crop, as `cihp_net.labels_at` takes it."""
    parts: np.ndarray  # BodyPix's part per pixel of the region
    person: np.ndarray  # BodyPix's person probability per pixel of the region
    segmenter: np.ndarray  # the multiclass segmenter's planes over the crop, at the details' size


def frozen_outputs(example: Example, region_hw: tuple[int, int]) -> FrozenOutputs:
    """The example's frozen-model outputs (padding cut off), parts and person resized to ``region_hw``."""
    size = region_hw[::-1]
    parts = example.features[cihp_net.PARTS, :, :example.width].astype(np.float32).argmax(axis=0).astype(np.uint8)
    person = example.details[cihp_net.DETAIL_PERSON, :, :2 * example.width].astype(np.float32)
    return FrozenOutputs(cv2.resize(parts, size, interpolation=cv2.INTER_NEAREST),
                         cv2.resize(person, size, interpolation=cv2.INTER_LINEAR),
                         example.details[cihp_net.DETAIL_MULTICLASS, :, :2 * example.width].astype(np.float32))


def crop_logits(model: GarmentUNet, example: Example) -> np.ndarray:
    """The network's logits over an example's crop (FINE_CLASSES x DETAIL_HEIGHT x width), padding cut off."""
    with torch.no_grad():
        logits = model(*(torch.from_numpy(a.astype(np.float32))[None]
                         for a in (example.features, example.details, example.coarse)))
    return logits[0, :, :, :2 * example.width].numpy()


def predict(model: GarmentUNet, example: Example, shape: tuple[int, int],
            min_pixel_person_probability: float = CihpNetOptions().min_pixel_person_probability,
            segmenter_materials: bool = CihpNetOptions().segmenter_materials) -> np.ndarray:
    """CIHP labels of an example's photo (``shape``): its crop's logits upsampled into its region, the body side,
    face, materials and pixels with no person (as the parser makes them) taken from the frozen models' outputs in
    the example. ``segmenter_materials`` applies to every example: the segmenter sees the photos' people (the views
    k-fold scores) at more rows than the parser's ``segmenter_materials_min_rows``. The parser's default class
    offsets apply with the materials, as in the parser."""
    x1, y1, x2, y2 = example.region
    frozen = frozen_outputs(example, (y2 - y1, x2 - x1))
    photo = np.zeros(shape, np.uint8)
    photo[y1:y2, x1:x2] = cihp_net.labels_at(crop_logits(model, example), frozen.parts,
                                             frozen.segmenter, frozen.person < min_pixel_person_probability,
                                             segmenter_materials,
                                             cihp_net.class_offsets(CihpNetOptions()) if segmenter_materials else None)
    return photo


def fold_of(name: str, folds: int) -> int:
    """Photos are dealt to folds by name, so both views of a photo stay together."""
    import zlib

    return zlib.crc32(name.encode()) % folds


def check_folds(names: Sequence[str], folds: int) -> None:
    """A ConfigError when the photos ``names`` all fall in one of ``folds`` folds (they are dealt by name: a few may),
    which leaves that fold's network nothing to train on."""
    if len(dealt := {fold_of(name, folds) for name in names}) == 1:
        raise ConfigError(f"fold {dealt.pop() + 1} of {folds} holds every labelled photo: too few photos for {folds} "
                          "folds", hint="add photos, or use --folds 0 (no scores)")


@dataclass
class FoldScores:
    reports: dict[str, ImageReport]  # scheme -> pooled report over every held-out photo
    seconds: float


def fold_models(examples: Sequence[Example], folds: int, settings: TrainSettings,
                on_epoch: Callable[[int, float], None] | None = None
                ) -> Iterator[tuple[int, GarmentUNet, list[Example]]]:
    """For each fold in turn: its index, the network trained on all the other folds, and its held-out photos'
    full-size views (the views k-fold scores)."""
    check_folds([e.name for e in examples], folds)
    for fold in range(folds):
        model = train([e for e in examples if fold_of(e.name, folds) != fold], settings, on_epoch)
        yield fold, model, [e for e in examples if not e.small and fold_of(e.name, folds) == fold]


def cross_validate(examples: Sequence[Example], samples: Sequence[Sample], label_set: str, folds: int,
                   settings: TrainSettings, on_epoch: Callable[[int, float], None] | None = None) -> FoldScores:
    """Train on all folds but one and score the held-out photos (their full-size views, pasted into the photo at
    full resolution), for each fold in turn; the confusion is pooled over all held-out photos."""
    start = time.perf_counter()
    truth_set, cihp = load_label_set(label_set), load_label_set("cihp")
    tallies = {scheme: Tally(truth_set, cihp, scheme) for scheme in SCHEMES}
    by_name = {sample.name: sample for sample in samples}
    for fold, model, held_out in fold_models(examples, folds, settings, on_epoch):
        for example in held_out:
            _, truth = read_sample(by_name[example.name], truth_set)
            predicted = predict(model, example, truth.shape)
            for tally in tallies.values():
                tally.add(truth, predicted)
        log.info("fold %d of %d scored", fold + 1, folds)
    settings_report = {"roi": {"mode": "roi", "margin": ROI_MARGIN, "person_height": ROI_HEIGHT,
                               "max_upscale": ROI_UPSCALE},
                       "detector": {"score_threshold": 0.3}, "folds": folds, "epochs": settings.epochs}
    reports = {scheme: image_report(truth_set, tally, "cihp-net", settings_report) for scheme, tally in tallies.items()}
    return FoldScores(reports, time.perf_counter() - start)
