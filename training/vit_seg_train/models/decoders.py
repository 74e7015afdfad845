"""Decoder heads: patch tokens -> class logits on the dense H/16 x W/16 grid (H/8, H/4: ``skip``).

The tokens are either the dense grid (``assign=None``) or the reduced tokens of a token-reduction
encoder with ``assign`` (B x N): dense position ``q`` holds token ``assign[:, q]``. On reduced
tokens the heads compute per token and expand to the grid only at the end; the mask transformer's
attention adds ``log(multiplicity)`` to each token's key logits, which is exactly attention over
the dense grid of copies. Same result, a fraction of the cost (a test checks both paths agree).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block

from vit_seg_train.reduction import ops


def to_grid(per_token: torch.Tensor, grid: tuple[int, int],
            assign: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Return B x K x gh x gw from B x n x K per-token values (expanded through ``assign``)."""
    if assign is not None:
        per_token = ops.gather_tokens(per_token, assign)
    b = per_token.shape[0]
    return per_token.transpose(1, 2).reshape(b, -1, grid[0], grid[1])


class LinearDecoder(nn.Module):
    """A per-token linear classifier (Segmenter's linear baseline)."""

    def __init__(self, embed_dim: int, num_classes: int, **_: object) -> None:
        super().__init__()
        self.head = nn.Linear(embed_dim, num_classes)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int],
                assign: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Map B x n x C tokens to B x K x gh x gw logits."""
        return to_grid(self.head(tokens), grid, assign)


class MaskTransformerDecoder(nn.Module):
    """Segmenter's mask transformer (Strudel et al., "Segmenter", ICCV 2021).

    Learnable class embeddings are processed jointly with the patch tokens by a few transformer
    blocks; the masks are the scalar products of L2-normalised patch and class embeddings.
    """

    def __init__(self, embed_dim: int, num_classes: int, d_model: int = 192, depth: int = 2,
                 num_heads: int = 3, mlp_ratio: float = 4.0, drop_path_rate: float = 0.0,
                 block_fn: type[nn.Module] = Block, norm_layer: type[nn.Module] = nn.LayerNorm,
                 **_: object) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.scale = d_model ** -0.5
        self.proj_dec = nn.Linear(embed_dim, d_model)
        self.cls_emb = nn.Parameter(torch.zeros(1, num_classes, d_model))
        dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]
        self.blocks = nn.ModuleList([
            block_fn(dim=d_model, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=True,
                     drop_path=dpr[i], norm_layer=norm_layer) for i in range(depth)])
        self.proj_patch = nn.Parameter(self.scale * torch.randn(d_model, d_model))
        self.proj_classes = nn.Parameter(self.scale * torch.randn(d_model, d_model))
        self.decoder_norm = norm_layer(d_model)
        self.mask_norm = norm_layer(num_classes)
        trunc_normal_(self.cls_emb, std=0.02)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int],
                assign: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Map B x n x C tokens to B x K x gh x gw logits."""
        b, n, _ = tokens.shape
        x = self.proj_dec(tokens)
        x = torch.cat([x, self.cls_emb.expand(b, -1, -1)], dim=1)
        mask = None
        if assign is not None:
            bias = torch.cat([ops.multiplicity_bias(assign, n, x.dtype),
                              x.new_zeros(b, self.num_classes)], 1)
            t = bias.shape[1]
            # B x 1 x T x T, as in the encoder wiring (no broadcast query dimension in ONNX)
            mask = bias[:, None, None, :].expand(-1, -1, t, -1)
        for blk in self.blocks:
            x = blk(x) if mask is None else blk(x, attn_mask=mask)
        x = self.decoder_norm(x)
        patches, cls = x[:, :n] @ self.proj_patch, x[:, n:] @ self.proj_classes
        patches = F.normalize(patches, dim=-1)
        cls = F.normalize(cls, dim=-1)
        masks = self.mask_norm(patches @ cls.transpose(1, 2))
        return to_grid(masks, grid, assign)


