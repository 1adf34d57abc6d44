"""M2FP (Mask2Former for human parsing) in plain PyTorch: loads ModelScope checkpoints, outputs CIHP label maps.

Importing this package is light; torch is imported when a parser is created or a checkpoint written.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from vidparse.stages.options import M2fpOptions as Options

if TYPE_CHECKING:
    from vidparse.stages.parsers.base import Parser

NAMES = ("m2fp", "m2fp-single")


def create(name: str, options: Options, model_path: Path, device: str = "cpu", threads: int | None = None) -> Parser:
    """A parser for ``m2fp`` (multi-human: packs person crops on one canvas) or ``m2fp-single`` (batches
    crops at the checkpoint's fixed input size). ``model_path`` is a ModelScope model folder; ``threads`` sizes
    the ONNX Runtime session (default: torch's thread count, which the worker has set)."""
    from vidparse.stages.parsers.m2fp.parser import M2FPParser

    return M2FPParser(name, options, Path(model_path), device, threads)


def make_random_checkpoint(directory: Path, tiny: bool = False, single_human: bool = False,
                           force: bool = False) -> Path:
    """Write a ModelScope-format M2FP folder with random weights (ResNet-101 layout, or tiny for tests); one that
    holds a checkpoint already only with ``force``."""
    from vidparse.stages.parsers.m2fp.checkpoint import make_random_checkpoint as write

    return write(Path(directory), tiny=tiny, single_human=single_human, force=force)
