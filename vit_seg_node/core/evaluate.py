"""Score any predictor on (image, label) pairs through the deployment pre/post-processing.

Resize to the network input (``processing``), predict, take labels, resize the label map back
to the native resolution with nearest neighbour, accumulate one confusion matrix (``metrics``).
Training (batched, PyTorch), ``vit-seg eval``, the benchmark and replay all report through it or
through the same steps.
"""

from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np

from vit_seg_node.core.card import ModelCard
from vit_seg_node.core.metrics import ConfusionMatrix
from vit_seg_node.core.processing import model_input, resize_to_input, restore_labels, to_labels


def evaluate_predictor(predict: Callable[[np.ndarray], np.ndarray],
                       pairs: Iterable[tuple[np.ndarray, np.ndarray]], card: ModelCard,
                       limit: Optional[int] = None) -> dict:
    """Score ``predict`` (the card's input batch -> logits or labels) on (image, label) pairs.

    A card with a batch of N gets each frame N times; the first output is scored.
    """
    cm = ConfusionMatrix(card.num_classes, card.ignore_index)
    n = 0
    for image, label in pairs:
        if limit is not None and n >= limit:
            break
        resized, geo = resize_to_input(image, card)
        x = model_input(resized[None], card)
        out = predict(np.repeat(x, card.batch, 0) if card.batch > 1 else x)
        cm.update(restore_labels(to_labels(out, card.output_kind)[0], geo, card.output_stride),
                  label)
        n += 1
    report = cm.summary(card.classes)
    report['num_images'] = n
    return report
