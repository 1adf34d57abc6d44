"""Parser backends, found by name. Modules are imported lazily: M2FP pulls in torch, BodyPix does not.

Each backend module defines:
- ``Options``: a dataclass of its settings (validated from the ``parsers.<name>`` config section);
- ``create(name, options, model_path, device, threads) -> Parser``; ``threads`` sizes ONNX Runtime sessions.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType
from typing import Any

from vidparse.stages.options import check_model
from vidparse.stages.parsers.base import Parser

BACKENDS: dict[str, str] = {
    "bodypix": "vidparse.stages.parsers.bodypix",
    "cihp-lite": "vidparse.stages.parsers.cihp_lite",
    "cihp-net": "vidparse.stages.parsers.cihp_net",
    "m2fp": "vidparse.stages.parsers.m2fp",
    "m2fp-single": "vidparse.stages.parsers.m2fp",
}
LABEL_SETS: dict[str, str] = {"bodypix": "bodypix", "cihp-lite": "cihp", "cihp-net": "cihp", "m2fp": "cihp", "m2fp-single": "cihp"}


def backend_module(name: str) -> ModuleType:
    return importlib.import_module(BACKENDS[check_model(name)])


def create_parser(name: str, options: Any, model_path: Path, device: str = "cpu", threads: int | None = None) -> Parser:
    return backend_module(name).create(name, options, model_path, device, threads)
