"""Quantized forms of exported models: INT8 for ONNX Runtime on a CPU, Q/DQ for TensorRT.

Library choice: ONNX Runtime's quantization tools do both forms we need from one FP32 ONNX file --
dynamic INT8 MatMuls (the fastest INT8 form on this CPU, measured in the benchmark) and static
QDQ with symmetric per-channel weights and symmetric activations (zero point 0), which is the
explicit-quantization form TensorRT builds strongly typed engines from. ``nodes_to_exclude``
expresses a mixed plan directly: excluded MatMuls stay FP32 with no Q/DQ around them. NVIDIA's
ModelOpt would place Q/DQ the same way for TensorRT but is a large CUDA-oriented dependency; it
is the natural next step on a GPU machine.

Which operators a plan quantizes: ``vit_seg_optimize.plan``; how a plan is measured and
allocated: ``vit_seg_optimize.sensitivity``; FP16 typing: ``vit_seg_optimize.float16``.

INT8 forms on the CPU (the benchmark measures them): Linear layers dynamic (weights per channel,
activations quantized at run time, ``DynamicQuantizeMatMul``); activation-activation products
static U8S8 from calibration frames (``vit_seg_optimize.static_int8``: the only INT8 form of
them that is faster than FP32 here); the stem's convolutions static U8S8 Q/DQ (``QLinearConv``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
import tempfile
from typing import Iterable, Iterator, Optional

import numpy as np

from vit_seg_node.core.errors import UserError
from vit_seg_optimize.float16 import to_float16
from vit_seg_optimize.static_int8 import s8_limit
from vit_seg_optimize.onnx_io import load_onnx
from vit_seg_optimize.plan import (group_precisions, is_activation_group, node_groups,
                                   plan_int8_nodes, QUANT_OPS, resolve_plan, STATIC_CONV_GROUPS)


class _QuantizerAdvice(logging.Filter):
    """Drop ONNX Runtime quantizer's advice lines (pre-processing, already quantized?).

    They are logged through the root logger on every call and say nothing about this
    package's models (their shapes are static and inferred); its errors still pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or \
            f'onnxruntime{os.sep}quantization' not in record.pathname


@contextlib.contextmanager
def quiet_quantizer() -> Iterator[None]:
    """Silence ONNX Runtime quantizer's advice while the block runs."""
    f = _QuantizerAdvice()
    logging.getLogger().addFilter(f)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(f)


def quantize_dynamic_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                          nodes: Optional[Iterable[str]] = None) -> Path:
    """Write dynamic INT8 (ONNX Runtime's CPU form) of the weight layers ``nodes``."""
    from onnxruntime.quantization import quantize_dynamic, QuantType

    if nodes is None:
        nodes = plan_int8_nodes(fp32_path, {'default': 'int8'})
    nodes = list(nodes)
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    if not nodes:   # nothing to quantize: an identical copy
        Path(out_path).write_bytes(Path(fp32_path).read_bytes())
        return Path(out_path)
    with quiet_quantizer():
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                         op_types_to_quantize=list(QUANT_OPS), nodes_to_quantize=nodes,
                         reduce_range=s8_limit() < 127)
    return Path(out_path)


def activation_ranges(fp32_path: str | os.PathLike, nodes: Iterable[str],
                      calibration: list[np.ndarray], input_name: str) -> dict:
    """Return calibrated ranges for the static INT8 of activation products ``nodes``."""
    from vit_seg_optimize.static_int8 import calibration_tensors, tensor_ranges

    return tensor_ranges(fp32_path, calibration_tensors(fp32_path, nodes), calibration,
                         input_name)


