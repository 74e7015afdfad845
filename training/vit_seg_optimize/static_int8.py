"""Static INT8 for MatMuls whose operands are both activations (attention's QK^T and PV).

Why this exists: ONNX Runtime's quantizers offer these products only with the same type on both
sides -- dynamic quantization makes both uint8 (U8U8) and static QDQ makes both int8 (S8S8). On
this CPU, for a 3x660x64 @ 3x64x660 product, the U8U8 kernel is barely faster than FP32 (and
dynamic quantization adds a range pass over both operands), S8S8 is about four times slower, and
U8S8 -- the VNNI/AMX kernel -- about twice as fast (``python -m experiments.matmul_kinds``,
``docs/results/quant/matmul_kinds.json``). ONNX Runtime's ``com.microsoft.MatMulIntegerToFloat``
runs U8S8 with the rescale fused, so this module writes that form itself:

* the left operand ``A`` in uint8, asymmetric, calibrated. For a softmax output that means
  [0, clip] with zero point 0, and the clip matters: the full [0, 1] range (scale 1/255) rounds
  every probability below 1/510 to zero, which erases diffuse attention (the decoder's, on this
  model); ``vit-seg sensitivity`` measured the softmax-times-V group at +0.31 points with the
  fixed 1/255 scale and +0.09 with each layer's 99.99th-percentile clip (30 val frames);
* the right operand ``B`` in int8, symmetric (zero point 0), calibrated;
* ``QuantizeLinear`` -> ``MatMulIntegerToFloat`` in place of the MatMul. A multiplication by a
  positive scalar in front of an operand (a constant, or computed from shapes only: the exported
  attention's ``sqrt(scale)``) is
  folded into the quantization scale, and the layout operators in front of an operand (the
  head split's ``Squeeze``, ``k^T``'s ``Transpose``) move after the quantization: they move 8-bit
  integers instead of floats, and ONNX Runtime's QDQ propagation, which would otherwise push the
  quantization up through them and insert extra Quantize/Dequantize pairs, has nothing to do.

Ranges come from running the float model on calibration frames (``tensor_ranges``); a
percentile clip (99.99 by default) keeps rare outliers from stretching the scale.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from vit_seg_node.backends.onnxruntime_backend import make_session
from vit_seg_node.core.errors import UserError
from vit_seg_optimize.onnx_io import load_onnx
from vit_seg_node.core.io import atomic_write_bytes
from vit_seg_node.core.machine import cpu_model_and_flags

# operators that only move elements: they commute with a per-tensor quantization
LAYOUT_OPS = ('Transpose', 'Squeeze', 'Unsqueeze', 'Reshape')


def _constant(graph, name: str) -> Optional[np.ndarray]:
    """Return the value of ``name`` if it is an initializer or a Constant node's output."""
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in graph.node:
        if n.op_type == 'Constant' and n.output[0] == name:
            for attr in n.attribute:
                if attr.name == 'value':
                    return numpy_helper.to_array(attr.t)
    return None


class _Graph:
    """Producer/consumer maps of a graph, and which tensors are static (input-independent)."""

    def __init__(self, graph) -> None:
        self.g = graph
        self.producer = {o: n for n in graph.node for o in n.output}
        self.consumers: dict[str, int] = {}
        for n in graph.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        for o in graph.output:
            self.consumers[o.name] = self.consumers.get(o.name, 0) + 1
        self.inits = {i.name for i in graph.initializer}
        # tensors independent of the input's values: constants, and what is computed from
        # constants and shapes only (the exported attention scale is ``Sqrt(Cast(Shape))``);
        # one pass, the nodes of an ONNX graph being in topological order
        self._static = set(self.inits)
        for n in graph.node:
            if n.op_type in ('Constant', 'Shape') or all(i in self._static for i in n.input if i):
                self._static.update(n.output)

    def static(self, t: str) -> bool:
        """Return whether ``t`` is independent of the input's values."""
        return t in self._static

    def walk(self, t: str) -> list[tuple[object, Optional[str]]]:
        """Return the steps back from operand ``t`` that quantization can absorb.

        A ``Mul`` by a static tensor (the step's multiplier) and layout operators
        (``LAYOUT_OPS``), each the only consumer of what it produces:
        ``[(node, multiplier or None), ...]``.
        """
        steps = []
        while t in self.producer and self.consumers.get(t, 0) == 1:
            p = self.producer[t]
            if p.op_type == 'Mul' and sum(self.static(i) for i in p.input) == 1:
                mult = next(i for i in p.input if self.static(i))
                steps.append((p, mult))
                t = next(i for i in p.input if i != mult)
            elif p.op_type in LAYOUT_OPS:
                steps.append((p, None))
                t = p.input[0]
            else:
                break
        return steps

    def is_softmax(self, t: str) -> bool:
        return t in self.producer and self.producer[t].op_type == 'Softmax'


