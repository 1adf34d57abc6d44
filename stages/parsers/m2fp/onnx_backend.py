"""ONNX Runtime path: export the network once (legacy TorchScript exporter, opset 17, dynamic height and width),
cache the file, optionally quantize its MatMuls to INT8, and run it with the worker's thread count."""

from __future__ import annotations

import hashlib
import logging
import warnings
from pathlib import Path

import numpy as np
import torch

from vidparse.stages.onnx_session import open_session
from vidparse.stages.parsers.m2fp.config import WEIGHTS_FILE
from vidparse.stages.parsers.m2fp.deform_attn import use_sampler
from vidparse.stages.parsers.m2fp.model import M2FPNet

log = logging.getLogger(__name__)

OPSET = 17
EXPORT_SIZE = (256, 192)  # any multiple of 32 works; height and width are dynamic in the graph


def export_onnx(model: M2FPNet, path: Path) -> Path:
    """Write ``model`` as ONNX with input ``images`` (B, 3, H, W) and outputs ``class_logits``, ``mask_logits``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = torch.rand(1, 3, *EXPORT_SIZE) * 255
    tmp = path.with_suffix(".partial")
    use_sampler(model, "grid_sample")  # ONNX has GridSample; embedding_bag would become a slow loop
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer warnings about Python values; tests check dynamic shapes
            torch.onnx.export(
                model.eval(), (sample,), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=["images"], output_names=["class_logits", "mask_logits"],
                dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                              "class_logits": {0: "batch"},
                              "mask_logits": {0: "batch", 2: "mask_height", 3: "mask_width"}},
            )
    finally:
        use_sampler(model, "embedding_bag")
    tmp.replace(path)
    log.info("exported M2FP to %s", path)
    return path


def quantize_onnx(source: Path, target: Path) -> Path:
    """Dynamic INT8 quantization of the MatMul/Gemm weights (the transformer's linear layers)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_suffix(".partial")
    quantize_dynamic(str(source), str(tmp), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    tmp.replace(target)
    return target


def cached_onnx(model: M2FPNet, model_dir: Path, cache: Path, int8: bool) -> Path:
    """The exported (and maybe quantized) file for these weights, exporting on first use."""
    digest = hashlib.sha256()
    with (model_dir / WEIGHTS_FILE).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    stem = f"m2fp-{digest.hexdigest()[:16]}-opset{OPSET}"
    fp32 = cache / f"{stem}.onnx"
    if not fp32.exists():
        export_onnx(model, fp32)
    if not int8:
        return fp32
    quantized = cache / f"{stem}-int8.onnx"
    if not quantized.exists():
        quantize_onnx(fp32, quantized)
    return quantized


class OnnxRunner:
    def __init__(self, path: Path, threads: int, device: str = "cpu") -> None:
        self.session = open_session(path, threads, device=device)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feed = {"images": np.ascontiguousarray(images.cpu().numpy(), dtype=np.float32)}
        class_logits, mask_logits = self.session.run(["class_logits", "mask_logits"], feed)
        return torch.from_numpy(class_logits), torch.from_numpy(mask_logits)
