"""Training examples for cihp-net: each labelled photo's person, cropped as `vidparse run` crops it, run through the
frozen models (stages/parsers/cihp_net.py) and stored as network inputs with the garment-type labels under them.

Each photo gives two views: the photo as it is, and the same photo scaled down so its person is 48 to 160 pixels
tall (as in video), so the network also learns from blurred crops and coarser segmenter cells.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from vidparse.errors import VidparseError
from vidparse.evaluation.datasets import Sample, read_sample
from vidparse.evaluation.metrics import coarse_lut
from vidparse.model_check import check_loadable
from vidparse.model_store import resolve_model, sha256_of
from vidparse.pipeline.spawning import STOP_SIGNALS, stop_signals_held
from vidparse.stages.detect import DetectorOptions, PersonDetector
from vidparse.stages.labels import FINE_CLASSES, load_label_set
from vidparse.stages.parsers import cihp_net, multiclass
from vidparse.stages.roi import crop_person
from vidparse.stages.tracker import iou_matrix
from vidparse.stages.types import LabelSet

log = logging.getLogger(__name__)

IGNORED = 255  # label of pixels left out of the loss (accessories, padding)
SMALL_PERSON = (48, 160)  # person heights (pixels) of the scaled-down view
CACHED_EXAMPLE_SETS = 3  # example sets kept in the cache (one per photo folder, seed and version of the features)
ROI_MARGIN, ROI_HEIGHT, ROI_UPSCALE = 0.15, 512, 2.0  # configs/default.yaml's roi section
FROZEN_MODELS = ("fastestdet", "bodypix", "multiclass")  # the detector and the models whose outputs are the input


@dataclass
class Example:
    """One view of one photo: the network input, the fine labels under it, and where it came from."""

    name: str
    small: bool  # the scaled-down view
    features: np.ndarray  # FEATURES x NET_HEIGHT x padded width, float16
    details: np.ndarray  # DETAILS x DETAIL_HEIGHT x twice that, float16
    coarse: np.ndarray  # COARSE_CHANNELS x COARSE_HEIGHT x a sixteenth of the context's width, float16
    labels: np.ndarray  # DETAIL_HEIGHT x the details' width, FINE_CLASSES indices or IGNORED
    region: tuple[int, int, int, int]  # the crop in the photo's pixels (x1, y1, x2, y2)
    width: int  # columns of the context input that hold the crop (the rest is padding; twice as many in details)


def fine_lut(label_set: LabelSet) -> np.ndarray:
    """Class index of ``label_set`` -> index in FINE_CLASSES (IGNORED for classes the fine scheme leaves out)."""
    return coarse_lut(label_set, set(FINE_CLASSES), rest=IGNORED, scheme="fine")


def labelled_person(fine: np.ndarray) -> np.ndarray:
    """The labelled person's pixels in a fine label map: every class but background and the ones left out."""
    return (fine != 0) & (fine != IGNORED)


def person_box(detector: PersonDetector, image: np.ndarray, person: np.ndarray) -> np.ndarray:
    """The detected box that best covers the labelled person, or the person's own bounds if none does."""
    ys, xs = np.nonzero(person)
    truth = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)
    detections = detector.process(image)
    overlaps = iou_matrix(detections.boxes, truth[None])[:, 0]
    if len(overlaps) and overlaps.max() >= 0.5:
        return detections.boxes[int(np.argmax(overlaps))]
    return truth


