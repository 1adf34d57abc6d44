"""The ``model`` section of a ModelScope M2FP ``configuration.json``, parsed into typed settings.

Field names are ModelScope's own, so a user's configuration file reads unchanged and ``make_random_checkpoint``
writes one that ModelScope's loader also accepts.
"""

from __future__ import annotations

import json
import logging
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from collections.abc import Mapping
from typing import Any, get_args, get_origin, get_type_hints

from vidparse.errors import ModelError

log = logging.getLogger(__name__)

CONFIG_FILE = "configuration.json"
WEIGHTS_FILE = "pytorch_model.pt"

# Class names as ModelScope's CIHP/LIP configurations spell them; index = CIHP label id.
PARSING_CLASSES = (
    "Background", "Hat", "Hair", "Glove", "Sunglasses", "UpperClothes", "Dress", "Coat", "Socks", "Pants",
    "Torso-skin", "Scarf", "Skirt", "Face", "Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe",
    "Right-shoe",
)
HUMAN_CLASS = "Human"
BLOCKS_PER_STAGE = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}  # bottlenecks in res2..res5
STAGES = ("res2", "res3", "res4", "res5")


@dataclass
class BackboneConfig:
    """ResNet "deeplab" backbone (``build_resnet_deeplab_backbone`` keyword arguments)."""

    out_features: list[str] = field(default_factory=lambda: list(STAGES), metadata={"choices": STAGES})
    depth: int = field(default=101, metadata={"choices": tuple(BLOCKS_PER_STAGE)})
    num_groups: int = 1
    width_per_group: int = 64
    norm: str = field(default="BN", metadata={"choices": ("BN", "GN", "")})
    stem_out_channels: int = 128
    res2_out_channels: int = 256
    stride_in_1x1: bool = False
    res4_dilation: int = 1
    res5_dilation: int = 1
    res5_multi_grid: list[int] = field(default_factory=lambda: [1, 1, 1])


@dataclass
class EncoderConfig:
    """Multi-scale deformable-attention pixel decoder."""

    in_features: list[str] = field(default_factory=lambda: list(STAGES), metadata={"choices": STAGES})
    transformer_dropout: float = 0.0
    transformer_nheads: int = 8
    transformer_dim_feedforward: int = 1024
    transformer_enc_layers: int = 6
    conv_dim: int = 256
    mask_dim: int = 256
    transformer_in_features: list[str] = field(default_factory=lambda: list(STAGES[1:]), metadata={"choices": STAGES})
    common_stride: int = 4


@dataclass
class DecoderConfig:
    """Masked-attention transformer decoder."""

    num_classes: int = 21
    hidden_dim: int = 256
    num_queries: int = 100
    nheads: int = 8
    dim_feedforward: int = 2048
    dec_layers: int = 9
    pre_norm: bool = False
    mask_dim: int = 256
    enforce_input_project: bool = False


@dataclass
class M2FPConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    classes: list[str] = field(default_factory=lambda: [*PARSING_CLASSES, HUMAN_CLASS])
    num_parsing: int = 20
    single_human: bool = False
    input_single_human: dict[str, Any] | None = None  # {"sizes": [[width, height]]}
    parsing_ins_score_thr: float = 0.5
    parsing_on: bool = True
    semantic_on: bool = False
    sem_seg_postprocess_before_inference: bool = True
    pretrained: bool = True

    @property
    def single_human_size(self) -> tuple[int, int]:
        """(width, height) of the single-human model's fixed input."""
        if not self.input_single_human or not self.input_single_human.get("sizes"):
            raise ModelError("single-human M2FP configuration has no input_single_human.sizes",
                             hint="the model folder's configuration.json is incomplete")
        width, height = self.input_single_human["sizes"][0]
        return int(width), int(height)

    def to_model_section(self) -> dict[str, Any]:
        section = asdict(self)
        if section["input_single_human"] is None:
            del section["input_single_human"]
        return {"type": "m2fp", **section}