def calibration_tensors(model_path: str | os.PathLike, nodes: Iterable[str]) -> list[str]:
    """Return the tensors whose values ``quantize_activation_matmuls`` needs for ``nodes``.

    The operands (but a softmax output, whose range is known) and their static multipliers.
    """
    gr = _Graph(load_onnx(model_path, weights=False).graph)
    wanted = set(nodes)
    out = []
    for n in gr.g.node:
        if n.name in wanted:
            a, b = n.input[:2]
            out += [a, b]
            out += [m for t in (a, b) for _, m in gr.walk(t) if m is not None]
    return sorted(set(out))


def tensor_ranges(model_path: str | os.PathLike, tensors: list[str],
                  batches: list, input_name: Optional[str],
                  percentile: float = 99.99) -> dict[str, tuple[float, float]]:
    """Return ``tensor -> (low, high)`` over calibration batches (percentile-clipped).

    ``batches``: arrays fed as ``input_name``, or complete feed dicts (``input_name`` None).
    """
    import onnx

    if not batches:
        raise UserError('static INT8 of activation products needs calibration frames')
    model = load_onnx(model_path)
    known = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in known:
            model.graph.output.append(onnx.ValueInfoProto(name=t))
    sess = make_session(model.SerializeToString(), optimize=False)
    ranges = {t: [np.inf, -np.inf] for t in tensors}
    for batch in batches:
        feed = batch if isinstance(batch, dict) else {input_name: batch}
        for t, v in zip(tensors, sess.run(tensors, feed)):
            lo, hi = (np.percentile(v, [100.0 - percentile, percentile])
                      if percentile < 100 and v.size > 1 else (v.min(), v.max()))
            ranges[t][0] = min(ranges[t][0], float(lo))
            ranges[t][1] = max(ranges[t][1], float(hi))
    return {t: (lo, hi) for t, (lo, hi) in ranges.items()}


def _u8_params(lo: float, hi: float) -> tuple[float, int]:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-8) / 255.0
    return scale, int(np.clip(round(-lo / scale), 0, 255))


def s8_limit(flags: Optional[list[str]] = None) -> int:
    """Return the largest magnitude of the int8 operand on this CPU: 127, or 63 without VNNI.

    Without VNNI (AVX2 alone, e.g. some AMD EPYC guests) ONNX Runtime's U8S8 kernel adds pairs
    of uint8 x int8 products in int16 (``vpmaddubsw``), which saturates above 32767: 255 x 127 x
    2 does, 255 x 63 x 2 does not. This is ONNX Runtime's own ``reduce_range`` remedy; with VNNI
    or AMX the products accumulate in int32 and the full range is used.
    """
    if flags is None:
        flags = cpu_model_and_flags()[1]
    fast = {'avx512_vnni', 'avx_vnni', 'amx_int8', 'avx512vnni'}
    return 127 if fast & set(flags) else 63


def _s8_scale(lo: float, hi: float, limit: int) -> float:
    return max(abs(lo), abs(hi), 1e-8) / float(limit)


def _multiplier(g, ranges: dict, name: str) -> Optional[float]:
    """Return the scalar value of ``name`` (a constant, or a calibrated static tensor), or None."""
    c = _constant(g, name)
    if c is not None:
        return float(c.reshape(-1)[0]) if c.size == 1 else None
    lo, hi = ranges.get(name, (None, None))   # a static tensor, calibrated: one value
    return lo if lo is not None and lo == hi else None


def _fold(gr: '_Graph', g, ranges: dict, t: str, scale: float,
          dropped: set[int]) -> tuple[str, float, list]:
    """Absorb the walk's steps in front of operand ``t`` while multipliers are positive scalars.

    Returns the tensor to quantize, its scale, and the layout nodes to re-apply to the quantized
    tensor (in the order they ran); the absorbed nodes' ids go into ``dropped``.
    """
    layout = []
    for node, mult in gr.walk(t):
        if mult is not None:
            c = _multiplier(g, ranges, mult)
            if c is None or c <= 0:
                break
            scale /= c
            t = next(i for i in node.input if i != mult)
        else:
            layout.insert(0, node)
            t = node.input[0]
        dropped.add(id(node))
    return t, scale, layout


