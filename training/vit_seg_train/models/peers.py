"""Peer models from their own libraries' configs, for the benchmark and as CNN teachers.

Built with random weights unless ``pretrained=True`` (torchvision's COCO/VOC weights; needs the
network). Each returns a module ``x (N,3,H,W) -> logits (N,C,H,W)`` like ``Segmenter``.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn as nn

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