def _typed(cls: type, values: dict[str, Any], where: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ModelError(f"unknown keys in {where}: {', '.join(unknown)}",
                         hint="this configuration is not an M2FP ResNet model")
    hints = get_type_hints(cls)
    for option in fields(cls):
        if option.name in values and (expected := _misfit(values[option.name], hints[option.name], option.metadata)):
            raise ModelError(f"M2FP configuration: {where}.{option.name} is {json.dumps(values[option.name])}; "
                             f"expected {expected}", hint="fix configuration.json, or pull or make the model again")
    return cls(**values)


def _misfit(value: Any, hint: Any, metadata: Mapping[str, Any]) -> str | None:
    """What ``value`` should be instead, where it is not of type ``hint`` (or not one of metadata's ``choices``);
    None when it fits. Every int of the configuration is a count, width, stride or dilation (at least 1), every
    float a probability (0 to 1)."""
    choices = metadata.get("choices")
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        if not isinstance(value, list):
            return "a list"
        return next((f"a list, each {expected}" for v in value if (expected := _misfit(v, item, metadata))), None)
    if type(None) in get_args(hint):  # an optional section: a dict or null
        return None if value is None or isinstance(value, dict) else "an object or null"
    if hint is bool:
        return None if isinstance(value, bool) else "true or false"
    if choices:
        return None if value in choices and type(value) is hint else f"one of {', '.join(map(json.dumps, choices))}"
    if hint is int:
        return None if type(value) is int and value >= 1 else "a whole number of at least 1"
    if hint is float:
        return None if type(value) in (int, float) and 0 <= value <= 1 else "a number from 0 to 1"
    if hint is str:
        return None if isinstance(value, str) else "a string"
    return None  # a section, checked field by field when it was built


def parse_model_section(section: dict[str, Any]) -> M2FPConfig:
    """Build an ``M2FPConfig`` from the ``model`` section of a ModelScope configuration."""
    values = {k: v for k, v in section.items() if k != "type"}
    try:
        parts = {
            "backbone": _typed(BackboneConfig, values.pop("backbone"), "model.backbone"),
            "encoder": _typed(EncoderConfig, values.pop("encoder"), "model.encoder"),
            "decoder": _typed(DecoderConfig, values.pop("decoder"), "model.decoder"),
        }
    except (KeyError, TypeError) as exc:
        raise ModelError(f"M2FP configuration is missing a section or field: {exc}",
                         hint="configuration.json needs model.backbone, model.encoder and model.decoder") from exc
    # ModelScope's M2FP takes unknown top-level keys as **kwargs, so they are ignored here too.
    known = {f.name for f in fields(M2FPConfig)}
    ignored = sorted(set(values) - known)
    if ignored:
        log.info("ignoring model keys that do not shape the network: %s", ", ".join(ignored))
    values = {k: v for k, v in values.items() if k in known}
    return _typed(M2FPConfig, {**values, **parts}, "model")



def missing_weights(path: Path) -> ModelError:
    return ModelError(f"{path} not found", hint="a ModelScope M2FP folder holds pytorch_model.pt")


def unreadable_weights(path: Path, exc: OSError) -> ModelError:
    return ModelError(f"cannot read {path}: {exc.strerror or exc}", hint="check the file's permissions")


def not_a_checkpoint(path: Path) -> ModelError:
    return ModelError(f"{path} is not a PyTorch checkpoint (corrupt or truncated)",
                      hint="pull the model again, or make one with `vidparse models make-random`")


def check_folder(model_dir: Path) -> None:
    """What can be checked of an M2FP folder without torch (a few milliseconds): its configuration, and that its
    checkpoint is a whole zip archive (its index at the end is read); an older pickle-only checkpoint is left to
    torch. Raises `ModelError` as loading it would."""
    read_config(model_dir)
    path = model_dir / WEIGHTS_FILE
    if not path.is_file():
        raise missing_weights(path)
    try:
        with path.open("rb") as file:
            head = file.read(2)
            if head == b"PK":
                zipfile.ZipFile(file).close()
            elif head[:1] != b"\x80":  # a pickle's first byte
                raise not_a_checkpoint(path)
    except zipfile.BadZipFile as exc:
        raise not_a_checkpoint(path) from exc
    except OSError as exc:
        raise unreadable_weights(path, exc) from exc


def read_config(model_dir: Path) -> M2FPConfig:
    path = model_dir / CONFIG_FILE
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ModelError(f"{path} not found", hint="pass a ModelScope M2FP model folder") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"cannot read {path}: {exc}", hint="the model folder is corrupt; pull it again") from exc
    if not isinstance(document, dict) or not isinstance(document.get("model"), dict):
        raise ModelError(f"{path} has no 'model' section", hint="pass a ModelScope M2FP model folder")
    return parse_model_section(document["model"])


def write_config(model_dir: Path, config: M2FPConfig) -> Path:
    """Write ``configuration.json`` the way ModelScope model folders hold it."""
    task = "image-segmentation"
    document = {
        "framework": "pytorch",
        "task": task,
        "pipeline": {"type": "m2fp-image-human-parsing"},
        "model": config.to_model_section(),
    }
    path = model_dir / CONFIG_FILE
    path.write_text(json.dumps(document, indent=2))
    return path


def full_config(single_human: bool = False) -> M2FPConfig:
    """The published ResNet-101 layout (multi-human CIHP, or single-human with a fixed input size)."""
    if not single_human:
        return M2FPConfig()
    return M2FPConfig(
        decoder=DecoderConfig(num_classes=len(PARSING_CLASSES)),
        classes=list(PARSING_CLASSES),
        single_human=True,
        input_single_human={"sizes": [[384, 512]]},
        parsing_on=False,
        semantic_on=True,
    )


def tiny_config(single_human: bool = False) -> M2FPConfig:
    """Same structure with small widths, one encoder layer and few queries: for fast tests."""
    config = full_config(single_human)
    config.backbone = BackboneConfig(depth=50, width_per_group=8, stem_out_channels=16, res2_out_channels=32)
    config.encoder = EncoderConfig(transformer_nheads=4, transformer_dim_feedforward=64, transformer_enc_layers=1,
                                   conv_dim=32, mask_dim=32)
    # ModelScope's parsing post-processing takes the top 100 of queries x classes, so keep that >= 100.
    config.decoder = DecoderConfig(num_classes=config.decoder.num_classes, hidden_dim=32, num_queries=6, nheads=4,
                                   dim_feedforward=64, dec_layers=3, mask_dim=32)
    if single_human:
        config.input_single_human = {"sizes": [[96, 128]]}
    return config
