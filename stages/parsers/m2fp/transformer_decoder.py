"""Masked-attention transformer decoder: learned queries attend to one scale per layer, masked by the previous
layer's mask prediction, and end in class logits and mask embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vidparse.stages.parsers.m2fp.config import DecoderConfig
from vidparse.stages.parsers.m2fp.layers import MLP, ConvNorm, sine_position_embedding
from vidparse.stages.parsers.m2fp.pixel_decoder import NUM_MASK_LEVELS


class Attention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameter names, batch-first, on
    ``scaled_dot_product_attention``. ``allowed`` is a boolean mask (True = may attend) broadcast over heads."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                allowed: torch.Tensor | None = None) -> torch.Tensor:
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q, k, v = (self._split(F.linear(x, w, b))
                   for x, w, b in ((query, w_q, b_q), (key, w_k, b_k), (value, w_v, b_v)))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        batch, _, length, _ = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)


class SelfAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = Attention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, query_pos: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            y = self.norm(x)
            return x + self.self_attn(y + query_pos, y + query_pos, y)
        return self.norm(x + self.self_attn(x + query_pos, x + query_pos, x))


class CrossAttentionLayer(nn.Module):
    def __init__(self, dim: int, heads: int, pre_norm: bool) -> None:
        super().__init__()
        self.multihead_attn = Attention(dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor, memory: torch.Tensor, allowed: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        y = self.norm(x) if self.pre_norm else x
        y = self.multihead_attn(y + query_pos, memory + pos, memory, allowed)
        return x + y if self.pre_norm else self.norm(x + y)


class FFNLayer(nn.Module):
    def __init__(self, dim: int, hidden: int, pre_norm: bool) -> None:
        super().__init__()
        self.linear1 = nn.Linear(dim, hidden)
        self.linear2 = nn.Linear(hidden, dim)
        self.norm = nn.LayerNorm(dim)
        self.pre_norm = pre_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_norm:
            return x + self.linear2(F.relu(self.linear1(self.norm(x))))
        return self.norm(x + self.linear2(F.relu(self.linear1(x))))


class MultiScaleMaskedTransformerDecoder(nn.Module):
    def __init__(self, config: DecoderConfig, in_channels: int) -> None:
        super().__init__()
        dim = config.hidden_dim
        self.hidden_dim = dim
        self.num_heads = config.nheads
        self.num_classes = config.num_classes
        self.num_queries = config.num_queries
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(dim, config.nheads, config.pre_norm) for _ in range(config.dec_layers))
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(dim, config.nheads, config.pre_norm) for _ in range(config.dec_layers))
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(dim, config.dim_feedforward, config.pre_norm) for _ in range(config.dec_layers))
        self.decoder_norm = nn.LayerNorm(dim)
        self.query_feat = nn.Embedding(config.num_queries, dim)
        self.query_embed = nn.Embedding(config.num_queries, dim)
        self.level_embed = nn.Embedding(NUM_MASK_LEVELS, dim)
        project = in_channels != dim or config.enforce_input_project
        self.input_proj = nn.ModuleList(
            ConvNorm(in_channels, dim, 1) if project else nn.Identity() for _ in range(NUM_MASK_LEVELS))
        self.class_embed = nn.Linear(dim, config.num_classes + 1)
        self.mask_embed = MLP(dim, dim, config.mask_dim, 3)

    def forward(self, features: list[torch.Tensor], mask_features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns class logits (B, Q, classes + 1) and mask logits (B, Q, H, W) at the mask features' size."""
        memories, positions = [], []
        for i, x in enumerate(features):
            positions.append(sine_position_embedding(x, self.hidden_dim // 2).flatten(2).transpose(1, 2))
            memories.append(self.input_proj[i](x).flatten(2).transpose(1, 2) + self.level_embed.weight[i])
        # Attention masks come from mask logits resized to each level. Resizing is linear, so resizing the mask
        # features first and then taking the product with the embeddings gives the same logits for far less work.
        level_mask_features = [
            F.interpolate(mask_features, size=x.shape[-2:], mode="bilinear", align_corners=False) for x in features
        ]
        batch = mask_features.shape[0]
        query_pos = self.query_embed.weight[None].expand(batch, -1, -1)
        output = self.query_feat.weight[None].expand(batch, -1, -1)
        allowed = self._allowed(output, level_mask_features[0])
        for i, (cross, self_attn, ffn) in enumerate(zip(self.transformer_cross_attention_layers,
                                                         self.transformer_self_attention_layers,
                                                         self.transformer_ffn_layers)):
            level = i % NUM_MASK_LEVELS
            output = cross(output, memories[level], allowed, positions[level], query_pos)
            output = ffn(self_attn(output, query_pos))
            if i + 1 < len(self.transformer_ffn_layers):
                allowed = self._allowed(output, level_mask_features[(i + 1) % NUM_MASK_LEVELS])
        decoded = self.decoder_norm(output)
        masks = torch.einsum("bqc,bchw->bqhw", self.mask_embed(decoded), mask_features)
        return self.class_embed(decoded), masks

    def _allowed(self, output: torch.Tensor, mask_features: torch.Tensor) -> torch.Tensor:
        """Where each query may attend: its predicted mask (logit >= 0, i.e. sigmoid >= 0.5); a query whose mask
        is empty attends everywhere."""
        embed = self.mask_embed(self.decoder_norm(output))
        logits = torch.einsum("bqc,bchw->bqhw", embed, mask_features).flatten(2)
        allowed = logits >= 0
        allowed = allowed | ~allowed.any(-1, keepdim=True)
        return allowed[:, None]
