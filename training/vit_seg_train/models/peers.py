"""Peer models from their own libraries' configs, for the benchmark and as CNN teachers.

Built with random weights unless ``pretrained=True`` (torchvision's COCO/VOC weights; needs the
network). Each returns a module ``x (N,3,H,W) -> logits (N,C,H,W)`` like ``Segmenter``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

from vit_seg_node.core.errors import UserError
from vit_seg_train.models.registry import register_model


class _OutLogits(nn.Module):
    """Unwrap torchvision's ``{'out': logits}`` dictionary."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits at the input resolution."""
        return self.net(x)['out']


@register_model
def lraspp_mobilenet_v3_large(num_classes: int, img_size: Sequence[int] = (352, 480),
                              pretrained: bool = False, **unused: Any) -> nn.Module:
    """LRASPP with a MobileNetV3-Large backbone (torchvision), any input size."""
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large as build

    weights = 'DEFAULT' if pretrained else None
    net = build(weights=weights, weights_backbone=None, num_classes=num_classes)
    return _OutLogits(net)


class _SegformerLogits(nn.Module):
    """Unwrap transformers' output and upsample its 1/4-resolution logits to the input size."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the logits at the input resolution."""
        logits = self.net(pixel_values=x).logits
        return nn.functional.interpolate(logits, size=x.shape[-2:], mode='bilinear',
                                         align_corners=False)


@register_model
def segformer_b0(num_classes: int, img_size: Sequence[int] = (352, 480),
                 pretrained: bool = False, **unused: Any) -> nn.Module:
    """SegFormer-B0 from transformers' ``SegformerConfig`` defaults (MiT-B0).

    Any input size divisible by 32; ``pretrained`` loads the ImageNet MiT-B0 encoder
    (``nvidia/mit-b0``, needs the network).

    Needs ``transformers`` (optional: ``pip install transformers==5.24.0``).
    """
    try:
        from transformers import SegformerConfig, SegformerForSemanticSegmentation
    except ImportError as exc:
        raise UserError('segformer_b0 needs the transformers package: '
                        'pip install transformers==5.24.0') from exc

    if pretrained:
        net = SegformerForSemanticSegmentation.from_pretrained('nvidia/mit-b0',
                                                               num_labels=num_classes)
    else:
        net = SegformerForSemanticSegmentation(SegformerConfig(num_labels=num_classes))
    return _SegformerLogits(net)
