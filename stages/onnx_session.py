"""ONNX Runtime sessions made the same way everywhere: quiet, with an explicit thread count, on the CPU or (``device``
"cuda") on ONNX Runtime's CUDA provider, which only the ``onnxruntime-gpu`` build has."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidparse.errors import ConfigError, ModelError
from vidparse.model_store import unloadable_model

PROVIDERS = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"]}


def providers(device: str) -> list[str]:
    """ONNX Runtime's execution providers for ``device``; a `ConfigError` when this ONNX Runtime cannot run there
    (so ``--device cuda`` is never quietly run on the CPU)."""
    import onnxruntime as ort

    wanted = PROVIDERS[device]
    available = ort.get_available_providers()
    if wanted[0] not in available:
        raise ConfigError(f"--device {device}: this ONNX Runtime ({ort.__version__}) has no {wanted[0]} "
                          f"(it has {', '.join(available)})",
                          hint="install onnxruntime-gpu in place of onnxruntime (CUDA and cuDNN as it requires), "
                               "or use --device cpu")
    return wanted


def open_session(path: Path, threads: int | None = None, graph: bytes | None = None, device: str = "cpu") -> Any:
    """An ``onnxruntime.InferenceSession`` of the model at ``path`` (or of ``graph``, that model edited in memory)
    on ``device``; onnxruntime is imported here so that only parsing processes load it."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # the shipped graphs warn about initializers listed as inputs
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(graph or str(path), options, providers=providers(device))
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidProtobuf types
        raise unloadable_model(path, str(exc).splitlines()[0]) from exc


def check_image_input(session: Any, path: Path, what: str, channels_last: bool = False,
                      output_channels: int | None = None) -> None:
    """Refuse a model file that is not ``what``: one image input of 3 channels, laid out as the stage feeds it, and
    (given ``output_channels``) a first output of that many channels (a file trained or made for another model fails
    here at load, not on every frame)."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shape = inputs[0].shape if len(inputs) == 1 else []
    made_for = output_channels is None or (len(outputs[0].shape) == 4 and outputs[0].shape[1] == output_channels)
    if len(shape) != 4 or shape[-1 if channels_last else 1] != 3 or not made_for:
        takes = "; ".join(f"{i.name} {list(i.shape)}" for i in inputs)
        gives = list(outputs[0].shape) if outputs else []
        raise ModelError(f"{path} is not a {what} model (it takes {takes} and gives {gives})",
                         hint=f"give the {what} file (vidparse models list shows it), or the --model this file is for")
