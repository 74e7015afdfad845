"""A hybrid ViT for few training frames: convolutional stages to stride 16, attention on its tokens.

What lets a transformer learn from a few hundred frames without pre-training is convolutional
inductive bias early and attention late (Xiao et al., "Early Convolutions Help Transformers See
Better", 2021; the mobile segmenters EfficientViT-Seg, TopFormer, SeaFormer and SegFormer's MiT
all attend only on coarse tokens). This family keeps the project's transformer -- timm's
``VisionTransformer`` blocks on the stride-16 token grid, where the token reductions act -- and
replaces the patchify stem with MobileNetV2 inverted-residual stages (stride 2, 4, 8, 16). The
stride-8 feature map is kept as a skip for the decoder (``SkipDecoder``): thin classes (poles,
signs) are lost at stride 16; the stride-4 map too, for a decoder that refines at stride 4.

The stages are timm's ``PatchEmbed`` with a new ``proj`` (as the conv stem of ``stems.py``), so
timm's grid, dynamic size, position embeddings and the reduction wiring are unchanged. The skip
is the one extra output: ``ConvStages`` keeps the stride-8 (and stride-4) maps of its last call
and ``HybridSegmenter`` hands them to the decoder.
"""

from __future__ import annotations

import functools
from typing import Any, Optional, Sequence

import timm
import torch
import torch.nn as nn
from timm.layers import PatchEmbed

from vit_seg_train.models.decoders import DECODERS
from vit_seg_train.models.segmenter import Segmenter

SKIP_STAGE = 2   # stages are at stride 2, 4, 8, 16: the third one's output is the stride-8 skip
FINE_STAGE = 1   # ... and the second one's the stride-4 map


def conv_bn(c_in: int, c_out: int, k: int = 1, stride: int = 1, groups: int = 1,
            act: bool = True) -> nn.Sequential:
    """Return conv (no bias) + BatchNorm (+ ReLU): folds into one convolution at export."""
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups,
                                         bias=False), nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand, 3x3 depthwise (maybe strided), 1x1 linear projection."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, expand: int = 4) -> None:
        super().__init__()
        hidden = c_in * expand
        self.residual = stride == 1 and c_in == c_out
        self.body = nn.Sequential(conv_bn(c_in, hidden), conv_bn(hidden, hidden, 3, stride, hidden),
                                  conv_bn(hidden, c_out, act=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the block's output (plus its input where shapes allow)."""
        y = self.body(x)
        return x + y if self.residual else y


class ConvStages(nn.Module):
    """Four stride-2 stages of inverted residuals; keeps the stride-8 and 4 maps of the last call.

    ``widths[i]`` channels and ``depths[i]`` blocks in stage ``i`` (the first block of a stage
    strides); stage 0 starts with a plain 3x3 convolution from the image. ``embed_dim``: the 1x1
    projection to the transformer's width at the end.
    """

    def __init__(self, in_chans: int, embed_dim: int, widths: Sequence[int],
                 depths: Sequence[int], expand: int = 4) -> None:
        super().__init__()
        if len(widths) != 4 or len(depths) != 4 or min(depths) < 0 or min(widths) < 1:
            raise ValueError(f'conv stages need 4 widths and 4 depths >= 0, got {widths} / '
                             f'{depths}')
        stages, c = [], in_chans
        for i, (w, d) in enumerate(zip(widths, depths)):
            first = conv_bn(c, w, 3, 2) if i == 0 else InvertedResidual(c, w, 2, expand)
            stages.append(nn.Sequential(first, *[InvertedResidual(w, w, 1, expand)
                                                 for _ in range(d)]))
            c = w
        self.stages = nn.ModuleList(stages)
        self.head = nn.Conv2d(c, embed_dim, 1)
        self.skip_channels = int(widths[SKIP_STAGE])
        self.fine_channels = int(widths[FINE_STAGE])
        self.skip: Optional[torch.Tensor] = None
        self.fine: Optional[torch.Tensor] = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the stride-16 map at ``embed_dim`` channels; keep the stride-8 and 4 ones."""
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == SKIP_STAGE:
                self.skip = x
            elif i == FINE_STAGE:
                self.fine = x
        return self.head(x)


class HybridStem(PatchEmbed):
    """timm's ``PatchEmbed`` (patch 16) whose projection is ``ConvStages``."""

    def __init__(self, *args: Any, conv_widths: Sequence[int] = (16, 24, 48, 96),
                 conv_depths: Sequence[int] = (0, 1, 2, 2), conv_expand: int = 4,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if tuple(self.patch_size) != (16, 16):
            raise ValueError(f'the hybrid stem reaches stride 16, got patch {self.patch_size}')
        self.proj = ConvStages(self.proj.in_channels, self.proj.out_channels, conv_widths,
                               conv_depths, conv_expand)


class HybridSegmenter(Segmenter):
    """A ``Segmenter`` whose decoder also reads the stem's stride-8 (and 4) maps."""

    def forward_head(self, tokens: torch.Tensor, grid: tuple[int, int],
                     assign: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Decode tokens (dense or reduced) with the skips of the same forward pass."""
        if not getattr(self.decoder, 'uses_skip', False):
            return self.decoder(tokens, grid, assign)
        stages = self.encoder.patch_embed.proj
        return self.decoder(tokens, grid, assign, skip=stages.skip, fine=stages.fine)


def build_hybrid(num_classes: int, img_size: Sequence[int], embed_dim: int = 192,
                 depth: int = 6, num_heads: int = 3, mlp_ratio: float = 4.0,
                 conv_widths: Sequence[int] = (16, 24, 48, 96),
                 conv_depths: Sequence[int] = (0, 1, 2, 2), conv_expand: int = 4,
                 decoder: str = 'skip', decoder_args: Optional[dict[str, Any]] = None,
                 stem: str = 'hybrid', pretrained: bool = False, drop_path_rate: float = 0.1,
                 reduction: Optional[dict[str, Any]] = None, **encoder_args: Any
                 ) -> HybridSegmenter:
    """Build a hybrid: conv stages, ``depth`` ViT blocks at stride 16, a decoder, a reduction.

    ``pretrained=True`` loads timm's ImageNet ViT-Ti blocks that fit (non-strict: the stem is
    new, and a shallower or narrower transformer keeps only matching tensors).
    """
    from vit_seg_train.reduction.wiring import attach_reduction

    if stem != 'hybrid':
        raise KeyError(f'the hybrid family has its own stem (stem: hybrid), got {stem!r}')
    if decoder not in DECODERS:
        raise KeyError(f'unknown decoder {decoder!r}; known: {sorted(DECODERS)}')
    embed = functools.partial(HybridStem, conv_widths=tuple(conv_widths),
                              conv_depths=tuple(conv_depths), conv_expand=conv_expand)
    encoder = timm.create_model(
        'vit_tiny_patch16_224', pretrained=pretrained, pretrained_strict=False,
        img_size=tuple(img_size), num_classes=0, global_pool='', embed_layer=embed,
        embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
        drop_path_rate=drop_path_rate, **encoder_args)
    head = DECODERS[decoder](embed_dim=embed_dim, num_classes=num_classes,
                             skip_channels=encoder.patch_embed.proj.skip_channels,
                             fine_channels=encoder.patch_embed.proj.fine_channels,
                             **(decoder_args or {}))
    return attach_reduction(HybridSegmenter(encoder, head), reduction, tuple(img_size))
