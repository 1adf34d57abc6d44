"""Multi-scale deformable attention with the bilinear sampling done by ``F.grid_sample`` (no compiled ops)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def sample_levels(values: list[torch.Tensor], grids: list[torch.Tensor], weights: list[torch.Tensor]) -> torch.Tensor:
    """Weighted bilinear samples summed over levels and points.

    ``values[l]``: (B*heads, head_dim, H_l, W_l); ``grids[l]``: (B*heads, Lq, points, 2) in grid_sample's [-1, 1]
    coordinates (x, y); ``weights[l]``: (B*heads, Lq, points). Returns (B*heads, head_dim, Lq).
    Summing level by level keeps only one level's samples in memory at a time.
    """
    total = None
    for value, grid, weight in zip(values, grids, weights):
        sampled = F.grid_sample(value, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        part = (sampled * weight[:, None]).sum(-1)
        total = part if total is None else total + part
    assert total is not None
    return total


class MSDeformAttn(nn.Module):
    def __init__(self, d_model: int, n_levels: int, n_heads: int, n_points: int) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.d_model, self.n_levels, self.n_heads, self.n_points = d_model, n_levels, n_heads, n_points
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, d_model)
        self.output_proj = nn.Linear(d_model, d_model)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor, value_input: torch.Tensor,
                level_shapes: list[tuple[int, int]]) -> torch.Tensor:
        """``query``/``value_input``: (B, L, C) with the levels' tokens concatenated in ``level_shapes`` order;
        ``reference_points``: (1 or B, L, 2) normalized (x, y) in [0, 1]."""
        batch, length, _ = query.shape
        heads, head_dim, points = self.n_heads, self.d_model // self.n_heads, self.n_points
        value = self.value_proj(value_input)
        offsets = self.sampling_offsets(query).view(batch, length, heads, self.n_levels, points, 2)
        weights = self.attention_weights(query).view(batch, length, heads, self.n_levels * points)
        weights = weights.softmax(-1).view(batch, length, heads, self.n_levels, points)
        # grid_sample wants (B*heads, Lq, points, ...); the [0, 1] -> [-1, 1] map is folded into the scales.
        ref = (2 * reference_points - 1)[:, :, None, None, :]
        values, grids, level_weights = [], [], []
        start = 0
        for level, (height, width) in enumerate(level_shapes):
            end = start + height * width
            values.append(value[:, start:end].transpose(1, 2).reshape(batch * heads, head_dim, height, width))
            start = end
            scale = torch.stack((2 / torch.as_tensor(width, dtype=value.dtype),
                                 2 / torch.as_tensor(height, dtype=value.dtype)))
            grid = ref + offsets[:, :, :, level] * scale
            grids.append(grid.transpose(1, 2).reshape(batch * heads, length, points, 2))
            level_weights.append(weights[:, :, :, level].transpose(1, 2).reshape(batch * heads, length, points))
        out = sample_levels(values, grids, level_weights)
        out = out.view(batch, self.d_model, length).transpose(1, 2)
        return self.output_proj(out)
