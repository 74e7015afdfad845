"""Quantization of exported models: per-group sensitivity, a precision plan, INT8 exports.

Library choice: ONNX Runtime's quantization tools do both forms we need from one FP32 ONNX file --
dynamic INT8 MatMuls (the fastest INT8 form on this CPU, measured in the benchmark) and static
QDQ with symmetric per-channel weights and symmetric activations (zero point 0), which is the
explicit-quantization form TensorRT builds strongly typed engines from. ``nodes_to_exclude``
expresses a mixed plan directly: excluded MatMuls stay FP32 with no Q/DQ around them. NVIDIA's
ModelOpt would place Q/DQ the same way for TensorRT but is a large CUDA-oriented dependency; it
is the natural next step on a GPU machine.

Groups: the Linear layers (MatMul/Gemm with a weight) of each encoder block and of the decoder,
attention's two activation products (``attention.scores`` = QK^T, ``attention.values`` = PV),
the token scoring, the conv stem; the precision plan assigns ``int8`` or ``fp32`` per group.
Group names are dotted: a plan key may name a parent (``attention``, ``encoder.blocks``) to set
all its groups, the most specific key wins.

INT8 forms on the CPU (the benchmark measures them): Linear layers dynamic (weights per channel,
activations quantized at run time, ``DynamicQuantizeMatMul``); activation-activation products
static U8S8 from calibration frames (``vit_seg_optimize.static_int8``: the only INT8 form of
them that
is faster than FP32 here); the stem's convolutions static U8S8 Q/DQ (``QLinearConv``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
import re
import tempfile
from typing import Iterable, Iterator, Optional

import numpy as np

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import atomic_write_bytes

QUANT_OPS = ('MatMul', 'Gemm', 'Conv')
# operator groups that stay float unless a plan names them: their INT8 forms are static and need
# calibration frames (attention's activation products, the conv stem), or the group is kept
# float by design (token scoring); `vit-seg sensitivity` decides whether a plan names them
FLOAT_BY_DEFAULT = ('attention', 'reduction', 'stem')
ACTIVATION_GROUPS = ('attention', 'reduction')   # both operands are activations: static form
STATIC_CONV_GROUPS = ('stem',)                    # convolutions: static Q/DQ form


def _constants(graph) -> set[str]:
    names = {i.name for i in graph.initializer}
    return names | {o for n in graph.node if n.op_type == 'Constant' for o in n.output}


def node_groups(model_path: str | os.PathLike) -> dict[str, list[str]]:
    """Return ``group -> [quantizable node names]`` of an exported model.

    Groups: ``encoder.blocks.NN`` and ``decoder`` (their Linear layers: MatMul/Gemm with a
    weight), ``attention.scores`` / ``attention.values`` (activation-activation MatMuls inside
    the blocks: QK^T and the softmax times V), ``reduction`` (activation-activation MatMuls
    outside them: token similarities and merges), ``stem`` (convolutions), ``other`` (remaining
    weight MatMuls).
    """
    import onnx

    g = onnx.load(str(model_path), load_external_data=False).graph
    consts = _constants(g)
    producer = {o: n for n in g.node for o in n.output}
    groups: dict[str, list[str]] = {}
    for node in g.node:
        if node.op_type not in QUANT_OPS:
            continue
        # exported scope names: '.../blocks.3/...' (encoder), '/decoder/...' (decoder)
        m = re.search(r'/blocks\.(\d+)/', node.name)
        in_block = '/decoder/' in node.name or m is not None
        if node.op_type == 'Conv':
            grp = 'stem'
        elif not any(i in consts for i in node.input):
            after_softmax = node.input[0] in producer and \
                producer[node.input[0]].op_type == 'Softmax'
            grp = ('attention.values' if after_softmax else 'attention.scores') if in_block \
                else 'reduction'
        elif '/decoder/' in node.name:
            grp = 'decoder'
        elif m:
            grp = f'encoder.blocks.{int(m.group(1)):02d}'
        else:
            grp = 'other'
        groups.setdefault(grp, []).append(node.name)
    return dict(sorted(groups.items()))


def group_precisions(model_path: str | os.PathLike, plan: dict) -> dict[str, str]:
    """Return the precision of every group of the model under ``plan``.

    ``plan``: ``{'default': 'int8'|'fp32', 'groups': {group: 'int8'|'fp32'}}``; the default
    applies to the Linear groups, the ``FLOAT_BY_DEFAULT`` groups stay FP32 unless named.
    """
    return _resolve(node_groups(model_path), plan)


def _lineage(group: str) -> list[str]:
    """Return a group and its dotted parents, most specific first: a.b.c, a.b, a."""
    parts = group.split('.')
    return ['.'.join(parts[:k]) for k in range(len(parts), 0, -1)]


def _resolve(groups: dict[str, list[str]], plan: dict) -> dict[str, str]:
    named = plan.get('groups', {})
    known = {p for g in groups for p in _lineage(g)}
    unknown = set(named) - known
    if unknown:
        raise UserError(f'precision plan names unknown groups: {sorted(unknown)}')
    bad = {v for v in named.values()} - {'int8', 'fp32'}
    if bad:
        raise UserError(f'precision plan values must be int8 or fp32, got {sorted(bad)}')
    default = plan.get('default', 'int8')

    def precision(g: str) -> str:
        for key in _lineage(g):
            if key in named:
                return named[key]
        return 'fp32' if any(p in FLOAT_BY_DEFAULT for p in _lineage(g)) else default
    return {g: precision(g) for g in groups}


def load_plan(path: str | os.PathLike) -> dict:
    """Read a precision plan: a plan JSON, or a ``vit-seg sensitivity`` report holding one."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f'precision plan not found: {p}')
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f'precision plan {p} is not valid JSON: {exc}') from None
    return doc.get('plan', doc) if isinstance(doc, dict) else doc


