"""Cheap checks, in the main process, that the model files a run needs can load: an ONNX file's protobuf fields
(read by protobuf, with no `onnx` import), a TFLite file as LiteRT's loader verifies it (nothing allocated), an M2FP
folder's configuration and checkpoint index; no network is built, so that a damaged or truncated file fails before
any worker starts (milliseconds for the shipped models) instead of in every worker; trained weights against the
sha256 of the model card beside them (a damaged weight still parses as ONNX). What passes may still fail to load (a
network for another model): the workers say so."""

from __future__ import annotations

import hashlib
from pathlib import Path

from vidparse.errors import ModelError
from vidparse.model_store import MODEL_CARD, card_sha256, model_spec, unloadable_model

ONNX_GRAPH_FIELD = 7  # ModelProto.graph


def check_loadable(name: str, path: Path) -> None:
    """Raise `ModelError` when model ``name``'s file or folder at ``path`` is damaged or not such a model."""
    kind = Path(model_spec(name).path).suffix
    if not kind:  # a model folder (M2FP's)
        from vidparse.stages.parsers.m2fp.config import check_folder

        check_folder(path)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise unloadable_model(path, exc.strerror or str(exc)) from exc
    if why := (tflite_problem(data) if kind == ".tflite" else onnx_problem(data)):
        raise unloadable_model(path, why)
    if (recorded := card_sha256(path)) and hashlib.sha256(data).hexdigest() != recorded:
        raise ModelError(f"cannot load model {path}: its bytes are not those its {MODEL_CARD} records (sha256 "
                         f"{recorded[:16]}…): damaged, or replaced without its card",
                         hint="put back the file the card describes or train it again with `vidparse train`; "
                              f"weights replaced on purpose need their own {MODEL_CARD} (or none)")


def onnx_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole ONNX model (protobuf's own parser reads its wire format: every field within the
    file, one of them the graph); None when it looks like one. Read as fields of no known message, so that `onnx`
    (0.7 s to import) is not needed."""
    from google.protobuf import empty_pb2
    from google.protobuf.message import DecodeError
    from google.protobuf.unknown_fields import UnknownFieldSet

    message = empty_pb2.Empty()
    try:
        message.ParseFromString(data)
    except DecodeError:
        return f"truncated or not an ONNX model: its protobuf data is broken ({len(data)} bytes)"
    if not any(field.field_number == ONNX_GRAPH_FIELD for field in UnknownFieldSet(message)):
        return "not an ONNX model: it holds no graph"
    return None


def tflite_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole TFLite model, as LiteRT's loader finds it (it verifies the FlatBuffer, nothing
    is allocated); None when it loads."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        Interpreter(model_content=data)
    except ValueError as exc:  # "The model is not a valid Flatbuffer buffer"
        return f"truncated or not a TFLite model: {exc}"
    return None
