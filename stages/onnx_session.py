"""ONNX Runtime sessions made the same way everywhere: CPU, quiet, with an explicit thread count."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidparse.errors import ModelError


def open_session(path: Path, threads: int | None = None, graph: bytes | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of the model at ``path`` (or of ``graph``, that model edited in memory);
    onnxruntime is imported here so that only parsing processes load it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the shipped graphs warn about initializers listed as inputs
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(graph or str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise ModelError(f"cannot load model {path}: {str(exc).splitlines()[0]}",
                         hint="the file is corrupt or not an ONNX model; fetch it again with `vidparse models pull`") from exc