def _quantized_operand(pre: str, side: str, src: str, scale: float, zero: int, dtype,
                       layout: list) -> tuple[list, list, str]:
    """Return (nodes, initializers, output) that quantize ``src`` and re-apply its layout."""
    import onnx
    from onnx import helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(scale, np.float32), f'{pre}/{side}_qscale'),
             numpy_helper.from_array(np.array(zero, dtype), f'{pre}/{side}_zero')]
    q = f'{pre}/{side}_q'
    nodes = [helper.make_node('QuantizeLinear', [src, f'{pre}/{side}_qscale',
                                                 f'{pre}/{side}_zero'], [q],
                              name=f'{pre}/{side}_quantize')]
    for k, node in enumerate(layout):   # the layout changes now move 8-bit integers
        moved = onnx.NodeProto()
        moved.CopyFrom(node)
        moved.name = f'{pre}/{side}_{node.op_type}{k}'
        moved.input[0] = q
        del moved.output[:]
        q = f'{pre}/{side}_q{k}'
        moved.output.append(q)
        nodes.append(moved)
    return nodes, inits, q


def _rewrite_matmul(n, gr: '_Graph', g, ranges: dict, dropped: set[int]) -> tuple[list, list]:
    """Return (nodes, initializers) that replace the activation MatMul ``n``."""
    from onnx import helper, numpy_helper

    if n.op_type != 'MatMul' or any(gr.static(i) for i in n.input):
        raise UserError(f'{n.name}: not a MatMul of two activations ({n.op_type})')
    a, b = n.input[:2]
    pre = n.name
    sa, za = _u8_params(*ranges[a])   # a softmax output: [0, clip], zero point 0
    sb = _s8_scale(*ranges[b], s8_limit())
    a_src, sa_src, a_layout = _fold(gr, g, ranges, a, sa, dropped)
    b_src, sb_src, b_layout = _fold(gr, g, ranges, b, sb, dropped)
    nodes_a, inits_a, qa = _quantized_operand(pre, 'a', a_src, sa_src, za, np.uint8, a_layout)
    nodes_b, inits_b, qb = _quantized_operand(pre, 'b', b_src, sb_src, 0, np.int8, b_layout)
    # quantized from the unfolded source with scale s' = s / c, the integers equal those of the
    # operand itself with scale s, so the rescale uses the operands' own scales
    inits = inits_a + inits_b + [
        numpy_helper.from_array(np.array(sa, np.float32), f'{pre}/a_scale'),
        numpy_helper.from_array(np.array(sb, np.float32), f'{pre}/b_scale')]
    mm = helper.make_node('MatMulIntegerToFloat',
                          [qa, qb, f'{pre}/a_scale', f'{pre}/b_scale', f'{pre}/a_zero'],
                          [n.output[0]], name=pre, domain='com.microsoft')
    return nodes_a + nodes_b + [mm], inits


def quantize_activation_matmuls(src: str | os.PathLike, dst: str | os.PathLike,
                                nodes: Iterable[str],
                                ranges: dict[str, tuple[float, float]]) -> Path:
    """Rewrite the MatMuls ``nodes`` of ``src`` as U8S8 ``MatMulIntegerToFloat``; write ``dst``.

    ``ranges``: from ``tensor_ranges`` on the float model, for ``calibration_tensors(nodes)``.
    Nodes that are not activation-activation MatMuls are an error, not skipped silently.
    """
    from onnx import helper

    model = load_onnx(src)
    g = model.graph
    gr = _Graph(g)
    wanted = set(nodes)
    dropped: set[int] = set()      # ids of nodes folded into a quantization
    replace: dict[str, list] = {}  # MatMul name -> the nodes that take its place
    new_inits = []
    for n in g.node:
        if n.name in wanted:
            replace[n.name], inits = _rewrite_matmul(n, gr, g, ranges, dropped)
            new_inits += inits
    missing = wanted - set(replace)
    if missing:
        raise UserError(f'nodes not in the model: {sorted(missing)}')
    kept = []
    for n in g.node:
        if id(n) in dropped:
            continue
        kept.extend(replace.get(n.name, [n]) if n.op_type == 'MatMul' else [n])
    del g.node[:]
    g.node.extend(kept)
    g.initializer.extend(new_inits)
    if not any(o.domain == 'com.microsoft' for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid('com.microsoft', 1))
    return atomic_write_bytes(dst, model.SerializeToString())
