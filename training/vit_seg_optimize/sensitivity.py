"""Per-group INT8 sensitivity: what each group costs in mIoU and saves in latency, in context."""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Optional

import numpy as np

from vit_seg_node.backends.onnxruntime_backend import random_feed
from vit_seg_optimize.plan import is_activation_group, node_groups, STATIC_CONV_GROUPS
from vit_seg_optimize.quant import activation_ranges, quantize_mixed, quantize_static_convs


def sensitivity(fp32_path: str | os.PathLike, card, data: str, split: str = 'val',
                limit: int = 20, threads: int = 2, pairs: int = 60,
                calibration: Optional[list[np.ndarray]] = None, spinning: bool = True) -> dict:
    """Measure, per group, what INT8 costs in mIoU and what it saves in latency.

    Accuracy: that group alone in INT8 (the CPU form of ``quantize_mixed``), the rest FP32, mIoU
    on ``limit`` frames. Latency: leave-one-out from the model with *every* group in INT8, timed
    interleaved with it (``paired_gain``) -- the group's marginal saving in context. Quantizing
    one block alone is slower than FP32 here (its quantize steps cost more than one block
    gains, while the whole model is faster), so single-group latencies are not additive.
    ``calibration``: batches for the static INT8 of the activation products (from a split other
    than the one scored). Returns ``{'baseline', 'all_int8', 'groups': {group: {'miou',
    'miou_drop', 'latency_gain_ms', 'noise_ms', 'nodes'}}}``.
    """
    from vit_seg_optimize.measure import evaluate_onnx, paired_gain, session

    groups = node_groups(fp32_path)
    products = [n for g, names in groups.items() if is_activation_group(g) for n in names]
    ranges = activation_ranges(fp32_path, products, calibration or [], card.input_name) \
        if products else {}
    feed = random_feed(session(fp32_path, 1))
    everything = {g: 'int8' for g in groups}

    convs_model = None

    def quantized(path: Path, precisions: dict) -> Path:
        return quantize_mixed(fp32_path, path, {'default': 'fp32', 'groups': precisions},
                              calibration, card.input_name, ranges, convs_model)

    def miou(path: Path) -> float:
        return evaluate_onnx(path, card, data, split, threads, limit)['miou']
    base_miou = miou(Path(fp32_path))
    out = {'baseline': {'miou': base_miou, 'frames': limit}, 'groups': {}, 'pairs': pairs}
    with tempfile.TemporaryDirectory() as tmp:
        convs = [n for g in STATIC_CONV_GROUPS for n in groups.get(g, [])]
        if convs:   # the stem's static form, calibrated once for every plan below
            convs_model = quantize_static_convs(fp32_path, Path(tmp) / 'convs.onnx', convs,
                                                calibration or [], card.input_name)
        full = quantized(Path(tmp) / 'all.onnx', everything)
        full_sess = session(full, threads, spinning)
        gain, noise = paired_gain(full_sess, session(fp32_path, threads, spinning), feed, pairs)
        out['all_int8'] = {'miou': miou(full), 'latency_gain_ms': gain, 'noise_ms': noise}
        for g, names in groups.items():
            m = miou(quantized(Path(tmp) / f'{g}.onnx', {g: 'int8'}))
            without = quantized(Path(tmp) / f'{g}.rest.onnx', {**everything, g: 'fp32'})
            gain, noise = paired_gain(full_sess, session(without, threads, spinning), feed, pairs)
            out['groups'][g] = {'miou': m, 'miou_drop': base_miou - m, 'nodes': len(names),
                                'latency_gain_ms': gain, 'noise_ms': noise}
    return out
