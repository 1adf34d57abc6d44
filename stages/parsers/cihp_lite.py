"""cihp-lite: CIHP's 20 classes from two small offline models, fused per person crop.

BodyPix says *where* on the body a pixel is (person mask, 24 parts with left and right); the PAN skin / clothes /
hair segmenter says *what it is made of*. ``configs/fusion/cihp-lite.yaml`` turns each (part, material) pair into a
CIHP class. The segmenter ships with a fixed 512x512 input; its graph is made size-agnostic when loaded, so crops
are segmented at their own aspect ratio (``material_height``) instead of being squashed.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import yaml

from vidparse.errors import ModelError
from vidparse.model_store import resolve_model, unloadable_model
from vidparse.stages.labels import load_label_set
from vidparse.stages.onnx_session import check_image_input, open_session
from vidparse.stages.parsers import bodypix
from vidparse.stages.parsers.base import Parser
from vidparse.stages.roi import crop_height
from vidparse.stages.options import CihpLiteOptions as Options

# The segmenter's channels, then "no channel reached the threshold", inside the person mask or at its edge.
MATERIALS = ("skin", "clothes", "hair", "none", "edge")
NONE, EDGE = MATERIALS.index("none"), MATERIALS.index("edge")
MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255  # ImageNet, RGB
STD = np.array([0.229, 0.224, 0.225], np.float32) * 255
MULTIPLE = 32  # the segmenter's input sides must be multiples of this (its coarsest feature map is 1/32)


@lru_cache(maxsize=None)
def fusion_table() -> np.ndarray:
    """``table[BodyPix part, material]`` -> CIHP class, from ``configs/fusion/cihp-lite.yaml``; part 0 (no person)
    gives background."""
    cihp, parts = load_label_set("cihp"), load_label_set("bodypix")
    spec = yaml.safe_load((resources.files("vidparse.configs") / "fusion" / "cihp-lite.yaml").read_text())
    assert tuple(spec["materials"]) == MATERIALS, "the table's columns must be the segmenter's materials"
    table = np.zeros((len(parts), len(MATERIALS)), np.uint8)
    covered = {"background"}
    for rule in spec["rules"]:
        for part in rule["parts"]:
            table[parts.names.index(part)] = [cihp.names.index(rule[material]) for material in MATERIALS]
            covered.add(part)
    missing = set(parts.names) - covered
    assert not missing, f"the fusion table has no rule for BodyPix parts {sorted(missing)}"
    return table


def material_map(probabilities: np.ndarray, person: np.ndarray, threshold: float, edge_px: int) -> np.ndarray:
    """Per pixel, the index of the most probable material (``probabilities``: 3 x H x W, independent), or NONE
    where none reaches ``threshold``, or EDGE for such a pixel within ``edge_px`` of the ``person`` mask's border."""
    best = probabilities.argmax(axis=0).astype(np.uint8)
    none = probabilities.max(axis=0) < threshold
    best[none] = NONE
    if edge_px:
        disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * edge_px + 1,) * 2)
        inner = cv2.erode(person.astype(np.uint8), disk, borderType=cv2.BORDER_REPLICATE).astype(bool)
        best[none & ~inner] = EDGE
    return best


def fuse(parts: np.ndarray, materials: np.ndarray, table: np.ndarray) -> np.ndarray:
    """CIHP labels from a BodyPix part map (0 = no person) and a material map of the same size."""
    return table[parts, materials]


def _not_the_segmenter(path: Path, why: str) -> ModelError:
    return ModelError(f"{path} is not the skin / clothes / hair segmenter ({why})",
                      hint="give the segmenter's file (vidparse models list shows it), or the --model this file is for")


