"""Evaluation: confusion-matrix mIoU with the deployment pre/post-processing.

Both a PyTorch model and any runtime backend (ONNX Runtime, TensorRT) are scored through the same
path: resize to the network input (``vit_seg_node.runtime.processing``), predict, argmax, resize
the label map back to the native resolution with nearest neighbour, accumulate a confusion matrix.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import torch

from vit_seg_node.runtime.card import ModelCard
from vit_seg_node.runtime.metrics import ConfusionMatrix
from vit_seg_node.runtime.processing import normalize, resize_to_input, restore_labels, \
    to_labels


def evaluate_predictor(predict: Callable[[np.ndarray], np.ndarray],
                       pairs: Iterable[tuple[np.ndarray, np.ndarray]], card: ModelCard,
                       limit: Optional[int] = None) -> dict:
    """Score ``predict`` (NCHW float32 batch -> logits or labels) on (image, label) pairs."""
    cm = ConfusionMatrix(card.num_classes, card.ignore_index)
    n = 0
    for image, label in pairs:
        if limit is not None and n >= limit:
            break
        resized, geo = resize_to_input(image, card)
        out = predict(normalize(resized[None], card))
        cm.update(restore_labels(to_labels(out, card.output_kind)[0], geo), label)
        n += 1
    report = cm.summary(card.classes)
    report['num_images'] = n
    return report


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
