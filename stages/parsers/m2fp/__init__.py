"""M2FP (Mask2Former for human parsing) in plain PyTorch: loads ModelScope checkpoints, outputs CIHP label maps.

Importing this package is light; torch is imported when a parser is created or a checkpoint written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vidparse.stages.parsers.base import Parser

NAMES = ("m2fp", "m2fp-single")


@dataclass
class Options:
    """Settings of the ``parsers.m2fp`` config section."""

    # eager (PyTorch) or onnx (ONNX Runtime; the graph is exported once per checkpoint and cached)
    backend: str = field(default="eager", metadata={"choices": ("eager", "onnx")})
    # dynamic INT8 quantization of the linear layers (transformer and heads); the backbone stays float
    int8: bool = False
    # m2fp: rescale each image to this height before packing; 0 = as given (the ROI stage already scales crops)
    person_height: int = field(default=0, metadata={"range": (0, 4096)})
    # m2fp: scale the packed canvas so its short side is this; 640 is ModelScope's whole-frame resize; 0 = as is
    input_short_side: int = field(default=0, metadata={"range": (0, 4096)})
    # m2fp: cap on the canvas' long side when input_short_side scales it (ModelScope: 1333)
    max_size: int = field(default=1333, metadata={"range": (32, 8192)})
    # auto (the checkpoint's parsing_on / semantic_on), semantic (softmax x sigmoid) or parsing (instances)
    postprocess: str = field(default="auto", metadata={"choices": ("auto", "semantic", "parsing")})
    # parsing: minimum part-instance score pasted into the label map; 0 = the checkpoint's parsing_ins_score_thr
    score_threshold: float = field(default=0.0, metadata={"range": (0.0, 1.0)})
    # post-process at full input resolution like ModelScope (slower); default: at 1/4, then resize the scores
    exact_postprocess: bool = False
    # m2fp-single: crops per forward pass
    batch_size: int = field(default=8, metadata={"range": (1, 256)})
    # eager backend: run convolutions in channels-last memory format
    channels_last: bool = True
    # eager backend: fp32, or bf16 autocast (backbone and transformer decoder; the pixel decoder stays fp32)
    precision: str = field(default="fp32", metadata={"choices": ("fp32", "bf16")})
    # folder for exported ONNX files; empty = <vidparse model cache>/m2fp-onnx
    onnx_cache: str = ""


def create(name: str, options: Options, model_path: Path, device: str = "cpu", threads: int | None = None) -> Parser:
    """A parser for ``m2fp`` (multi-human: packs person crops on one canvas) or ``m2fp-single`` (batches
    crops at the checkpoint's fixed input size). ``model_path`` is a ModelScope model folder; ``threads`` sizes
    the ONNX Runtime session (default: torch's thread count, which the worker has set)."""
    from vidparse.stages.parsers.m2fp.parser import M2FPParser

    return M2FPParser(name, options, Path(model_path), device, threads)


def make_random_checkpoint(directory: Path, tiny: bool = False, single_human: bool = False) -> Path:
    """Write a ModelScope-format M2FP folder with random weights (ResNet-101 layout, or tiny for tests)."""
    from vidparse.stages.parsers.m2fp.checkpoint import make_random_checkpoint as write

    return write(Path(directory), tiny=tiny, single_human=single_human)
