"""ResNet "deeplab" backbone: a stem of three 3x3 convolutions, then bottleneck stages res2..res5."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidparse.stages.parsers.m2fp.config import BLOCKS_PER_STAGE, BackboneConfig
from vidparse.stages.parsers.m2fp.layers import ConvNorm

STAGE_INDEX = {"res2": 2, "res3": 3, "res4": 4, "res5": 5}


def make_norm(kind: str, channels: int) -> nn.Module | None:
    if kind == "BN":
        return nn.BatchNorm2d(channels)
    if kind == "GN":
        return nn.GroupNorm(32, channels)
    if kind == "":
        return None
    raise ValueError(f"unsupported backbone norm '{kind}'")


class Bottleneck(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int, stride: int, dilation: int,
                 num_groups: int, norm: str, stride_in_1x1: bool) -> None:
        super().__init__()
        self.stride = stride
        self.shortcut = (
            ConvNorm(in_channels, out_channels, 1, stride=stride, bias=False, norm=make_norm(norm, out_channels))
            if in_channels != out_channels else None
        )
        stride_1x1, stride_3x3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = ConvNorm(in_channels, bottleneck_channels, 1, stride=stride_1x1, bias=False,
                              norm=make_norm(norm, bottleneck_channels), activation=F.relu)
        self.conv2 = ConvNorm(bottleneck_channels, bottleneck_channels, 3, stride=stride_3x3, padding=dilation,
                              dilation=dilation, groups=num_groups, bias=False,
                              norm=make_norm(norm, bottleneck_channels), activation=F.relu)
        self.conv3 = ConvNorm(bottleneck_channels, out_channels, 1, bias=False, norm=make_norm(norm, out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.shortcut is None else self.shortcut(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + shortcut)


class DeepLabStem(nn.Module):
    """Three 3x3 convolutions (the first with stride 2) and a stride-2 max pool: output stride 4."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        half = out_channels // 2
        self.conv1 = ConvNorm(in_channels, half, 3, stride=2, padding=1, bias=False, norm=make_norm(norm, half),
                              activation=F.relu)
        self.conv2 = ConvNorm(half, half, 3, padding=1, bias=False, norm=make_norm(norm, half), activation=F.relu)
        self.conv3 = ConvNorm(half, out_channels, 3, padding=1, bias=False, norm=make_norm(norm, out_channels),
                              activation=F.relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(self.conv3(self.conv2(self.conv1(x))), kernel_size=3, stride=2, padding=1)


class DeepLabResNet(nn.Module):
    """Returns a dict of the configured ``out_features`` (res2..res5)."""

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        if config.res4_dilation == 2 and config.res5_dilation != 4:
            raise ValueError("a dilated res4 needs res5_dilation 4")
        self.out_features = list(config.out_features)
        self.stem = DeepLabStem(3, config.stem_out_channels, config.norm)
        self.channels: dict[str, int] = {}
        self.strides: dict[str, int] = {}
        in_channels, out_channels = config.stem_out_channels, config.res2_out_channels
        bottleneck = config.num_groups * config.width_per_group
        stride = 4
        last_stage = max(STAGE_INDEX[f] for f in self.out_features)
        self.stage_names: list[str] = []
        for idx, stage in enumerate(range(2, last_stage + 1)):
            dilation = {4: config.res4_dilation, 5: config.res5_dilation}.get(stage, 1)
            first_stride = 1 if idx == 0 or dilation > 1 else 2
            num_blocks = BLOCKS_PER_STAGE[config.depth][idx]
            dilations = [dilation * g for g in config.res5_multi_grid] if stage == 5 else [dilation] * num_blocks
            blocks = []
            for i in range(num_blocks):
                blocks.append(Bottleneck(in_channels, out_channels, bottleneck, first_stride if i == 0 else 1,
                                         dilations[i], config.num_groups, config.norm, config.stride_in_1x1))
                in_channels = out_channels
            name = f"res{stage}"
            self.add_module(name, nn.Sequential(*blocks))
            self.stage_names.append(name)
            stride *= first_stride
            self.channels[name], self.strides[name] = out_channels, stride
            out_channels *= 2
            bottleneck *= 2

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.stem(x)
        outputs = {}
        for name in self.stage_names:
            x = getattr(self, name)(x)
            if name in self.out_features:
                outputs[name] = x
        return outputs
