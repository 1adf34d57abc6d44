"""INT8 static quantization of BodyPix with ONNX Runtime (QDQ, per-channel weights), calibrated on person crops of
vtest frames 100-299 (not in the eval sets), then compared with FP32 on the crops of vtest frames 0-7: parse time
per frame (one thread) and share of equal labels. The quantized model is a derived file: it is written to the user
cache (``model_store.cache_dir()``, ``bodypix-int8.onnx``), never to the repository. Score it with
``vidparse eval ... --model bodypix --model-dir PATH``. Usage, from the repository root:

    VIDPARSE_MODEL_DIR=../shared/models python benchmarks/int8_bodypix.py
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from vidparse.config import load_config
from vidparse.jobs import ResolvedModels, build_person_parser
from vidparse.model_store import cache_dir, resolve_model
from vidparse.stages.parsers.bodypix import BodyPixParser, Options, _valid_size
from vidparse.stages.roi import crop_person

OPSET = 13  # per-channel DequantizeLinear (axis) needs opset 13; the shipped graph is older


def network_input(image: np.ndarray) -> dict[str, np.ndarray]:
    """BodyPix's input for a BGR crop, as ``BodyPixParser`` builds it."""
    height, width = image.shape[:2]
    rgb = np.zeros((_valid_size(height), _valid_size(width), 3), np.float32)
    rgb[:height, :width] = image[:, :, ::-1] / 127.5 - 1
    return {"input": rgb[None]}


class Crops(CalibrationDataReader):
    def __init__(self, crops: list[np.ndarray]) -> None:
        self._inputs = iter([network_input(crop) for crop in crops])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._inputs, None)


def vtest_crops(video: Path, frames: range) -> list[list[np.ndarray]]:
    """The person crops of the given vtest frames, at the default ROI settings, per frame."""
    config = load_config(overrides={"model": "bodypix"})
    detector = build_person_parser(config, ResolvedModels.for_config(config), 1).detector
    detector.open()
    capture = cv2.VideoCapture(str(video))
    crops = []
    for index in range(frames.stop):
        ok, frame = capture.read()
        if ok and index in frames:
            crops.append([crop_person(frame, box, config.roi.margin, config.roi.person_height,
                                      config.roi.max_upscale).image for box in detector.process(frame).boxes])
    return crops


def quantize(source: Path, target: Path, calibration: list[np.ndarray]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        upgraded, prepared = Path(tmp) / "opset.onnx", Path(tmp) / "prepared.onnx"
        onnx.save(version_converter.convert_version(onnx.load(str(source)), OPSET), str(upgraded))
        quant_pre_process(str(upgraded), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), Crops(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--video", type=Path, default=Path("../shared/data/video/vtest.avi"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    target = cache_dir() / "bodypix-int8.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    calibration = [crop for frame in vtest_crops(args.video, range(100, 300, 10)) for crop in frame]
    quantize(resolve_model("bodypix"), target, calibration)
    test = vtest_crops(args.video, range(0, 8))
    results = {}
    for name, path in (("fp32", resolve_model("bodypix")), ("int8", target)):
        model = BodyPixParser(path, Options(), 1)
        model.open()
        model.parse(test[0])
        start = time.perf_counter()
        results[name] = [model.parse(crops) for crops in test]
        print(f"{name}: {1000 * (time.perf_counter() - start) / len(test):.0f} ms a frame ({path})")
    pairs = [(a, b) for fa, fb in zip(results["fp32"], results["int8"]) for a, b in zip(fa, fb)]
    print(f"{len(calibration)} calibration crops; equal labels int8 vs fp32: "
          f"{100 * np.mean([np.mean(a == b) for a, b in pairs]):.1f}%")


if __name__ == "__main__":
    main()
