"""`vidparse train`: frozen models' outputs for every photo, k-fold scores, final weights and their model card."""

from __future__ import annotations

import logging
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from rich.progress import Progress, TaskID

from vidparse.errors import BadOutputError, ConfigError, not_writable
from vidparse.evaluation.datasets import Sample, check_labels, find_samples
from vidparse.evaluation.runs import ImageReport
from vidparse.model_store import training_cache_dir
from vidparse.pipeline.cpus import usable_cpus
from vidparse.errors import check_not_overwriting
from vidparse.stages.labels import load_label_set
from vidparse.training import dataset, fit
from vidparse.training.card import TrainingRecord, card_path, write_card
from vidparse.training.network import export_onnx

log = logging.getLogger(__name__)

TRAINABLE_LABEL_SETS = ("ccp", "cihp")


@dataclass
class TrainingJob:
    images: Path
    labels: Path
    label_set: str
    output: Path
    folds: int
    epochs: int
    seed: int = 0
    processes: int = 0
    cache: Path | None = None
    bfloat16: bool = True
    class_weight_power: float = fit.TrainSettings.class_weight_power
    scores: dict[str, ImageReport] = field(default_factory=dict)

    def check(self) -> list[Sample]:
        """The labelled photos to train from, or the user's mistake as an error (before any work starts)."""
        if self.label_set not in TRAINABLE_LABEL_SETS:
            raise ConfigError(f"cannot train from label set '{self.label_set}'",
                              hint=f"choose one of: {', '.join(TRAINABLE_LABEL_SETS)}")
        label_set = load_label_set(self.label_set)
        if self.folds == 1:
            raise ConfigError("--folds 1 leaves nothing to train on", hint="use --folds 0 (no scores) or 2 and more")
        samples = find_samples(self.images, self.labels)
        if len(samples) < self.folds:
            raise ConfigError(f"--folds {self.folds} needs {self.folds} photos or more, {self.images} holds "
                              f"{len(samples)}", hint="use --folds 0 (no scores) or fewer folds")
        if self.folds:
            fit.check_folds([sample.name for sample in samples], self.folds)
        if self.output.suffix.lower() != ".onnx":  # also never a photo, a label map or the model card
            raise BadOutputError(f"--output {self.output}: the weights are an ONNX file",
                                 hint="give a file name ending in .onnx (MODEL_CARD.md is written beside it)")
        check_not_overwriting([s.image_path for s in samples] + [s.label_path for s in samples],
                              [self.output, card_path(self.output)])
        if card_path(self.output).exists() and not card_path(self.output).is_file():
            raise BadOutputError(f"{card_path(self.output)} is not a file: the model card cannot be written there",
                                 hint="write the weights into another folder")
        cache = self.cache or training_cache_dir()
        if cache.exists() and not cache.is_dir():
            raise ConfigError(f"--cache {cache} is a file", hint="give a folder for the frozen models' outputs")
        dataset.check_frozen_models()
        check_labels(samples, label_set)
        self._check_cache(cache)
        return samples

    @staticmethod
    def _check_cache(cache: Path) -> None:
        """The cache can be written (found now, not after every photo went through the frozen models)."""
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadOutputError(f"cannot make the cache folder {cache}: {exc.strerror or exc}",
                                 hint="give --cache a writable folder (or set VIDPARSE_CACHE)") from exc
        if (refused := not_writable(cache / ".vidparse-probe")) is not None:
            raise BadOutputError(f"the cache folder {cache} is not writable: {refused.strerror or refused}",
                                 hint="give --cache a writable folder (or set VIDPARSE_CACHE)")

    def run(self, progress: Progress, samples: list[Sample]) -> Path:
        """Train on ``samples`` (from `check`) and write the weights and their model card; returns the card's
        path."""
        start = time.perf_counter()
        torch.set_num_threads(usable_cpus())
        settings = fit.TrainSettings(epochs=self.epochs, seed=self.seed, bfloat16=self.bfloat16,
                                     class_weight_power=self.class_weight_power)

        task = progress.add_task("frozen models", total=len(samples))
        examples = dataset.extract(samples, self.label_set, self.seed, self.processes or usable_cpus(),
                                   self.cache or training_cache_dir(), lambda: progress.advance(task))
        progress.update(task, completed=len(samples))  # read from the cache: nothing advanced it
        if not examples:
            raise ConfigError(f"no labelled person in {self.labels}", hint="check --label-set")
        if self.folds:
            task = progress.add_task(f"{self.folds}-fold, epochs", total=self.folds * self.epochs)
            self.scores = fit.cross_validate(examples, samples, self.label_set, self.folds, settings,
                                             on_epoch=self._epoch_logger(progress, task)).reports
        task = progress.add_task("final weights, epochs", total=self.epochs)
        model = fit.train(examples, settings, on_epoch=self._epoch_logger(progress, task))
        try:
            export_onnx(model, self.output)
        except OSError as exc:
            raise BadOutputError(f"cannot write {self.output}: {exc.strerror or exc}", hint="check the folder is writable") from exc
        record = TrainingRecord(command=shlex.join(["vidparse", *sys.argv[1:]]), images=self.images,
                                label_set=self.label_set, photos=len({e.name for e in examples}),
                                examples=len(examples), settings=settings,
                                seconds=time.perf_counter() - start, folds=self.folds, scores=self.scores)
        return write_card(self.output, record)

    @staticmethod
    def _epoch_logger(progress: Progress, task: TaskID) -> Callable[[int, float], None]:
        def on_epoch(epoch: int, loss: float) -> None:
            progress.advance(task)
            log.info("epoch %d: loss %.4f", epoch + 1, loss)

        return on_epoch