def quantize_mixed(fp32_path: str | os.PathLike, out_path: str | os.PathLike, plan: dict,
                   calibration: Optional[list[np.ndarray]] = None, input_name: str = 'image',
                   ranges: Optional[dict] = None, convs_model: Optional[Path] = None) -> Path:
    """Apply a precision plan in the CPU deployment form.

    Linear layers: dynamic INT8. The stem's convolutions, where the plan makes them INT8: static
    U8S8 Q/DQ (``QLinearConv`` chains; ``quantize_static_convs``). Attention's products and the
    token scoring: static U8S8 (``vit_seg_optimize.static_int8``). The static forms are
    calibrated on
    ``calibration`` batches (the products may instead take ``ranges`` from
    ``activation_ranges``, the stem a ``convs_model`` from ``quantize_static_convs`` on the
    same file: calibrated once when many plans are built, as in ``sensitivity``).
    """
    from vit_seg_optimize.static_int8 import quantize_activation_matmuls

    groups = node_groups(fp32_path)
    prec = resolve_plan(groups, plan)
    int8 = {g: names for g, names in groups.items() if prec[g] == 'int8'}
    convs = [n for g, names in int8.items() if g in STATIC_CONV_GROUPS for n in names]
    products = [n for g, names in int8.items() if is_activation_group(g) for n in names]
    weights = [n for g, names in int8.items()
               if not is_activation_group(g) and g not in STATIC_CONV_GROUPS for n in names]
    if ((convs and convs_model is None) or (products and ranges is None)) and not calibration:
        raise UserError('this precision plan makes calibrated operators INT8 (the stem, '
                        'attention\'s products or the token scoring): give calibration frames '
                        '(--calib DIR)')
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(fp32_path)
        if convs:
            src = convs_model or quantize_static_convs(src, Path(tmp) / 'convs.onnx', convs,
                                                       calibration, input_name)
        if not products:
            return quantize_dynamic_int8(src, out_path, weights)
        if ranges is None:
            ranges = activation_ranges(fp32_path, products, calibration, input_name)
        mid = quantize_dynamic_int8(src, Path(tmp) / 'weights.onnx', weights)
        return quantize_activation_matmuls(mid, out_path, products, ranges)


def quantize_static_convs(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                          convs: list[str], calibration: list[np.ndarray],
                          input_name: str = 'image') -> Path:
    """Write static U8S8 Q/DQ around ``convs`` and the ReLUs that follow them.

    uint8 activations (asymmetric, min-max), int8 per-channel weights: ONNX Runtime runs the
    chain as ``QLinearConv`` with the ReLUs fused, one Quantize in front and one Dequantize
    after. Dynamic ``ConvInteger`` is slower than FP32 on the CPUs measured
    (``vit-seg sensitivity``).
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, quantize_static,
                                          QuantType)

    if not calibration:
        raise UserError('static INT8 of the stem needs calibration frames')
    g = load_onnx(fp32_path, weights=False).graph
    produced_by_conv = {n.output[0] for n in g.node if n.name in set(convs)}
    relus = [n.name for n in g.node if n.op_type == 'Relu' and n.input[0] in produced_by_conv]
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with quiet_quantizer():
        quantize_static(
            str(fp32_path), str(out_path), _FrameReader(input_name, calibration),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=['Conv', 'Relu'],
            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=list(convs) + relus,
            reduce_range=s8_limit() < 127,
            extra_options={'ActivationSymmetric': False, 'WeightSymmetric': True})
    return Path(out_path)


class _FrameReader:
    """Calibration batches for ONNX Runtime's static quantization."""

    def __init__(self, input_name: str, batches: list[np.ndarray]) -> None:
        self._it = iter([{input_name: b} for b in batches])

    def get_next(self):
        return next(self._it, None)


