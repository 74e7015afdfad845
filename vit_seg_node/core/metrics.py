"""Confusion-matrix segmentation metrics: one implementation for training, replay and benchmark."""

from __future__ import annotations

from typing import Sequence

import numpy as np


class ConfusionMatrix:
    """Accumulates a ``num_classes`` x ``num_classes`` confusion matrix (rows: ground truth).

    Pixels whose ground truth is ``ignore_index`` (or any id outside ``0..num_classes-1``) are not
    counted. Predictions outside the class range count as wrong for their ground-truth row.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes = int(num_classes)
        self.ignore_index = int(ignore_index)
        self.matrix = np.zeros((self.num_classes, self.num_classes + 1), np.int64)

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add one prediction / ground-truth pair (same shape, integer class ids)."""
        pred = np.asarray(pred)
        target = np.asarray(target)
        if pred.shape != target.shape:
            raise ValueError(f'prediction {pred.shape} and ground truth {target.shape} differ')
        t = target.astype(np.int64).ravel()
        p = pred.astype(np.int64).ravel()
        keep = (t >= 0) & (t < self.num_classes) & (t != self.ignore_index)
        t, p = t[keep], p[keep]
        p = np.where((p >= 0) & (p < self.num_classes), p, self.num_classes)
        n = self.num_classes + 1
        self.matrix += np.bincount(t * n + p, minlength=self.num_classes * n).reshape(
            self.num_classes, n)

    def merge(self, other: 'ConfusionMatrix') -> None:
        """Add another matrix of the same shape (for distributed evaluation)."""
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """Return per-class IoU; NaN for a class absent from both prediction and ground truth."""
        m = self.matrix
        tp = np.diag(m[:, :self.num_classes]).astype(np.float64)
        gt = m.sum(axis=1)
        pred = m[:, :self.num_classes].sum(axis=0)
        union = gt + pred - tp
        with np.errstate(divide='ignore', invalid='ignore'):
            return np.where(union > 0, tp / np.maximum(union, 1), np.nan)

    def miou(self) -> float:
        """Mean IoU over classes that occur in prediction or ground truth."""
        iou = self.iou()
        return float(np.nanmean(iou)) if np.any(~np.isnan(iou)) else float('nan')

    def pixel_accuracy(self) -> float:
        """Correct pixels over counted pixels."""
        total = self.matrix.sum()
        return float(np.trace(self.matrix[:, :self.num_classes]) / total) if total else float('nan')

    def summary(self, class_names: Sequence[str]) -> dict:
        """Return the JSON-ready report used by eval, replay and the benchmark."""
        iou = self.iou()
        return {
            'miou': self.miou(),
            'per_class_iou': {str(n): (None if np.isnan(v) else float(v))
                              for n, v in zip(class_names, iou)},
            'pixel_acc': self.pixel_accuracy(),
        }
