"""Quantization of exported models: per-group sensitivity, a precision plan, INT8 exports.

Library choice: ONNX Runtime's quantization tools do both forms we need from one FP32 ONNX file --
dynamic INT8 MatMuls (the fastest INT8 form on this CPU, measured in the benchmark) and static
QDQ with symmetric per-channel weights and symmetric activations (zero point 0), which is the
explicit-quantization form TensorRT builds strongly typed engines from. ``nodes_to_exclude``
expresses a mixed plan directly: excluded MatMuls stay FP32 with no Q/DQ around them. NVIDIA's
ModelOpt would place Q/DQ the same way for TensorRT but is a large CUDA-oriented dependency; it
is the natural next step on a GPU machine.

Groups: the MatMul/Gemm nodes of each encoder block, of the decoder, and the rest; the precision
plan assigns ``int8`` or ``fp32`` per group.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
import re
import tempfile
from typing import Iterable, Optional

import numpy as np

from vit_seg_node.errors import UserError

QUANT_OPS = ('MatMul', 'Gemm')


def node_groups(model_path: str | os.PathLike) -> dict[str, list[str]]:
    """Return ``group -> [MatMul/Gemm node names]`` of an exported model."""
    import onnx

    groups: dict[str, list[str]] = {}
    for node in onnx.load(str(model_path), load_external_data=False).graph.node:
        if node.op_type not in QUANT_OPS:
            continue
        # exported scope names: '/blocks/blocks.3/...' (encoder; '/reduction/blocks.3/...' when
        # a token reduction runs the blocks), '/decoder/...' (decoder)
        m = re.search(r'/blocks\.(\d+)/', node.name)
        if '/decoder/' in node.name:
            g = 'decoder'
        elif m:
            g = f'encoder.blocks.{int(m.group(1)):02d}'
        else:
            g = 'other'
        groups.setdefault(g, []).append(node.name)
    return dict(sorted(groups.items()))


def activation_matmuls(model_path: str | os.PathLike) -> list[str]:
    """Return MatMul nodes with no constant operand (attention's QK^T and AV, token scores)."""
    import onnx

    g = onnx.load(str(model_path), load_external_data=False).graph
    consts = {i.name for i in g.initializer}
    consts |= {o for n in g.node if n.op_type == 'Constant' for o in n.output}
    return [n.name for n in g.node
            if n.op_type == 'MatMul' and not any(i in consts for i in n.input)]


def plan_fp32_nodes(model_path: str | os.PathLike, plan: dict) -> list[str]:
    """Return the node names a plan keeps in FP32."""
    groups = node_groups(model_path)
    unknown = set(plan.get('groups', {})) - set(groups)
    if unknown:
        raise UserError(f'precision plan names unknown groups: {sorted(unknown)}')
    default = plan.get('default', 'int8')
    return [n for g, names in groups.items()
            if plan.get('groups', {}).get(g, default) == 'fp32' for n in names]


def quantize_dynamic_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                          exclude: Iterable[str] = ()) -> Path:
    """Write dynamic INT8 MatMuls (ONNX Runtime's CPU form); ``exclude`` stays FP32."""
    from onnxruntime.quantization import quantize_dynamic, QuantType

    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                     op_types_to_quantize=list(QUANT_OPS), nodes_to_exclude=list(exclude))
    return Path(out_path)


def quantize_mixed(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                   plan: dict) -> Path:
    """Apply a precision plan with dynamic INT8 (the CPU deployment form)."""
    return quantize_dynamic_int8(fp32_path, out_path, plan_fp32_nodes(fp32_path, plan))


