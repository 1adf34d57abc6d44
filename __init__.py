"""vidparse: streaming video human parsing.

The Python API (`vidparse.api`) is imported on first use, so that the command line starts fast::

    import vidparse
    parsing = vidparse.parse_image("photo.jpg")
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from vidparse import errors as errors  # what the API raises, catchable before the API is first used (stdlib only)

__version__ = "0.1.0"

__all__ = ["Config", "Parser", "Parsing", "PersonStats", "RunOutcome", "Stream", "StreamFrame", "StreamOutcome",
           "annotate", "parse_image", "resolve_config", "run", "stream"]

if TYPE_CHECKING:
    from vidparse.api import (Config, Parser, Parsing, RunOutcome, Stream, StreamFrame, StreamOutcome, annotate,
                              parse_image, resolve_config, run, stream)
    from vidparse.stages.types import PersonStats


def __dir__() -> list[str]:
    """The API's names too (tab completion), though they are imported on first use."""
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name in __all__:
        return getattr(importlib.import_module("vidparse.api"), name)
    raise AttributeError(f"module 'vidparse' has no attribute {name!r}")
