"""The ``Parser`` adapter: person crops in, CIHP label maps out (packed canvas or batched fixed-size crops)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import fields
from pathlib import Path

import cv2
import numpy as np
import torch

from vidparse.errors import ConfigError, ModelError
from vidparse.model_store import cache_dir
from vidparse.stages.labels import load_label_set
from vidparse.stages.parsers.base import Parser
from vidparse.stages.parsers.m2fp import NAMES, Options
from vidparse.stages.parsers.m2fp.checkpoint import load_model
from vidparse.stages.parsers.m2fp.model import SIZE_DIVISIBILITY, M2FPNet
from vidparse.stages.parsers.m2fp.onnx_backend import OnnxRunner, cached_onnx
from vidparse.stages.parsers.m2fp.postprocess import class_probabilities, upsample_masks
from vidparse.stages.roi import pack, unpack

log = logging.getLogger(__name__)

Runner = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
SINGLE_PAD_VALUE = 128  # ModelScope pads single-human inputs with grey


def quantize_linear(model: M2FPNet) -> torch.nn.Module:
    """Dynamic INT8 quantization of every ``nn.Linear`` (weights INT8, activations quantized per batch)."""
    from torch.ao.quantization import quantize_dynamic

    return quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


class EagerRunner:
    def __init__(self, model: M2FPNet, device: str, channels_last: bool, int8: bool, precision: str = "fp32") -> None:
        model.fuse_batchnorm()
        runnable: torch.nn.Module = model
        if int8:
            if device != "cpu":
                raise ConfigError("int8 runs on the CPU only", hint="set parsers.m2fp.int8 false for this device")
            if precision != "fp32":
                raise ConfigError("int8 and bf16 do not combine", hint="set parsers.m2fp.precision to fp32 for int8")
            runnable = quantize_linear(model)
        self.device = torch.device(device)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        # torch's stub of Module.to lacks its memory_format keyword
        self.model = runnable.to(self.device, memory_format=self.memory_format).eval()  # type: ignore[call-overload]
        self.autocast = precision == "bf16"

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16, enabled=self.autocast):
            images = images.to(self.device).contiguous(memory_format=self.memory_format)
            class_logits, mask_logits = self.model(images)
        return class_logits, mask_logits


def pad_to_multiple(image: np.ndarray, multiple: int = SIZE_DIVISIBILITY, value: int = 0) -> np.ndarray:
    height, width = image.shape[:2]
    bottom, right = -height % multiple, -width % multiple
    if not bottom and not right:
        return image
    return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_CONSTANT, value=(value, value, value))


def to_tensor(images_bgr: Sequence[np.ndarray]) -> torch.Tensor:
    """BGR uint8 H x W x 3 images of one size -> RGB float (B, 3, H, W), 0..255."""
    batch = np.stack([im[:, :, ::-1] for im in images_bgr]).astype(np.float32)
    return torch.from_numpy(batch).permute(0, 3, 1, 2)


def resize_labels(labels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    if labels.shape[:2] == size_hw:
        return labels
    return cv2.resize(labels, (size_hw[1], size_hw[0]), interpolation=cv2.INTER_NEAREST)


class M2FPParser(Parser):
    def __init__(self, name: str, options: Options, model_path: Path, device: str = "cpu",
                 threads: int | None = None) -> None:
        if name not in NAMES:
            raise ModelError(f"unknown M2FP variant '{name}'", hint=f"choose one of: {', '.join(NAMES)}")
        for option in fields(options):
            choices, value = option.metadata.get("choices"), getattr(options, option.name)
            if choices and value not in choices:
                raise ConfigError(f"parsers.{name}.{option.name} must be one of {', '.join(choices)}, not '{value}'")
        options.check_device(device)
        if options.backend == "onnx" and options.precision != "fp32":
            raise ConfigError("the onnx backend runs in fp32", hint="use backend: eager for bf16")
        self.name, self.options, self.model_path, self.device = name, options, model_path, device
        self.threads = threads
        self.label_set = load_label_set("cihp")
        self.runner: Runner | None = None

    def open(self) -> None:
        model = load_model(self.model_path)
        config = self.config = model.config
        if (self.name == "m2fp-single") != config.single_human:
            kind = "single-human" if config.single_human else "multi-human"
            raise ModelError(f"{self.model_path} holds a {kind} M2FP model, which does not fit '{self.name}'",
                             hint="use --model m2fp for multi-human checkpoints, m2fp-single for single-human ones")
        if config.num_parsing != len(self.label_set):
            raise ModelError(f"M2FP checkpoint parses {config.num_parsing} classes, CIHP has {len(self.label_set)}",
                             hint="use an M2FP model trained on CIHP (`vidparse models pull m2fp`)")
        mode = self.options.postprocess
        self.parsing = config.parsing_on if mode == "auto" else mode == "parsing"
        self.score_threshold = self.options.score_threshold or config.parsing_ins_score_thr
        if self.options.backend == "onnx":
            cache = Path(self.options.onnx_cache) if self.options.onnx_cache else cache_dir() / "m2fp-onnx"
            path = cached_onnx(model, self.model_path, cache, self.options.int8)
            self.runner = OnnxRunner(path, self.threads or torch.get_num_threads(), self.device)
        else:
            self.runner = EagerRunner(model, self.device, self.options.channels_last, self.options.int8,
                                      self.options.precision)
        log.info("M2FP %s ready (%s%s, %s post-processing)", self.name, self.options.backend,
                 " int8" if self.options.int8 else "", "parsing" if self.parsing else "semantic")

    def close(self) -> None:
        self.runner = None

    def parse(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        if self.runner is None:
            raise RuntimeError("M2FPParser.parse called before open()")
        if not images:
            return []
        if self.name == "m2fp-single":
            return [label for start in range(0, len(images), self.options.batch_size)
                    for label in self._parse_single(images[start : start + self.options.batch_size])]
        return self._parse_packed(images)

    def _labels(self, batch: torch.Tensor, regions: Sequence[tuple[int, int, int, int]]) -> list[np.ndarray]:
        """Run the network on ``batch`` and return the label map of one region (x1, y1, x2, y2) per image.

        By default the class scores are computed at the masks' resolution (1/4) and then resized, which costs
        a fifth of resizing every query's mask first; ``exact_postprocess`` does the latter, as ModelScope does.
        """
        assert self.runner is not None
        class_logits, mask_logits = self.runner(batch)
        class_logits, mask_logits = class_logits.float(), mask_logits.float()
        size = (batch.shape[-2], batch.shape[-1])
        if self.options.exact_postprocess:
            mask_logits = upsample_masks(mask_logits, size)
        labels = []
        for logits, masks, (x1, y1, x2, y2) in zip(class_logits, mask_logits, regions):
            probs = class_probabilities(logits, masks, self.config.num_parsing, self.parsing, self.score_threshold)
            if not self.options.exact_postprocess:
                probs = upsample_masks(probs[None], size)[0]
            labels.append(probs[:, y1:y2, x1:x2].argmax(0).to(torch.uint8).cpu().numpy())
        return labels

    def _parse_packed(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Multi-human: crops scaled to the person height, packed on one canvas, one forward pass."""
        opts = self.options
        if opts.person_height:
            scaled = [cv2.resize(im, (max(1, round(im.shape[1] * opts.person_height / im.shape[0])),
                                      opts.person_height), interpolation=cv2.INTER_LINEAR) for im in images]
        else:
            scaled = list(images)
        canvas, placements = pack(scaled, align=1)
        content_hw = canvas.shape[:2]
        scale = self._canvas_scale(content_hw)
        if scale != 1.0:
            size = (max(1, round(content_hw[1] * scale)), max(1, round(content_hw[0] * scale)))
            canvas = cv2.resize(canvas, size, interpolation=cv2.INTER_LINEAR)
        height, width = canvas.shape[:2]
        labels = self._labels(to_tensor([pad_to_multiple(canvas)]), [(0, 0, width, height)])[0]
        labels = resize_labels(labels, content_hw)
        return [resize_labels(crop, im.shape[:2]) for crop, im in zip(unpack(labels, placements), images)]

    def _canvas_scale(self, content_hw: tuple[int, int]) -> float:
        """ModelScope's test-time resize: short side to ``input_short_side``, long side at most ``max_size``."""
        short_side, max_size = self.options.input_short_side, self.options.max_size
        if short_side <= 0:
            return 1.0
        scale = short_side / min(content_hw)
        return min(scale, max_size / max(content_hw))

    def _parse_single(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Single-human: each crop letterboxed (centred, grey padding) to the checkpoint's input size."""
        target_w, target_h = self.config.single_human_size
        boards, regions = [], []
        for im in images:
            scale = min(target_w / im.shape[1], target_h / im.shape[0])
            w, h = max(1, min(target_w, round(im.shape[1] * scale))), max(1, min(target_h, round(im.shape[0] * scale)))
            x0, y0 = (target_w - w) // 2, (target_h - h) // 2
            board = np.full((target_h, target_w, 3), SINGLE_PAD_VALUE, np.uint8)
            board[y0 : y0 + h, x0 : x0 + w] = cv2.resize(im, (w, h), interpolation=cv2.INTER_LINEAR)
            boards.append(pad_to_multiple(board, value=SINGLE_PAD_VALUE))
            regions.append((x0, y0, x0 + w, y0 + h))
        labels = self._labels(to_tensor(boards), regions)
        return [resize_labels(lab, im.shape[:2]) for lab, im in zip(labels, images)]
