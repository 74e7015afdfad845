"""Arg-max below the input's resolution: the graph returns labels at 1/stride of its input.

A segmentation graph exported here ends in a bilinear ``Resize`` of the decoder's logits to the
input size and an ``ArgMax`` over them (then a ``Cast`` to uint8, or the logits themselves). For
``fast.onnx`` that float resize of 11 maps to 352x480 and the arg-max over them are about a tenth
of the model's kernel time on a CPU, to make a map the host then resamples to the frame's size
by nearest neighbour anyway. ``label_stride`` makes the graph resize its logits to 1/stride of
the input instead; the card says so (``output.stride``) and the host brings the smaller map to
the frame's size in the same single nearest-neighbour step (``core.processing.restore_labels``).
Class boundaries are then placed to ``stride`` input pixels; the new graph is run against the
original on frames and written only if their labels agree on ``min_agreement`` of the pixels.
The card's metrics are dropped: score the new model (``vit-seg eval --record``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from vit_seg_node.core.errors import UserError

MIN_AGREEMENT = 0.95    # share of pixels whose label the original graph gives too


def resize_before_output(graph, output_name: str, kind: str):
    """Return the ``Resize`` node whose result is the output (through ArgMax, maybe a Cast)."""
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(output_name)
    chain = ['Cast', 'ArgMax'] if kind == 'labels' else []
    for op in chain:
        if node is not None and node.op_type == op:
            node = producer.get(node.input[0])
        elif op != 'Cast':
            node = None
    if node is None or node.op_type != 'Resize':
        tail = 'Resize -> ArgMax [-> Cast]' if kind == 'labels' else 'Resize'
        raise UserError(f'the graph does not end in {tail} before its output {output_name!r}: '
                        f'nothing to move below the input resolution')
    return node


def downstream(graph, name: str) -> set[str]:
    """Return ``name`` and every tensor computed from it."""
    found, grew = {name}, True
    while grew:
        grew = False
        for node in graph.node:
            if found.intersection(node.input) and not found.issuperset(node.output):
                found.update(node.output)
                grew = True
    return found


def stride_graph(model, card, stride: int):
    """Return ``model`` (an ``onnx.ModelProto``, changed in place) resizing logits to 1/stride.

    The resize's target becomes the batch and channels of its own input (``Shape``) and the
    input size over ``stride``; whatever computed the old target is dropped.
    """
    import onnx
    from onnx import helper, numpy_helper

    h, w = card.input_height, card.input_width
    if stride < 2 or h % stride or w % stride:
        raise UserError(f'--stride must be 2 or more and divide the input {w}x{h}, got {stride}')
    opset = max((o.version for o in model.opset_import if o.domain in ('', 'ai.onnx')),
                default=0)
    if opset < 11:
        raise UserError(f'the graph is opset {opset}; its Resize takes a target size from '
                        f'opset 11 (re-export with a newer --opset)')
    graph = model.graph
    resize = resize_before_output(graph, card.output_name, card.output_kind)
    p = f'{card.output_name}__stride'
    graph.initializer.extend([
        numpy_helper.from_array(np.array([0], np.int64), f'{p}_start'),
        numpy_helper.from_array(np.array([2], np.int64), f'{p}_end'),
        numpy_helper.from_array(np.array([h // stride, w // stride], np.int64), f'{p}_hw')])
    prefix = [helper.make_node('Shape', [resize.input[0]], [f'{p}_shape'], name=f'{p}_shape'),
              helper.make_node('Slice', [f'{p}_shape', f'{p}_start', f'{p}_end'], [f'{p}_nc'],
                               name=f'{p}_nc'),
              helper.make_node('Concat', [f'{p}_nc', f'{p}_hw'], [f'{p}_sizes'], axis=0,
                               name=f'{p}_sizes')]
    inputs = list(resize.input) + [''] * (4 - len(resize.input))
    inputs[1], inputs[2], inputs[3] = '', '', f'{p}_sizes'     # sizes, not roi or scales
    del resize.input[:]
    resize.input.extend(inputs)
    at = list(graph.node).index(resize)
    for k, node in enumerate(prefix):
        graph.node.insert(at + k, node)
    below = downstream(graph, resize.output[0])
    for v in [v for v in graph.value_info if v.name in below]:
        graph.value_info.remove(v)           # their shapes change: let them be inferred
    for out in graph.output:
        dims = out.type.tensor_type.shape.dim
        if out.name == card.output_name and len(dims) >= 2:
            dims[-2].dim_value, dims[-1].dim_value = h // stride, w // stride
    drop_unused(graph)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise UserError(f'the edited graph is not valid ONNX: {str(exc).splitlines()[0]}') \
            from None
    return model


def drop_unused(graph) -> None:
    """Remove the nodes and initializers nothing reads (what computed the old resize target)."""
    outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | outputs
        dead = [n for n in graph.node if not used.intersection(n.output)]
        if not dead:
            break
        for n in dead:
            graph.node.remove(n)
    used = {i for n in graph.node for i in n.input}
    for init in [t for t in graph.initializer if t.name not in used]:
        graph.initializer.remove(init)


def agreement(original: Path, strided: Path, card, strided_card, frames: np.ndarray) -> dict:
    """Return the share of pixels where both graphs give the same label, at the input's size."""
    from vit_seg_node.backends.onnxruntime_backend import OnnxRuntimeBackend
    from vit_seg_node.core.processing import fit_geometry, model_input, restore_labels, to_labels

    a = OnnxRuntimeBackend(original, card, threads=0, providers=['CPUExecutionProvider'])
    b = OnnxRuntimeBackend(strided, strided_card, threads=0, providers=['CPUExecutionProvider'])
    h, w = card.input_height, card.input_width
    geo = fit_geometry(h, w, h, w, 'stretch')
    same, total = 0, 0
    short = -len(frames) % card.batch          # fill the last batch with copies of a frame
    frames = np.concatenate([frames, np.repeat(frames[-1:], short, 0)]) if short else frames
    for i in range(0, len(frames), card.batch):
        x = model_input(frames[i:i + card.batch], card)
        ref = to_labels(a.infer(x), card.output_kind)
        got = to_labels(b.infer(x), card.output_kind)
        for r, g in zip(ref, got):
            same += int(np.sum(restore_labels(g, geo, strided_card.output_stride) == r))
            total += r.size
    return {'label_agreement': same / max(total, 1), 'frames': total // (h * w)}


def label_stride(model_path: str | os.PathLike, out_path: str | os.PathLike, stride: int,
                 command: str = '', frames: Optional[np.ndarray] = None,
                 min_agreement: float = MIN_AGREEMENT):
    """Write ``model_path`` giving labels at 1/``stride`` of its input, and its card; return it.

    ``frames``: resized RGB uint8 (N x H x W x 3) to check the new graph against the original on
    (default ``fold_input.check_frames``); the result goes in the card's ``extra.stride_check``.
    """
    from vit_seg_node.core.card import load_card
    from vit_seg_optimize.fold_input import check_frames
    from vit_seg_optimize.onnx_io import load_onnx, write_checked

    src, out = Path(model_path), Path(out_path)
    if src.resolve() == out.resolve():
        raise UserError('--out must differ from --model (the original is the reference)')
    card = load_card(src)
    if card.output_stride != 1:
        raise UserError(f'{src} already gives labels at 1/{card.output_stride} of its input')
    model = stride_graph(load_onnx(src), card, stride)
    new_card = load_card(src)
    new_card.output_stride, new_card.metrics = stride, {}
    frames = check_frames(card) if frames is None else frames

    def check(path: Path) -> dict:
        report = agreement(src, path, card, new_card, frames)
        if report['label_agreement'] < min_agreement:
            raise UserError(f'labels at 1/{stride} agree with {src} on '
                            f'{report["label_agreement"]:.4f} of the pixels, under '
                            f'{min_agreement}: not written')
        return report

    write_checked(model, out, new_card, check, 'stride_check', command)
    return new_card
