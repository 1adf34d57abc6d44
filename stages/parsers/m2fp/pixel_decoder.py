"""Pixel decoder: deformable-attention encoder over res3..res5 plus one FPN level, and the mask features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidparse.stages.parsers.m2fp.config import EncoderConfig
from vidparse.stages.parsers.m2fp.deform_attn import MSDeformAttn
from vidparse.stages.parsers.m2fp.layers import ConvNorm, sine_position_embedding

NUM_MASK_LEVELS = 3  # the transformer decoder always attends to three scales


class DeformEncoderLayer(nn.Module):
    def __init__(self, d_model: int, d_ffn: int, n_levels: int, n_heads: int, n_points: int = 4) -> None:
        super().__init__()
        self.self_attn = MSDeformAttn(d_model, n_levels, n_heads, n_points)
        self.norm1 = nn.LayerNorm(d_model)
        self.linear1 = nn.Linear(d_model, d_ffn)
        self.linear2 = nn.Linear(d_ffn, d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, src: torch.Tensor, pos: torch.Tensor, reference_points: torch.Tensor,
                level_shapes: list[tuple[int, int]]) -> torch.Tensor:
        src = self.norm1(src + self.self_attn(src + pos, reference_points, src, level_shapes))
        return self.norm2(src + self.linear2(F.relu(self.linear1(src))))


class DeformEncoderStack(nn.Module):
    def __init__(self, layers: list[DeformEncoderLayer]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)


class DeformEncoder(nn.Module):
    """``level_embed`` plus ``encoder.layers``, as the checkpoints name them."""

    def __init__(self, d_model: int, nhead: int, num_layers: int, dim_feedforward: int, num_levels: int) -> None:
        super().__init__()
        self.encoder = DeformEncoderStack(
            [DeformEncoderLayer(d_model, dim_feedforward, num_levels, nhead) for _ in range(num_layers)])
        self.level_embed = nn.Parameter(torch.zeros(num_levels, d_model))

    def forward(self, srcs: list[torch.Tensor], pos: list[torch.Tensor]) -> list[torch.Tensor]:
        level_shapes = [(s.shape[2], s.shape[3]) for s in srcs]
        tokens = torch.cat([s.flatten(2).transpose(1, 2) for s in srcs], 1)
        pos_tokens = torch.cat([p.flatten(2).transpose(1, 2) + self.level_embed[i] for i, p in enumerate(pos)], 1)
        reference = torch.cat([reference_points(s) for s in srcs], 0)[None]
        for layer in self.encoder.layers:
            tokens = layer(tokens, pos_tokens, reference, level_shapes)
        outputs, start = [], 0
        for src, (height, width) in zip(srcs, level_shapes):
            end = start + height * width
            outputs.append(tokens[:, start:end].transpose(1, 2).reshape(src.shape))
            start = end
        return outputs


def reference_points(feature: torch.Tensor) -> torch.Tensor:
    """Pixel centres of a feature map, normalized to [0, 1]: (H*W, 2) as (x, y)."""
    ones = torch.ones_like(feature[0, 0], dtype=torch.float32)
    y = (ones.cumsum(0) - 0.5) / ones.sum(0, keepdim=True)
    x = (ones.cumsum(1) - 0.5) / ones.sum(1, keepdim=True)
    return torch.stack((x.flatten(), y.flatten()), -1)


class MSDeformAttnPixelDecoder(nn.Module):
    def __init__(self, config: EncoderConfig, channels: dict[str, int], strides: dict[str, int]) -> None:
        super().__init__()
        conv_dim = config.conv_dim
        self.conv_dim = conv_dim
        self.in_features = sorted(config.in_features, key=lambda f: strides[f])
        self.transformer_in_features = sorted(config.transformer_in_features, key=lambda f: strides[f])
        self.input_proj = nn.ModuleList(
            nn.Sequential(nn.Conv2d(channels[f], conv_dim, kernel_size=1), nn.GroupNorm(32, conv_dim))
            for f in reversed(self.transformer_in_features)
        )
        self.transformer = DeformEncoder(conv_dim, config.transformer_nheads, config.transformer_enc_layers,
                                         config.transformer_dim_feedforward, len(self.transformer_in_features))
        self.mask_features = nn.Conv2d(conv_dim, config.mask_dim, kernel_size=1)
        min_stride = min(strides[f] for f in self.transformer_in_features)
        self.num_fpn_levels = int(math.log2(min_stride) - math.log2(config.common_stride))
        self.fpn_features = self.in_features[: self.num_fpn_levels]
        for idx, feature in enumerate(self.fpn_features):
            self.add_module(f"adapter_{idx + 1}", ConvNorm(channels[feature], conv_dim, 1, bias=False,
                                                           norm=nn.GroupNorm(32, conv_dim)))
            self.add_module(f"layer_{idx + 1}", ConvNorm(conv_dim, conv_dim, 3, padding=1, bias=False,
                                                         norm=nn.GroupNorm(32, conv_dim), activation=F.relu))

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Returns the mask features (stride ``common_stride``) and three multi-scale maps, coarsest first.

        Always in float32, as ModelScope does (its ``forward_features`` turns autocast off): deformable attention
        does not run in half precision."""
        device_type = next(iter(features.values())).device.type
        with torch.autocast(device_type, enabled=False):
            return self._forward_float(features)

    def _forward_float(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        inputs = [features[f].float() for f in reversed(self.transformer_in_features)]
        srcs = [proj(x) for proj, x in zip(self.input_proj, inputs)]
        pos = [sine_position_embedding(x, self.conv_dim // 2) for x in inputs]
        out = self.transformer(srcs, pos)
        for idx in reversed(range(self.num_fpn_levels)):
            lateral = getattr(self, f"adapter_{idx + 1}")(features[self.fpn_features[idx]].float())
            top_down = F.interpolate(out[-1], size=lateral.shape[-2:], mode="bilinear", align_corners=False)
            out.append(getattr(self, f"layer_{idx + 1}")(lateral + top_down))
        return self.mask_features(out[-1]), out[:NUM_MASK_LEVELS]
