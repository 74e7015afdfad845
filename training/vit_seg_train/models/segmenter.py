"""The segmentation model: a timm ViT encoder, optional token reduction, a dense decoder."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from vit_seg_train.reduction import ops


class Segmenter(nn.Module):
    """ViT encoder + decoder head, Segmenter-style.

    ``forward_features`` returns the patch tokens on the dense H/p x W/p grid (prefix tokens
    removed); ``forward_head`` turns them into grid logits; ``forward`` upsamples to the input size.
    A token-reduction wiring may be attached as ``self.reduction``; with none attached the encoder
    runs timm's own ``forward_features`` unchanged. With one, ``forward`` decodes the reduced
    tokens directly (``forward_tokens``) and expands to the dense grid only at the class logits.
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

    def forward_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Encode images to patch tokens and their dense assignment (``None``: dense already)."""
        if self.reduction is None:
            return self.forward_features(x), None
        tokens, assign = self.reduction.encode(self.encoder, x)
        tokens = tokens[:, self.num_prefix_tokens:]
        if assign is not None and tokens.shape[1] >= assign.shape[1]:
            # pruning keeps its exited tokens (and EViT adds fused ones): no saving, go dense
            return ops.gather_tokens(tokens, assign), None
        return tokens, assign

    def forward_head(self, tokens: torch.Tensor, grid: tuple[int, int],
                     assign: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Decode patch tokens (dense, or reduced with ``assign``) to B x K x gh x gw logits."""
        return self.decoder(tokens, grid, assign)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return B x K x H x W logits at the input resolution."""
        h, w = x.shape[-2:]
        tokens, assign = self.forward_tokens(x)
        logits = self.forward_head(tokens, self.grid_size(h, w), assign)
        return F.interpolate(logits, size=(h, w), mode='bilinear', align_corners=False)
