"""The accuracy ceiling of predicting at a coarse output stride.

``python experiments/resolution_ceiling.py --data ../shared/datasets/camvid --split heldout
--json docs/results/heldout/resolution_ceiling.json``: for each stride, every label map (at the
network size) is turned into per-class fractions on the coarse grid (area average of the one-hot
labels), upsampled bilinearly to full size and arg-maxed: what a perfect predictor on that grid
with the models' bilinear output head would score. A ViT with 16-pixel patches decodes on the
stride-16 grid; a mobile CNN's head fuses stride-8 features.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import cv2
import numpy as np

from vit_seg_node.core.card import CAMVID_CLASSES
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.core.io import write_json


def ceiling(labels: list[np.ndarray], stride: int, size: tuple[int, int],
            num_classes: int) -> np.ndarray:
    """Return the per-class IoU of the ideal stride-``stride`` predictor on ``labels``."""
    h, w = size
    inter, union = np.zeros(num_classes), np.zeros(num_classes)
    for lab in labels:
        lab = cv2.resize(lab, (w, h), interpolation=cv2.INTER_NEAREST)
        onehot = (lab[..., None] == np.arange(num_classes)).astype(np.float32)
        coarse = cv2.resize(onehot, (w // stride, h // stride), interpolation=cv2.INTER_AREA)
        pred = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR).argmax(-1)
        valid = lab < num_classes
        for k in range(num_classes):
            p, g = (pred == k) & valid, lab == k
            inter[k] += np.count_nonzero(p & g)
            union[k] += np.count_nonzero(p | g)
    return inter / np.maximum(union, 1)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', required=True)
    ap.add_argument('--split', default='heldout')
    ap.add_argument('--strides', type=int, nargs='+', default=[4, 8, 16])
    ap.add_argument('--size', type=int, nargs=2, default=[352, 480], help='network H W')
    ap.add_argument('--json')
    a = ap.parse_args(argv)
    ds = SegmentationDataset(a.data, a.split, None, cache=False)
    labels = [ds.load(i)[1] for i in range(len(ds))]
    k = len(CAMVID_CLASSES)
    out = {'split': a.split, 'frames': len(labels), 'size': a.size, 'strides': {}}
    for s in a.strides:
        iou = ceiling(labels, s, tuple(a.size), k)
        out['strides'][str(s)] = {'miou': float(iou.mean()),
                                  'per_class_iou': dict(zip(CAMVID_CLASSES, map(float, iou)))}
        print(f'stride {s:2d}: mIoU {iou.mean():.3f}  ' + ' '.join(
            f'{c} {v:.2f}' for c, v in zip(CAMVID_CLASSES, iou)))
    if a.json:
        write_json(a.json, out)
    return 0


if __name__ == '__main__':
    sys.exit(main())