class Extractor:
    """Detector and frozen models of one process, turning samples into examples."""

    def __init__(self, label_set: str, threads: int) -> None:
        self.label_set = load_label_set(label_set)
        self.lut = fine_lut(self.label_set)
        self.detector = PersonDetector(resolve_model("fastestdet"), DetectorOptions(score_threshold=0.3), threads)
        self.frozen = cihp_net.FrozenModels(cihp_net.Options(), threads)
        self.detector.open()
        self.frozen.open()

    def examples(self, sample: Sample, seed: int) -> list[Example]:
        image, labels = read_sample(sample, self.label_set)
        fine = self.lut[labels]
        person = labelled_person(fine)
        if not person.any():
            log.warning("%s: no person in its labels, skipped", sample.name)
            return []
        rng = np.random.default_rng([seed, int(hashlib.sha256(sample.name.encode()).hexdigest()[:8], 16)])
        ys = np.nonzero(person.any(axis=1))[0]
        small_scale = rng.uniform(*SMALL_PERSON) / (ys[-1] + 1 - ys[0])
        scales = [1.0, small_scale] if small_scale < 1 else [1.0]
        views = [self._view(sample.name, image, fine, person, scale) for scale in scales]
        return [view for view in views if view is not None]

    def _view(self, name: str, image: np.ndarray, fine: np.ndarray, person: np.ndarray,
              scale: float) -> Example | None:
        """The example of the photo scaled by ``scale``; None for a scaled-down view in which nothing of the person
        is left (a person already small has the full-size view only: each photo is scored once)."""
        seen, seen_person = image, person
        if scale < 1:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            seen = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            seen_person = cv2.resize(person.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
            if not seen_person.any():
                return None
        box = person_box(self.detector, seen, seen_person)
        crop = crop_person(seen, box.tolist(), ROI_MARGIN, ROI_HEIGHT, ROI_UPSCALE)
        (outputs,) = self.frozen.analyze([crop])  # no person check: every crop's outputs
        assert outputs is not None
        context, details, coarse = cihp_net.features(outputs)
        width = cihp_net.net_width(*outputs.size)
        x1, y1, x2, y2 = (round(v / scale) for v in crop.region)
        x2, y2 = min(max(x2, x1 + 1), fine.shape[1]), min(max(y2, y1 + 1), fine.shape[0])
        target = np.full(details.shape[1:], IGNORED, np.uint8)
        target[:, :2 * width] = cv2.resize(fine[y1:y2, x1:x2], (2 * width, cihp_net.DETAIL_HEIGHT),
                                           interpolation=cv2.INTER_NEAREST)
        return Example(name, scale < 1, context.astype(np.float16), details.astype(np.float16),
                       coarse.astype(np.float16), target, (x1, y1, x2, y2), width)


_extractor: Extractor | None = None
_extractor_failure: VidparseError | None = None  # why this pool process could not load the frozen models


def _start_worker(label_set: str) -> None:
    # Ctrl-C reaches the whole process group: the training stops its pool itself. SIGTERM and SIGHUP keep their
    # default, which ends a worker quietly (the pool ends a broken pool's workers with SIGTERM).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # held while it started (`stop_signals_held`)
    open_extractor(label_set)


def open_extractor(label_set: str) -> None:
    """This pool process's extractor. A model it cannot load is kept and raised by `examples_of`, so the training
    ends with that error (an initializer that raises breaks the pool: 'BrokenProcessPool')."""
    global _extractor, _extractor_failure
    try:
        _extractor = Extractor(label_set, threads=1)
    except VidparseError as exc:
        _extractor_failure = exc


def examples_of(sample: Sample, seed: int) -> list[Example]:
    if _extractor_failure is not None:
        raise _extractor_failure
    assert _extractor is not None
    return _extractor.examples(sample, seed)


def check_frozen_models() -> None:
    """The frozen models are found and whole (`check_loadable`), before any photo is read: a damaged one would
    fail in every pool process."""
    for model in FROZEN_MODELS:
        check_loadable(model, resolve_model(model))


def cache_key(samples: Sequence[Sample], label_set: str, seed: int) -> str:
    """Changes with the photos, their labels, the frozen models and the feature layout (not with the parser's
    settings that only turn the network's output into labels)."""
    digest = hashlib.sha256(repr((label_set, seed, cihp_net.FEATURE_GROUPS, cihp_net.DETAIL_GROUPS, cihp_net.NET_HEIGHT,
                                  multiclass.COARSE_TENSOR, SMALL_PERSON, cihp_net.Options().segmenter_detail,
                                  multiclass.ASPECT)).encode())
    for sample in samples:
        for path in (sample.image_path, sample.label_path):
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    for model in FROZEN_MODELS:
        digest.update(sha256_of(resolve_model(model)).encode())
    return digest.hexdigest()[:16]


def extract(samples: Sequence[Sample], label_set: str, seed: int, processes: int, cache: Path | None = None,
            on_sample: Callable[[], None] | None = None) -> list[Example]:
    """Examples of every sample (two views each), computed in ``processes`` processes or read from ``cache``."""
    cached = cache / f"examples-{cache_key(samples, label_set, seed)}.npz" if cache else None
    if cached and cached.is_file():
        log.info("examples from %s", cached)
        try:
            loaded = load_examples(cached)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # cut short, damaged
            log.warning("the cached examples %s are damaged (%s): computing them again", cached, exc)
        else:
            cached.touch()  # recently used: kept by prune_cache
            return loaded
    examples: list[Example] = []
    with ProcessPoolExecutor(processes, mp_context=get_context("spawn"), initializer=_start_worker,
                             initargs=(label_set,)) as pool:
        try:
            with stop_signals_held():  # the pool starts its processes as the work is submitted
                results = pool.map(examples_of, samples, [seed] * len(samples))
            for found in results:
                examples.extend(found)
                if on_sample:
                    on_sample()
        except BaseException:  # Ctrl-C, SIGTERM: the photos not started are not extracted on the way out
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    if cached:
        save_examples(examples, cached)
        prune_cache(cached.parent)
    return examples


def prune_cache(cache: Path, keep: int = CACHED_EXAMPLE_SETS) -> None:
    """Delete all but the ``keep`` most recently used example sets in ``cache`` (each 1.5-2 GB for ccp-train)."""
    sets = sorted((path for path in cache.glob("examples-*.npz") if not path.name.endswith(".partial.npz")),
                  key=lambda path: path.stat().st_mtime, reverse=True)
    for stale in sets[keep:]:
        log.info("deleting %s, the least recently used cached examples", stale)
        stale.unlink(missing_ok=True)


def save_examples(examples: Sequence[Example], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {
        "names": np.array([e.name for e in examples]),
        "small": np.array([e.small for e in examples]),
        "regions": np.array([e.region for e in examples], np.int64).reshape(-1, 4),
        "widths": np.array([e.width for e in examples], np.int64),
    }
    for index, example in enumerate(examples):
        arrays[f"features_{index}"], arrays[f"details_{index}"] = example.features, example.details
        arrays[f"coarse_{index}"] = example.coarse
        arrays[f"labels_{index}"] = example.labels
    tmp = path.with_suffix(f".{os.getpid()}.partial.npz")  # two trainings on one cache write files of their own
    try:
        np.savez(tmp, **arrays)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def load_examples(path: Path) -> list[Example]:
    with np.load(path) as data:
        return [Example(str(name), bool(small), data[f"features_{i}"], data[f"details_{i}"], data[f"coarse_{i}"],
                        data[f"labels_{i}"], tuple(int(v) for v in region), int(width))  # type: ignore[arg-type]
                for i, (name, small, region, width) in enumerate(zip(data["names"], data["small"], data["regions"],
                                                                     data["widths"]))]