def size_agnostic_graph(path: Path) -> bytes:
    """The segmenter's graph with any batch, height and width (multiples of 32).

    The exported graph resizes its pyramid features to sizes traced as constants for 512x512. Each such Resize is
    followed by an Add or Mul with the feature map it must match, so its target size becomes that map's height and
    width (and the resized tensor's own batch and channels). At 512x512 the outputs equal the original's (< 1e-5).
    """
    import onnx
    from onnx import helper, numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises DecodeError and others on a damaged file
        raise unloadable_model(path, str(exc)) from exc
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    if len([i for i in graph.input if i.name not in constants]) != 1 or len(graph.output) != 1:
        raise _not_the_segmenter(path, f"it takes {', '.join(i.name for i in graph.input if i.name not in constants)}")
    for name, value in (("_zero", 0), ("_two", 2), ("_four", 4)):
        graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
    for node in [n for n in graph.node if n.op_type == "Resize" and len(n.input) > 3 and n.input[3]]:
        user = next((n for n in graph.node if node.output[0] in n.input and n.op_type in ("Add", "Mul")), None)
        if user is None:
            raise _not_the_segmenter(path, "a Resize vidparse sizes is unused")
        target = next(name for name in user.input if name != node.output[0])
        prefix = node.name + "_size"
        sizes = [
            helper.make_node("Shape", [node.input[0]], [prefix + "_in"]),
            helper.make_node("Slice", [prefix + "_in", "_zero", "_two"], [prefix + "_nc"]),
            helper.make_node("Shape", [target], [prefix + "_target"]),
            helper.make_node("Slice", [prefix + "_target", "_two", "_four"], [prefix + "_hw"]),
            helper.make_node("Concat", [prefix + "_nc", prefix + "_hw"], [prefix], axis=0),
        ]
        node.input[3] = prefix
        graph.node.remove(node)
        at = list(graph.node).index(user)
        for new in reversed([*sizes, node]):
            graph.node.insert(at, new)
    for tensor in (graph.input[0], graph.output[0]):
        dims = tensor.type.tensor_type.shape.dim
        for index, symbol in ((0, "batch"), (2, "height"), (3, "width")):
            dims[index].dim_param = symbol
    del graph.value_info[:]
    return model.SerializeToString()


class MaterialSegmenter:
    """The PAN skin / clothes / hair segmenter: 3 x H x W independent probabilities for a BGR image."""

    def __init__(self, model_path: Path, height: int, threads: int | None, max_upscale: float = 0.0,
                 device: str = "cpu") -> None:
        self.device = device
        self.model_path, self.height, self.threads, self.max_upscale = model_path, height, threads, max_upscale
        self._session = None

    def open(self) -> None:
        self._session = open_session(self.model_path, self.threads, graph=size_agnostic_graph(self.model_path),
                                     device=self.device)
        check_image_input(self._session, self.model_path, "skin / clothes / hair segmenter", output_channels=3)

    def probabilities(self, image: np.ndarray) -> np.ndarray:
        assert self._session is not None, "open() first"
        height, width = image.shape[:2]
        scaled_h = crop_height(height, self.height, self.max_upscale)
        scaled_w = max(1, round(width * scaled_h / height))
        padded = np.zeros((-(-scaled_h // MULTIPLE) * MULTIPLE, -(-scaled_w // MULTIPLE) * MULTIPLE, 3), np.float32)
        interpolation = cv2.INTER_AREA if scaled_h < height else cv2.INTER_LINEAR  # INTER_AREA enlarges blockily
        padded[:scaled_h, :scaled_w] = cv2.resize(image, (scaled_w, scaled_h), interpolation=interpolation)[:, :, ::-1]
        padded[:scaled_h, :scaled_w] -= MEAN
        padded[:scaled_h, :scaled_w] /= STD
        (output,) = self._session.run(None, {self._session.get_inputs()[0].name: padded.transpose(2, 0, 1)[None]})
        scaled = output[0, :, :scaled_h, :scaled_w].transpose(1, 2, 0)
        return cv2.resize(scaled, (width, height), interpolation=cv2.INTER_LINEAR).reshape(height, width, 3).transpose(2, 0, 1)

    def close(self) -> None:
        self._session = None


class CihpLiteParser(Parser):
    def __init__(self, model_path: Path, options: Options, threads: int | None = None, device: str = "cpu") -> None:
        self.options = options
        self.label_set = load_label_set("cihp")
        self.geometry = bodypix.BodyPixParser(resolve_model("bodypix"), bodypix.Options(options.person_threshold),
                                              threads, device)
        self.segmenter = MaterialSegmenter(model_path, options.material_height, threads, options.material_upscale,
                                           device)
        self.table = fusion_table()

    def open(self) -> None:
        self.geometry.open()
        self.segmenter.open()

    def parse(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        options = self.options
        return [fuse(parts, material_map(self.segmenter.probabilities(image), parts > 0, options.material_threshold,
                                         options.edge_px), self.table)
                for image, parts in zip(images, self.geometry.parse(images))]

    def close(self) -> None:
        self.geometry.close()
        self.segmenter.close()


def create(name: str, options: Options, model_path: Path, device: str, threads: int | None = None) -> Parser:
    return CihpLiteParser(model_path, options, threads, device)
