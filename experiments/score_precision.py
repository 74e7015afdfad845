"""Experiment: do token-merge scores computed in INT8 change which tokens merge, and mIoU.

Three versions of the reference model with neighbour merge (w0.6, r0.4) in PyTorch:
FP32; INT8 fake-quantized Linears (``vit_seg_train.fakequant``, min-max, 16 train frames) with the
merge scores in float (the package's design); the same with the scores rounded to INT8.
For each, on the val frames: the fraction of positions whose token (its group of merged
positions) differs from the FP32 model's, and mIoU. Writes a JSON report.

    python -m experiments.score_precision --data ../shared/datasets/camvid \
        --out docs/results/quant/score_precision.json
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from vit_seg_train.checkpoint import load_model
from vit_seg_train.config import card_from_config
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_optimize.export import frames_to_batches
from vit_seg_train.fakequant import calibrate, quantize_model
from vit_seg_train.reduction import ops
from vit_seg_train.reduction.wiring import attach_reduction
from vit_seg_node.core.metrics import ConfusionMatrix
from vit_seg_node.core.io import write_json
from vit_seg_node.core.processing import fit_geometry, restore_labels

SPEC = {'policy': 'neighbor', 'window_first': 0.6, 'ratio': 0.4, 'locations': [1, 2, 5]}


def groups_of(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Return, per position, the index of the first position sharing its final token."""
    captured = {}
    orig = ops.TokenState.restore

    def spy(self):
        captured['assign'] = self.assign
        return orig(self)
    ops.TokenState.restore = spy
    try:
        with torch.no_grad():
            model(x)
    finally:
        ops.TokenState.restore = orig
    a = captured['assign'][0]
    first = torch.full((int(a.max()) + 1,), a.numel(), dtype=torch.long)
    first = first.scatter_reduce(0, a, torch.arange(a.numel()), reduce='amin')
    return first[a]


def main() -> None:
    """Run the experiment."""
    ap = argparse.ArgumentParser()
    ap.add_argument('--checkpoint', default='training/reference/camvid_vit_tiny/model.safetensors')
    ap.add_argument('--data', required=True)
    ap.add_argument('--limit', type=int, default=101)
    ap.add_argument('--out', required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    base, cfg = load_model(a.checkpoint)
    card = card_from_config(cfg, 'x')
    train = SegmentationDataset(a.data, 'train', cache=False)
    calib = [torch.from_numpy(b) for b in frames_to_batches(
        [train.load(i)[0] for i in range(0, len(train), max(1, len(train) // 16))], card)]
    variants = {}
    fp32 = attach_reduction(copy.deepcopy(base), SPEC, tuple(cfg['model']['img_size']))
    variants['fp32'] = fp32
    q = copy.deepcopy(base)
    quantize_model(q)
    calibrate(q, calib)
    size = tuple(cfg['model']['img_size'])
    variants['int8_blocks_float_scores'] = attach_reduction(q, SPEC, size)
    q8 = copy.deepcopy(q)
    variants['int8_blocks_int8_scores'] = attach_reduction(
        q8, {**SPEC, 'score_int8': True}, tuple(cfg['model']['img_size']))
    val = SegmentationDataset(a.data, 'val', cache=False)
    cms = {k: ConfusionMatrix(card.num_classes, card.ignore_index) for k in variants}
    changed = {k: [] for k in variants}
    for i in range(min(a.limit, len(val))):
        img, lbl = val.load(i)
        x = torch.from_numpy(frames_to_batches([img], card)[0])
        geo = fit_geometry(img.shape[0], img.shape[1], card.input_height, card.input_width,
                           card.resize)
        ref_groups = groups_of(variants['fp32'], x)
        for k, m in variants.items():
            with torch.no_grad():
                pred = m(x).argmax(1)[0].to(torch.uint8).numpy()
            cms[k].update(restore_labels(pred, geo), lbl)
            changed[k].append(float((groups_of(m, x) != ref_groups).float().mean()))
    report = {'reduction': SPEC, 'frames': min(a.limit, len(val)), 'variants': {
        k: {'miou': cms[k].miou(), 'positions_in_a_different_token': sum(changed[k]) /
            len(changed[k])} for k in variants}}
    write_json(a.out, report)
    print(json.dumps(report, indent=2))


if __name__ == '__main__':
    main()