def quantize_qdq(fp32_path: str | os.PathLike, out_path: str | os.PathLike,
                 calibration: list[np.ndarray], input_name: str = 'image',
                 method: str = 'minmax', plan: Optional[dict] = None) -> Path:
    """Write static INT8 in QDQ form for TensorRT: symmetric, per-channel, zero points 0.

    ``method``: ``minmax``, ``percentile`` (99.999th) or ``entropy``. Only the plan's INT8
    groups get Q/DQ nodes; by default (``FLOAT_BY_DEFAULT``) attention's activation products, the
    token scoring and the stem stay float -- ModelOpt's default for TensorRT (LayerNorm and the
    MatMul-Softmax-MatMul core unquantized), and the arithmetic of ``vit_seg_train.fakequant``.
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, quantize_static,
                                          QuantType)

    methods = {'minmax': CalibrationMethod.MinMax, 'percentile': CalibrationMethod.Percentile,
               'entropy': CalibrationMethod.Entropy}
    if method not in methods:
        raise UserError(f'calibration method must be one of {sorted(methods)}')
    if not calibration:
        raise UserError('static quantization needs calibration frames')
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with quiet_quantizer():
        quantize_static(
            str(fp32_path), str(out_path), _FrameReader(input_name, calibration),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS),
            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QInt8,
            calibrate_method=methods[method],
            nodes_to_quantize=plan_int8_nodes(fp32_path, plan or {'default': 'int8'}),
            extra_options={'ActivationSymmetric': True, 'WeightSymmetric': True,
                           # Q/DQ only on the inputs of the quantized operators, none on their
                           # outputs: what TensorRT fuses into INT8 GEMMs/convolutions
                           'OpTypesToExcludeOutputQuantization': list(QUANT_OPS)})
    return Path(out_path)


QUANT_FORMATS = ('dynamic', 'qdq', 'qdq-fp16', 'fp16')


def precision_block(fp32_path: str | os.PathLike, form: str, plan: dict,
                    calibration: str) -> dict:
    """Return the model card's ``precision`` block: the one builder for quantize and bench.

    ``form``: one of ``QUANT_FORMATS``; ``plan``: the precision plan applied; ``calibration``:
    what the static parts were calibrated on (``'none'`` when nothing was).
    """
    if form == 'fp16':
        return {'default': 'fp16', 'form': form, 'plan': {'default': 'fp16'}, 'groups': {},
                'calibration': 'none', 'float': 'fp16'}
    groups = group_precisions(fp32_path, plan)
    kinds = set(groups.values()) or {plan.get('default', 'int8')}
    default = kinds.pop() if len(kinds) == 1 else 'mixed'
    return {'default': default, 'form': form, 'plan': plan, 'groups': groups,
            'calibration': calibration, 'float': 'fp16' if form.endswith('fp16') else 'fp32'}


def write_quantized(fp32_path: str | os.PathLike, out_path: str | os.PathLike, form: str,
                    plan: Optional[dict] = None, calibration: Optional[list] = None,
                    calibration_name: str = '', method: str = 'minmax', command: str = ''):
    """Write the ``form`` of an FP32 model with its card; return the card.

    ``dynamic``: INT8 for ONNX Runtime on a CPU under ``plan`` (static parts need
    ``calibration`` batches); ``qdq``: static INT8 Q/DQ for TensorRT; ``qdq-fp16``: the same with
    the float parts typed FP16; ``fp16``: FP16 without INT8. The float model's measured metrics
    are cleared: measure this one (``vit-seg eval --model OUT --record``).
    """
    from vit_seg_node.core.card import load_card, save_card

    if form not in QUANT_FORMATS:
        raise UserError(f'unknown format {form!r}; choose one of {QUANT_FORMATS}')
    card = load_card(fp32_path)
    plan = plan or {'default': 'int8'}
    if form == 'dynamic':
        quantize_mixed(fp32_path, out_path, plan, calibration, card.input_name)
        calib = f'{len(calibration)} {calibration_name} frames (static INT8 parts)' \
            if calibration else 'none'
    elif form == 'fp16':
        to_float16(fp32_path, out_path)
        calib = 'none'
    else:
        if not calibration:
            raise UserError(f'--format {form} needs calibration frames (--calib DIR)')
        with tempfile.TemporaryDirectory() as tmp:
            qdq = Path(tmp) / 'qdq.onnx' if form == 'qdq-fp16' else Path(out_path)
            quantize_qdq(fp32_path, qdq, calibration, card.input_name, method, plan)
            if form == 'qdq-fp16':
                to_float16(qdq, out_path)
        calib = method
    card.precision = precision_block(fp32_path, form, plan, calib)
    card.command = command or card.command
    card.metrics = {}
    save_card(card, out_path)
    return card
