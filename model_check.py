"""Cheap checks, in the main process, that the model files a run needs can load: their structure is read (an ONNX
file's top-level protobuf fields, a TFLite file's buffers, an M2FP folder's configuration and checkpoint index), no
network is built and no runtime imported, so that a damaged or truncated file fails before any worker starts (a few
milliseconds for the shipped models) instead of in every worker. What passes may still fail to load (a damaged
weight, a network for another model): the workers say so."""

from __future__ import annotations

import struct
from pathlib import Path

from vidparse.model_store import model_spec, unloadable_model

ONNX_GRAPH_FIELD = 7  # ModelProto.graph
TFLITE_BUFFERS_FIELD = 4  # Model.buffers; a Buffer's fields: data, offset, size


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


def onnx_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole ONNX model (its top-level fields, each within the file, one of them the graph);
    None when it looks like one."""
    position, graph = 0, False
    try:
        while position < len(data):
            key, position = _varint(data, position)
            field, wire = key >> 3, key & 7
            if field == 0 or wire not in (0, 1, 2, 5):
                return f"not an ONNX model: no protobuf field at byte {position}"
            if wire in (0, 2):  # a number, or the length of what follows
                value, position = _varint(data, position)
                position += value if wire == 2 else 0
            else:  # 64 or 32 bits
                position += 8 if wire == 1 else 4
            graph = graph or (field == ONNX_GRAPH_FIELD and wire == 2)
    except IndexError:
        position = len(data) + 1
    if position > len(data):
        return f"truncated: its data runs past its end ({len(data)} bytes)"
    return None if graph else "not an ONNX model: it holds no graph"


def _varint(data: bytes, position: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[position]
        value |= (byte & 0x7F) << shift
        position += 1
        if byte < 0x80:
            return value, position
        shift += 7


def tflite_problem(data: bytes) -> str | None:
    """Why ``data`` is not a whole TFLite model (its identifier, and every buffer of weights within the file);
    None when it looks like one. FlatBuffers are written back to front: the weights come last, where a download
    cut short ends."""
    if data[4:8] != b"TFL3":
        return "not a TFLite model (no TFL3 identifier)"
    try:
        model = _u32(data, 0)
        buffers = _field(data, model, TFLITE_BUFFERS_FIELD)
        if buffers is None:
            return "not a TFLite model: it holds no buffers"
        vector = buffers + _u32(data, buffers)
        for index in range(_u32(data, vector)):
            element = vector + 4 + 4 * index
            buffer = element + _u32(data, element)
            if (contents := _field(data, buffer, 0)) is not None:
                contents += _u32(data, contents)
                end = contents + 4 + _u32(data, contents)
            else:
                offset, size = (_field(data, buffer, field) for field in (1, 2))
                end = _u64(data, offset) + _u64(data, size) if offset is not None and size is not None else 0
            if end > len(data):
                return f"truncated: buffer {index} runs past its end ({len(data)} bytes)"
    except struct.error:
        return f"truncated or damaged: an offset points past its end ({len(data)} bytes)"
    return None


def _field(data: bytes, table: int, index: int) -> int | None:
    """Where field ``index`` of the FlatBuffers table at ``table`` is, or None where the table leaves it out."""
    vtable = table - struct.unpack_from("<i", data, table)[0]
    entry = 4 + 2 * index
    if vtable < 0 or entry >= _u16(data, vtable):
        return None
    offset = _u16(data, vtable + entry)
    return table + offset if offset else None


def _u16(data: bytes, position: int) -> int:
    return struct.unpack_from("<H", data, position)[0]


def _u32(data: bytes, position: int) -> int:
    return struct.unpack_from("<I", data, position)[0]


def _u64(data: bytes, position: int) -> int:
    return struct.unpack_from("<Q", data, position)[0]
