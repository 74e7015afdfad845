"""Batched evaluation of a PyTorch model with the deployment pre/post-processing.

The same path as ``vit_seg_node.core.evaluate`` (which scores any backend): resize to the network
input, predict, argmax, resize the label map back with nearest neighbour, confusion matrix.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from vit_seg_node.core.card import ModelCard
from vit_seg_node.core.metrics import ConfusionMatrix
from vit_seg_node.core.processing import normalize, resize_to_input, restore_labels


@torch.no_grad()
def evaluate_model(model: torch.nn.Module, dataset, card: ModelCard, device: str = 'cpu',
                   batch_size: int = 4, amp_dtype: Optional[torch.dtype] = None) -> dict:
    """Score a PyTorch model on a raw ``SegmentationDataset`` (batched, same result as batch 1)."""
    model.eval()
    cm = ConfusionMatrix(card.num_classes, card.ignore_index)
    for start in range(0, len(dataset), batch_size):
        items = [dataset.load(i) for i in range(start, min(start + batch_size, len(dataset)))]
        inputs = [resize_to_input(img, card) for img, _ in items]
        x = torch.from_numpy(normalize(np.stack([r for r, _ in inputs]), card)).to(device)
        with torch.autocast(device_type=device.split(':')[0], dtype=amp_dtype or torch.float32,
                            enabled=amp_dtype is not None):
            logits = model(x)
        labels = logits.float().argmax(1).to(torch.uint8).cpu().numpy()
        for (img, lbl), (_, geo), pred in zip(items, inputs, labels):
            cm.update(restore_labels(pred, geo), lbl)
    report = cm.summary(card.classes)
    report['num_images'] = len(dataset)
    return report