def _conv_bn_relu(c_in: int, c_out: int, k: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SkipDecoder(nn.Module):
    """Tokens at stride 16 fused with a stride-8 feature map, classified at stride 8.

    Each token is projected to ``d_model`` (on reduced tokens: per token, then expanded through
    ``assign``), upsampled to the skip's grid, concatenated with the skip projected to
    ``skip_dim`` channels, and refined by ``depth`` depthwise-separable 3x3 blocks before a 1x1
    classifier: the light fusion of the mobile segmenters (LRASPP, SeaFormer, EfficientViT-Seg),
    which recovers the thin classes a stride-16 grid cannot draw. ``skip_dim=0``: no skip (the
    same head on the upsampled tokens alone), for measuring what the skip brings.

    ``fine_dim > 0`` adds a residual refinement at stride 4: the fused stride-8 features,
    upsampled, concatenated with the stem's stride-4 map projected to ``fine_dim`` channels, one
    depthwise-separable block and a 1x1 classifier whose logits are added to the stride-8 logits
    (upsampled). That classifier starts at zero, so the refined decoder starts as the stride-8
    one: loaded from a stride-8 checkpoint (``train.init_missing: [decoder.fine]``) it gives the
    same logits until training moves it. ``fine_context > 0`` first narrows the stride-8 features
    to that many channels (a 1x1 conv at stride 8), so that the upsampling, the concatenation and
    the depthwise conv at stride 4 move a fraction of the bytes: the refinement's cost on a CPU is
    memory traffic at stride 4, not arithmetic.
    """

    uses_skip = True

    def __init__(self, embed_dim: int, num_classes: int, skip_channels: int = 0,
                 d_model: int = 96, skip_dim: int = 48, depth: int = 2, fine_channels: int = 0,
                 fine_dim: int = 0, fine_context: int = 0, **_: object) -> None:
        super().__init__()
        self.proj = nn.Linear(embed_dim, d_model)
        self.skip_proj = _conv_bn_relu(skip_channels, skip_dim) if skip_dim else None
        c = d_model + skip_dim
        blocks: list[nn.Module] = []
        for _i in range(depth):
            blocks += [_conv_bn_relu(c, c, 3, groups=c), _conv_bn_relu(c, d_model)]
            c = d_model
        self.fuse = nn.Sequential(*blocks)
        self.classifier = nn.Conv2d(c, num_classes, 1)
        self.fine = (FineRefinement(c, fine_channels, fine_dim, num_classes, fine_context)
                     if fine_dim else None)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int],
                assign: Optional[torch.Tensor] = None, skip: Optional[torch.Tensor] = None,
                fine: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Map B x n x C tokens (and the skip maps) to logits at stride 8 (4 when refined)."""
        x = to_grid(self.proj(tokens), grid, assign)
        size = skip.shape[-2:] if skip is not None else (2 * grid[0], 2 * grid[1])
        x = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        if self.skip_proj is not None:
            if skip is None:
                raise ValueError('SkipDecoder needs the stride-8 skip (a hybrid encoder)')
            x = torch.cat([x, self.skip_proj(skip)], 1)
        x = self.fuse(x)
        if self.fine is None:
            return self.classifier(x)
        if fine is None:
            raise ValueError('SkipDecoder(fine_dim > 0) needs the stride-4 map (a hybrid encoder)')
        return self.fine(x, self.classifier(x), fine)


class FineRefinement(nn.Module):
    """Stride-4 residual logits from upsampled stride-8 features and the stem's stride-4 map."""

    def __init__(self, channels: int, fine_channels: int, fine_dim: int,
                 num_classes: int, context: int = 0) -> None:
        super().__init__()
        if fine_channels < 1:
            raise ValueError('the stride-4 refinement needs the stride-4 map\'s channels')
        if context < 0:
            raise ValueError(f'fine_context must be >= 0 (0: no narrowing), not {context}')
        self.proj = _conv_bn_relu(fine_channels, fine_dim)
        self.context = _conv_bn_relu(channels, context) if context > 0 else None
        c = (context if context > 0 else channels) + fine_dim
        self.block = nn.Sequential(_conv_bn_relu(c, c, 3, groups=c), _conv_bn_relu(c, fine_dim))
        self.classifier = nn.Conv2d(fine_dim, num_classes, 1)
        nn.init.zeros_(self.classifier.weight)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor, logits: torch.Tensor,
                fine: torch.Tensor) -> torch.Tensor:
        """Return ``logits`` upsampled to ``fine``'s grid plus the refinement's logits."""
        size = fine.shape[-2:]
        if self.context is not None:
            x = self.context(x)
        up = F.interpolate(x, size=size, mode='bilinear', align_corners=False)
        base = F.interpolate(logits, size=size, mode='bilinear', align_corners=False)
        return base + self.classifier(self.block(torch.cat([up, self.proj(fine)], 1)))


DECODERS = {'linear': LinearDecoder, 'mask_transformer': MaskTransformerDecoder,
            'skip': SkipDecoder}
