"""Small building blocks whose parameter names match the checkpoints (detectron2-style conv + norm)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class ConvNorm(nn.Conv2d):
    """A convolution followed by an optional ``norm`` module and activation.

    Parameters live at ``<name>.weight`` / ``<name>.bias`` and ``<name>.norm.*``, as in the checkpoints.
    """

    def __init__(self, *args, norm: nn.Module | None = None,
                 activation: Callable[[torch.Tensor], torch.Tensor] | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norm = norm
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward(x)
        if self.norm is not None:
            x = self.norm(x)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def fuse_batchnorm(self) -> None:
        """Fold an eval-mode BatchNorm into the convolution's weight and bias (inference only)."""
        if not isinstance(self.norm, nn.BatchNorm2d):
            return
        bn = self.norm
        assert bn.running_mean is not None and bn.running_var is not None  # M2FP's BatchNorms track statistics
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if self.bias is not None:
            bias = bias + self.bias * scale
        self.weight = nn.Parameter((self.weight * scale[:, None, None, None]).detach())
        self.bias = nn.Parameter(bias.detach())
        self.norm = None


class MLP(nn.Module):
    """Linear layers with ReLU between them (``layers.<i>``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims_in, dims_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == last else F.relu(layer(x))
        return x


def sine_position_embedding(feature: torch.Tensor, num_feats: int, temperature: float = 10000.0) -> torch.Tensor:
    """Normalized 2-D sine position encoding for an unpadded feature map: 1 x 2*num_feats x H x W.

    Coordinates come from a cumulative sum over the map, so exported graphs keep height and width dynamic.
    """
    eps, scale = 1e-6, 2 * torch.pi
    ones = torch.ones_like(feature[0, 0], dtype=torch.float32)
    y = ones.cumsum(0)
    x = ones.cumsum(1)
    y = y / (y[-1:, :] + eps) * scale
    x = x / (x[:, -1:] + eps) * scale
    dim_t = torch.arange(num_feats, dtype=torch.float32, device=feature.device)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / num_feats)

    def encode(values: torch.Tensor) -> torch.Tensor:  # H x W -> H x W x num_feats, sin/cos interleaved
        angles = values[:, :, None] / dim_t
        return torch.stack((angles[:, :, 0::2].sin(), angles[:, :, 1::2].cos()), dim=3).flatten(2)

    return torch.cat((encode(y), encode(x)), dim=2).permute(2, 0, 1).unsqueeze(0)
