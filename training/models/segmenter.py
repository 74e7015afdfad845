"""The segmentation model: a timm ViT encoder, optional token reduction, a dense decoder."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer


class Segmenter(nn.Module):
    """ViT encoder + decoder head, Segmenter-style.

    ``forward_features`` returns the patch tokens on the dense H/p x W/p grid (prefix tokens
    removed); ``forward_head`` turns them into grid logits; ``forward`` upsamples to the input size.
    A token-reduction wiring may be attached as ``self.reduction``; with none attached the encoder
    runs timm's own ``forward_features`` unchanged.
    """

    def __init__(self, encoder: VisionTransformer, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.reduction: Optional[nn.Module] = None
        self.patch_size = tuple(encoder.patch_embed.patch_size)
        self.num_prefix_tokens = encoder.num_prefix_tokens

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Return the token grid for an input of ``height`` x ``width``."""
        return height // self.patch_size[0], width // self.patch_size[1]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Encode images to B x N x C patch tokens on the dense grid."""
        if self.reduction is None:
            tokens = self.encoder.forward_features(x)
        else:
            tokens = self.reduction(self.encoder, x)
        return tokens[:, self.num_prefix_tokens:]

    def forward_head(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """Decode patch tokens to B x K x gh x gw logits."""
        return self.decoder(tokens, grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return B x K x H x W logits at the input resolution."""
        h, w = x.shape[-2:]
        logits = self.forward_head(self.forward_features(x), self.grid_size(h, w))
        return F.interpolate(logits, size=(h, w), mode='bilinear', align_corners=False)