class _FrameReader:
    """Calibration batches for ONNX Runtime's static quantization."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self._it = iter([{input_name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def quantize_qdq(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                 calibration: list[np.ndarray], input_name: str = 'image',
                 method: str = 'minmax', plan: Optional[dict] = None,
                 quantize_attention: bool = False) -> Path:
    """Write static INT8 in QDQ form for TensorRT: symmetric, per-channel, zero points 0.

    ``method``: ``minmax``, ``percentile`` (99.999th) or ``entropy``. Groups the plan keeps in
    FP32 get no Q/DQ nodes. Activation-activation MatMuls (attention's QK^T and AV, the token
    similarity scores) stay in float unless ``quantize_attention`` -- ModelOpt's default for
    TensorRT, and the arithmetic of ``training.fakequant``.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, quantize_static,
                                          QuantType)

    methods = {'minmax': CalibrationMethod.MinMax, 'percentile': CalibrationMethod.Percentile,
               'entropy': CalibrationMethod.Entropy}
    if method not in methods:
        raise UserError(f'calibration method must be one of {sorted(methods)}')
    if not calibration:
        raise UserError('static quantization needs calibration frames')
    exclude = plan_fp32_nodes(fp32_path, plan) if plan else []
    if not quantize_attention:
        exclude += activation_matmuls(fp32_path)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    quantize_static(
        str(fp32_path), str(out_path), _FrameReader(input_name, calibration),
        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS), per_channel=True,
        weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
        calibrate_method=methods[method], nodes_to_exclude=exclude,
        extra_options={'ActivationSymmetric': True, 'WeightSymmetric': True})
    return Path(out_path)


def sensitivity(fp32_path: str | os.PathLike, card, data: str, split: str = 'val',
                limit: int = 20, threads: int = 2, runs: int = 20) -> dict:
    """Quantize one group at a time (dynamic INT8); measure mIoU drop and latency gain.

    Returns ``{'baseline': {...}, 'groups': {group: {'miou', 'miou_drop', 'latency_ms',
    'latency_gain_ms'}}}``, all measured on ``limit`` frames of ``split``.
    """
    from training.bench import evaluate_onnx, session, time_session

    groups = node_groups(fp32_path)
    feed = {card.input_name: np.random.default_rng(0).standard_normal(
        (1, 3, card.input_height, card.input_width)).astype(np.float32)}

    def measure(path: Path) -> tuple[float, float]:
        miou = evaluate_onnx(path, card, data, split, threads, limit)['miou']
        return miou, time_session(session(path, threads), feed, 3, runs)['p50']
    base_miou, base_lat = measure(Path(fp32_path))
    out = {'baseline': {'miou': base_miou, 'latency_ms': base_lat, 'frames': limit},
           'groups': {}}
    with tempfile.TemporaryDirectory() as tmp:
        for g, names in groups.items():
            others = [n for h, ns in groups.items() if h != g for n in ns]
            q = quantize_dynamic_int8(fp32_path, Path(tmp) / f'{g}.onnx', exclude=others)
            miou, lat = measure(q)
            out['groups'][g] = {'miou': miou, 'miou_drop': base_miou - miou, 'latency_ms': lat,
                                'latency_gain_ms': base_lat - lat, 'nodes': len(names)}
    return out


def allocate(sens: dict, budget: float) -> dict:
    """Greedy bit allocation: INT8 for the groups with the best latency gain per mIoU lost.

    Groups are taken in order of measured gain per unit of measured drop (free groups first) while
    the summed drop stays within ``budget`` (a fraction, 0.005 = 0.5 point); the rest stay FP32.
    The sum of single-group drops is an estimate: the returned plan must be measured again.
    """
    items = sorted(sens['groups'].items(),
                   key=lambda kv: -kv[1]['latency_gain_ms'] / max(kv[1]['miou_drop'], 1e-4))
    plan, spent = {}, 0.0
    for g, s in items:
        drop = max(s['miou_drop'], 0.0)
        if spent + drop <= budget:
            plan[g] = 'int8'
            spent += drop
        else:
            plan[g] = 'fp32'
    return {'default': 'fp32', 'groups': dict(sorted(plan.items())), 'budget': budget,
            'estimated_drop': spent}


def save_json(obj: dict, path: str | os.PathLike) -> None:
    """Write a JSON document atomically."""
    from vit_seg_node.runtime.card import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')