def uniform_plan(model_path: str | os.PathLike) -> dict:
    """Return the plan that quantizes every group (uniform INT8)."""
    return {'default': 'int8', 'groups': {g: 'int8' for g in node_groups(model_path)}}


def plan_int8_nodes(model_path: str | os.PathLike, plan: dict) -> list[str]:
    """Return the node names a plan quantizes."""
    return _nodes_at(model_path, plan, 'int8')


def plan_fp32_nodes(model_path: str | os.PathLike, plan: dict) -> list[str]:
    """Return the quantizable node names a plan keeps in FP32."""
    return _nodes_at(model_path, plan, 'fp32')


def _nodes_at(model_path: str | os.PathLike, plan: dict, precision: str) -> list[str]:
    groups = node_groups(model_path)   # one read of the model
    prec = _resolve(groups, plan)
    return [n for g, names in groups.items() if prec[g] == precision for n in names]


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
                         op_types_to_quantize=list(QUANT_OPS), nodes_to_quantize=nodes)
    return Path(out_path)


def is_activation_group(group: str) -> bool:
    """Return whether a group's products take two activations (attention, token scoring)."""
    return any(p in ACTIVATION_GROUPS for p in _lineage(group))


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
    prec = _resolve(groups, plan)
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
    import onnx
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, quantize_static,
                                          QuantType)

    if not calibration:
        raise UserError('static INT8 of the stem needs calibration frames')
    g = onnx.load(str(fp32_path), load_external_data=False).graph
    produced_by_conv = {n.output[0] for n in g.node if n.name in set(convs)}
    relus = [n.name for n in g.node if n.op_type == 'Relu' and n.input[0] in produced_by_conv]
    Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    with quiet_quantizer():
        quantize_static(
            str(fp32_path), str(out_path), _FrameReader(input_name, calibration),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=['Conv', 'Relu'],
            per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_quantize=list(convs) + relus,
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


FLOAT16_SCOPES = ('/blocks.', '/decoder/', '/patch_embed/')


def to_float16(model_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Type the float parts of a model FP16, for a strongly typed TensorRT network.

    TensorRT 10 builds a strongly typed network from the types in the ONNX file (the FP16/INT8
    builder flags are deprecated): FP16 layers must be FP16 tensors in the graph, INT8 comes from
    explicit Q/DQ. The encoder blocks, the stem and the decoder become FP16 (Q/DQ scales too,
    opset >= 19); everything else -- the token-reduction scoring that feeds TopK, the bookkeeping,
    the final resize and ArgMax -- stays FP32, as do the model's input and output.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(model_path))
    opset = max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')),
                default=0)
    if opset < 19 and any(n.op_type in ('QuantizeLinear', 'DequantizeLinear')
                          for n in model.graph.node):
        raise UserError(f'{model_path}: FP16 Q/DQ scales need opset >= 19 (this model: '
                        f'{opset}); export with --opset 19')
    fp16 = float16_nodes(model.graph)
    keep = [n.name for n in model.graph.node if n.name not in fp16]
    m16 = convert_float_to_float16(model, keep_io_types=True, node_block_list=keep)
    topological_sort(m16.graph)
    return atomic_write_bytes(out_path, m16.SerializeToString())


def float16_nodes(graph) -> set[str]:
    """Return the nodes to type FP16: the FP16 scopes, and the Q/DQ nodes that feed only them.

    A weight's DequantizeLinear is named after the weight, not its layer; typing it with its
    consumer makes it produce FP16 directly (its scale FP16), with no Cast between it and the
    MatMul -- the pattern TensorRT fuses into an INT8 GEMM with FP16 output.
    """
    consumers: dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    fp16 = {n.name for n in graph.node if any(s in n.name for s in FLOAT16_SCOPES)}
    for op in ('DequantizeLinear', 'QuantizeLinear'):   # DQs first, then the Qs feeding them
        for n in graph.node:
            users = consumers.get(n.output[0], [])
            if n.op_type == op and users and all(u.name in fp16 for u in users):
                fp16.add(n.name)
    return fp16


def topological_sort(graph) -> None:
    """Reorder ``graph.node`` so that every node comes after the producers of its inputs."""
    produced_by = {o: i for i, n in enumerate(graph.node) for o in n.output}
    order, state = [], {}

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            k, done = stack.pop()
            if done:
                state[k] = 2
                order.append(k)
                continue
            if state.get(k):
                continue
            state[k] = 1
            stack.append((k, True))
            for name in graph.node[k].input:
                j = produced_by.get(name)
                if j is not None and not state.get(j):
                    stack.append((j, False))
    for i in range(len(graph.node)):
        visit(i)
    nodes = [graph.node[i] for i in order]
    del graph.node[:]
    graph.node.extend(nodes)


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
    feed = {card.input_name: np.random.default_rng(0).standard_normal(
        (1, 3, card.input_height, card.input_width)).astype(np.float32)}
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


def allocate(sens: dict, budget: float) -> dict:
    """Greedy bit allocation: INT8 for the groups with the best latency gain per mIoU lost.

    Groups measurably slower in INT8 (gain below minus its noise) stay FP32 even when they are
    free in accuracy; a gain within the noise counts as none. Candidates are taken in order of
    gain per unit of measured drop (free groups first) while the summed drop stays within
    ``budget`` (a fraction, 0.005 = 0.5 point). The sum of single-group drops is an estimate:
    the returned plan must be measured again (the benchmark does).
    """
    items = sorted(sens['groups'].items(),
                   key=lambda kv: -kv[1]['latency_gain_ms'] / max(kv[1]['miou_drop'], 1e-4))
    plan, spent = {}, 0.0
    for g, s in items:
        drop = max(s['miou_drop'], 0.0)
        if s['latency_gain_ms'] > -s.get('noise_ms', 0.0) and spent + drop <= budget:
            plan[g] = 'int8'
            spent += drop
        else:
            plan[g] = 'fp32'
    return {'default': 'fp32', 'groups': dict(sorted(plan.items())), 'budget': budget,
            'estimated_drop': spent}


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
