"""FP16 typing of a model's float parts, for a strongly typed TensorRT network."""

from __future__ import annotations

import os
from pathlib import Path

from vit_seg_node.core.errors import UserError
from vit_seg_optimize.onnx_io import load_onnx
from vit_seg_node.core.io import atomic_write_bytes

FLOAT16_SCOPES = ('/blocks.', '/decoder/', '/patch_embed/')


def to_float16(model_path: str | os.PathLike, out_path: str | os.PathLike) -> Path:
    """Type the float parts of a model FP16, for a strongly typed TensorRT network.

    TensorRT 10 builds a strongly typed network from the types in the ONNX file (the FP16/INT8
    builder flags are deprecated): FP16 layers must be FP16 tensors in the graph, INT8 comes from
    explicit Q/DQ. The encoder blocks, the stem and the decoder become FP16 (Q/DQ scales too,
    opset >= 19); everything else -- the token-reduction scoring that feeds TopK, the bookkeeping,
    the final resize and ArgMax -- stays FP32, as do the model's input and output.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = load_onnx(model_path)
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
