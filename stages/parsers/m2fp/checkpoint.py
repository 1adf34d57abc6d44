"""ModelScope model folders: load one into ``M2FPNet`` (checking that it fits), or write a random one."""

from __future__ import annotations

import logging
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vidparse.errors import BadOutputError, ModelError, file_in_the_way, not_writable
from vidparse.stages.parsers.m2fp.config import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    M2FPConfig,
    full_config,
    missing_weights,
    not_a_checkpoint,
    read_config,
    tiny_config,
    unreadable_weights,
    write_config,
)
from vidparse.stages.parsers.m2fp.model import M2FPNet

log = logging.getLogger(__name__)

SHOWN_KEYS = 5
EMBEDDINGS = ("query_feat.weight", "query_embed.weight", "level_embed.weight", "level_embed")
CONFIDENT_CLASSIFIER = 4.0  # random class_embed weights scaled up: class logits with a std of about 4
SAVED_AS_MODELSCOPE = "torch.save({'model': model.state_dict()}, path) as ModelScope writes it"
# torch.load(weights_only=True) names the first class it refused to unpickle so
UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


@dataclass
class KeyReport:
    missing: list[str]
    unexpected: list[str]
    mismatched: list[str]  # "name: checkpoint shape -> model shape"

    @property
    def fits(self) -> bool:
        return not self.missing and not self.mismatched


def compare_state_dict(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> KeyReport:
    expected = model.state_dict()
    mismatched = [
        f"{name}: {tuple(value.shape)} -> {tuple(expected[name].shape)}"
        for name, value in state_dict.items()
        if name in expected and tuple(value.shape) != tuple(expected[name].shape)
    ]
    return KeyReport(
        missing=sorted(set(expected) - set(state_dict)),
        unexpected=sorted(set(state_dict) - set(expected)),
        mismatched=mismatched,
    )


def _shown(names: list[str]) -> str:
    more = f" (+{len(names) - SHOWN_KEYS} more)" if len(names) > SHOWN_KEYS else ""
    return ", ".join(names[:SHOWN_KEYS]) + more


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The ``model`` entry of a ModelScope ``pytorch_model.pt``."""
    if not path.is_file():
        raise missing_weights(path)
    try:
        with warnings.catch_warnings():  # a pickle not written by torch.save warns of its protocol, then fails below
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise unreadable_weights(path, exc) from exc
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        if unsafe := UNSAFE_GLOBAL.search(str(exc)):
            raise ModelError(f"{path} holds Python objects other than tensors ({unsafe[1]}): refused as unsafe to "
                             "load", hint=f"save the weights alone, {SAVED_AS_MODELSCOPE}") from exc
        raise not_a_checkpoint(path) from exc
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ModelError(f"{path} holds no 'model' state_dict", hint=f"expected {SAVED_AS_MODELSCOPE}")
    state_dict = checkpoint["model"]
    if not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ModelError(f"{path}: the 'model' entry is not a state_dict of tensors",
                         hint=f"expected {SAVED_AS_MODELSCOPE}")
    return state_dict


def load_model(model_dir: Path) -> M2FPNet:
    """Build the network from ``configuration.json`` and load ``pytorch_model.pt``, refusing a misfit."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    model = M2FPNet(config)
    state_dict = read_state_dict(model_dir / WEIGHTS_FILE)
    report = compare_state_dict(model, state_dict)
    if report.unexpected:
        log.warning("%s: %d unexpected keys ignored: %s", model_dir, len(report.unexpected),
                    _shown(report.unexpected))
    if not report.fits:
        problems = []
        if report.missing:
            problems.append(f"{len(report.missing)} missing keys ({_shown(report.missing)})")
        if report.mismatched:
            problems.append(f"{len(report.mismatched)} shape mismatches ({_shown(report.mismatched)})")
        raise ModelError(f"checkpoint in {model_dir} does not fit its configuration: {'; '.join(problems)}",
                         hint="configuration.json and pytorch_model.pt must come from the same model")
    model.load_state_dict({k: v for k, v in state_dict.items() if k not in report.unexpected}, strict=True)
    log.info("loaded M2FP from %s (%d tensors)", model_dir, len(state_dict))
    return model.eval()


def randomize(model: nn.Module, generator: torch.Generator) -> None:
    """Random weights with sane scales, plus non-trivial BatchNorm statistics so nothing is an identity."""
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            if name.endswith("running_var"):
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.dim() == 1 and name.endswith("weight"):  # norm scales
                tensor.copy_(torch.rand(tensor.shape, generator=generator) + 0.5)
            elif tensor.dim() == 1:  # biases, running means
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.1)
            elif name.endswith(EMBEDDINGS):  # learned queries and level embeddings: unit scale
                tensor.copy_(torch.randn(tensor.shape, generator=generator))
            else:
                fan_in = tensor[0].numel()
                tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)


def prepare_folder(directory: Path, force: bool = False) -> None:
    """Make ``directory`` for a new checkpoint, or fail with a `BadOutputError`: it holds one already (unless
    ``force``), a file stands in its way, or it cannot be made or written."""
    held = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if (directory / name).exists()]
    if held and not force:
        raise BadOutputError(f"{directory} holds a checkpoint already ({', '.join(held)})",
                             hint="choose another folder, or add --force to replace it")
    if blocked := file_in_the_way(directory / CONFIG_FILE, directory):
        raise blocked
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadOutputError(f"cannot create the folder {directory}: {exc.strerror}",
                             hint="choose a folder where you can write") from exc
    if refused := not_writable(directory / WEIGHTS_FILE):
        raise BadOutputError(f"{directory} is not writable: {refused.strerror}",
                             hint="choose a folder where you can write")


def make_random_checkpoint(directory: Path, tiny: bool = False, single_human: bool = False, seed: int = 0,
                           force: bool = False) -> Path:
    """Write a ModelScope-format M2FP folder (``configuration.json`` + ``pytorch_model.pt``) with random weights:
    the full ResNet-101 layout, or a tiny one for fast tests; a folder holding a checkpoint already only with
    ``force``. Returns the folder."""
    directory = Path(directory)
    prepare_folder(directory, force)
    config: M2FPConfig = tiny_config(single_human) if tiny else full_config(single_human)
    model = M2FPNet(config)
    randomize(model, torch.Generator().manual_seed(seed))
    with torch.no_grad():
        # A random classifier is unsure of every class, so no part instance would pass the parsing score
        # threshold and every pixel would come out background; a confident one paints visible labels.
        model.sem_seg_head.predictor.class_embed.weight.mul_(CONFIDENT_CLASSIFIER)
    write_config(directory, config)
    torch.save({"model": model.state_dict()}, directory / WEIGHTS_FILE)
    log.info("wrote a random %s M2FP checkpoint to %s", "tiny" if tiny else "ResNet-101", directory)
    return directory
