"""Is the missing recall of rare classes a decision bias? Post-hoc logit adjustment.

``python experiments/logit_adjustment.py --checkpoint
training/reference/heldout_vit_tiny_cpu_crops/model.safetensors --data ../shared/datasets/camvid
--json docs/results/heldout/logit_adjustment.json``: the model's logits on the held-out drive,
arg-maxed after subtracting ``tau * log(prior)`` (the class pixel frequencies of the ``fit``
frames; Menon et al., "Long-tail learning via logit adjustment"), for a range of ``tau``. If rare
classes were recognised but out-voted by frequent ones, some ``tau > 0`` would raise their IoU
and the mIoU; if the features do not separate them, it only moves errors around.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import numpy as np

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.core.io import write_json
from vit_seg_node.core.metrics import ConfusionMatrix
from vit_seg_node.core.processing import normalize, resize_to_input, restore_labels

TAUS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)


def class_prior(labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Return each class's share of the labelled pixels (ignored pixels left out)."""
    counts = np.zeros(num_classes)
    for lab in labels:
        valid = lab[lab < num_classes]
        counts += np.bincount(valid.ravel(), minlength=num_classes)
    return counts / max(counts.sum(), 1)


def adjusted_labels(logits: np.ndarray, prior: np.ndarray, tau: float) -> np.ndarray:
    """Return argmax over classes of ``logits - tau * log(prior)`` (logits: C x H x W)."""
    bias = tau * np.log(np.maximum(prior, 1e-12))
    return (logits - bias[:, None, None]).argmax(0).astype(np.uint8)


def main(argv: Optional[list[str]] = None) -> int:
    """Score the checkpoint on the held-out drive for every ``tau``."""
    import torch

    from vit_seg_train.checkpoint import load_model
    from vit_seg_train.config import card_from_config

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--checkpoint', required=True)
    ap.add_argument('--data', required=True)
    ap.add_argument('--split', default='heldout')
    ap.add_argument('--prior-split', default='fit')
    ap.add_argument('--json')
    a = ap.parse_args(argv)
    model, cfg = load_model(a.checkpoint)
    model.eval()
    card = card_from_config(cfg, 'logit_adjustment')
    fit = SegmentationDataset(a.data, a.prior_split, None, cache=False)
    prior = class_prior([fit.load(i)[1] for i in range(len(fit))], card.num_classes)
    ds = SegmentationDataset(a.data, a.split, None, cache=False)
    cms = {t: ConfusionMatrix(card.num_classes, card.ignore_index) for t in TAUS}
    with torch.no_grad():
        for i in range(len(ds)):
            image, label = ds.load(i)
            resized, geo = resize_to_input(image, card)
            logits = model(torch.from_numpy(normalize(resized[None], card)))[0].float().numpy()
            for t in TAUS:
                cms[t].update(restore_labels(adjusted_labels(logits, prior, t), geo), label)
    rows = {str(t): cms[t].summary(card.classes) for t in TAUS}
    for t, s in rows.items():
        print(f'tau {t}: mIoU {s["miou"]:.4f}  ' + '  '.join(
            f'{k} {v:.2f}' for k, v in s['per_class_iou'].items() if v is not None))
    if a.json:
        write_json(a.json, {'command': 'python experiments/logit_adjustment.py ' + ' '.join(
            sys.argv[1:] if argv is None else argv), 'checkpoint': a.checkpoint,
            'split': a.split, 'prior_split': a.prior_split,
            'prior': dict(zip(card.classes, prior.tolist())), 'by_tau': rows})
    return 0


if __name__ == '__main__':
    sys.exit(main())
