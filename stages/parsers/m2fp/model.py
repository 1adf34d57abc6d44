"""The whole M2FP network: backbone, pixel decoder, transformer decoder, with ModelScope's module names."""

from __future__ import annotations

import torch
from torch import nn

from vidparse.stages.parsers.m2fp.backbone import DeepLabResNet
from vidparse.stages.parsers.m2fp.config import M2FPConfig
from vidparse.stages.parsers.m2fp.layers import ConvNorm
from vidparse.stages.parsers.m2fp.pixel_decoder import MSDeformAttnPixelDecoder
from vidparse.stages.parsers.m2fp.transformer_decoder import MultiScaleMaskedTransformerDecoder

SIZE_DIVISIBILITY = 32
PIXEL_MEAN = (123.675, 116.28, 103.53)  # RGB, 0..255
PIXEL_STD = (58.395, 57.12, 57.375)


class M2FPHead(nn.Module):
    def __init__(self, pixel_decoder: MSDeformAttnPixelDecoder, predictor: MultiScaleMaskedTransformerDecoder) -> None:
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    def forward(self, features: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.predictor(multi_scale, mask_features)


class M2FPNet(nn.Module):
    """Input: RGB float 0..255, (B, 3, H, W) with H and W multiples of 32. Output: class logits (B, Q, C + 1)
    and mask logits (B, Q, H / 4, W / 4)."""

    pixel_mean: torch.Tensor  # buffers, registered in __init__
    pixel_std: torch.Tensor

    def __init__(self, config: M2FPConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("pixel_mean", torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(PIXEL_STD).view(1, 3, 1, 1), persistent=False)
        self.backbone = DeepLabResNet(config.backbone)
        in_features = config.encoder.in_features
        pixel_decoder = MSDeformAttnPixelDecoder(
            config.encoder,
            channels={f: self.backbone.channels[f] for f in in_features},
            strides={f: self.backbone.strides[f] for f in in_features},
        )
        predictor = MultiScaleMaskedTransformerDecoder(config.decoder, in_channels=config.encoder.conv_dim)
        self.sem_seg_head = M2FPHead(pixel_decoder, predictor)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.backbone((images - self.pixel_mean) / self.pixel_std)
        return self.sem_seg_head(features)

    def fuse_batchnorm(self) -> None:
        """Fold the backbone's BatchNorms into its convolutions; afterwards the state_dict no longer matches
        the checkpoint, so call this only on a model used for inference."""
        for module in self.backbone.modules():
            if isinstance(module, ConvNorm):
                module.fuse_batchnorm()
