"""Fold the input normalisation into an ONNX graph: it then takes the resized frame's RGB bytes.

A float graph takes N x 3 x H x W planes normalised with the card's mean and std; the host
splits, casts, scales and shifts every frame to make them. ``fold_input`` puts that work at the
front of the graph instead (Cast, Transpose to planes, one Mul and one Add per channel), so the
graph takes N x H x W x 3 uint8 as the frame comes out of the resize, and the card says so
(``input.dtype: uint8``, ``input.layout: NHWC``). ONNX Runtime runs the four operators in its own
thread pool; TensorRT fuses them into one kernel on the GPU. The rest of the graph is untouched,
so any form (FP32, mixed INT8, Q/DQ, FP16) folds the same way, and the folded graph is run
against the original on the same frames before it is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import numpy as np

from vit_seg_node.core.errors import UserError

# error allowed between the folded and the original graph's outputs (``export.relative_error``,
# as the export check measures it): the graph rounds x * scale + shift in float32 where the host
# rounded it its own way, and where the input is then quantized to INT8 (Q/DQ forms) a value can
# land one step (1/255 of the range) apart; labels must agree on all but this share of pixels
# (near ties)
TOLERANCE = 1e-2
MAX_LABEL_MISMATCH = 1e-3


def fold_graph(model, mean: list[float], std: list[float], input_name: str):
    """Return ``model`` (an ``onnx.ModelProto``, changed in place) taking NHWC uint8 frames."""
    import onnx
    from onnx import helper, numpy_helper, TensorProto

    graph = model.graph
    inputs = [i for i in graph.input if i.name == input_name]
    if not inputs:
        raise UserError(f'the graph has no input {input_name!r}')
    old = inputs[0]
    elem = old.type.tensor_type.elem_type
    if elem not in (TensorProto.FLOAT, TensorProto.FLOAT16):
        raise UserError(f'input {input_name!r} is not float (already folded?)')
    dims = [d.dim_value if d.HasField('dim_value') else (d.dim_param or None)
            for d in old.type.tensor_type.shape.dim]
    if len(dims) != 4 or dims[1] != 3:
        raise UserError(f'input {input_name!r} is not N x 3 x H x W: {dims}')
    dtype = np.float16 if elem == TensorProto.FLOAT16 else np.float32
    std_ = np.asarray(std, np.float64)
    scale = (1.0 / (255.0 * std_)).astype(dtype)
    shift = (-np.asarray(mean, np.float64) / std_).astype(dtype)
    inner = f'{input_name}__normalized'
    for node in graph.node:
        for k, name in enumerate(node.input):
            if name == input_name:
                node.input[k] = inner
    graph.initializer.extend([numpy_helper.from_array(scale, f'{input_name}__scale'),
                              numpy_helper.from_array(shift, f'{input_name}__shift')])
    zero = np.zeros(3, dtype)
    graph.initializer.extend([numpy_helper.from_array(zero, f'{input_name}__zero'),
                              numpy_helper.from_array(np.ones(3, dtype), f'{input_name}__one')])
    prefix = [
        helper.make_node('Transpose', [input_name], [f'{input_name}__bytes'],
                         perm=[0, 3, 1, 2], name='fold_input_transpose'),   # bytes: 1/4 moved
        helper.make_node('Cast', [f'{input_name}__bytes'], [f'{input_name}__planes'], to=elem,
                         name='fold_input_cast'),
        # x * scale + shift per plane, written as an inference batch norm (mean 0, variance 1,
        # epsilon 0): one pass, where Mul and Add with [1, 3, 1, 1] broadcasts take two slow ones
        helper.make_node('BatchNormalization',
                         [f'{input_name}__planes', f'{input_name}__scale',
                          f'{input_name}__shift', f'{input_name}__zero', f'{input_name}__one'],
                         [inner], epsilon=0.0, name='fold_input_normalize'),
    ]
    nodes = prefix + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    new = helper.make_tensor_value_info(input_name, TensorProto.UINT8,
                                        [dims[0], dims[2], dims[3], 3])
    position = list(graph.input).index(old)
    graph.input.remove(old)
    graph.input.insert(position, new)
    onnx.checker.check_model(model)
    return model


def check_frames(card, count: int = 4, seed: int = 0) -> np.ndarray:
    """Return ``count`` seeded frames of the input size (noise and a gradient): N x H x W x 3."""
    rng = np.random.default_rng(seed)
    h, w = card.input_height, card.input_width
    frames = rng.integers(0, 256, (count, h, w, 3), dtype=np.uint8)
    ramp = np.linspace(0, 255, w, dtype=np.float64)[None, :, None]
    frames[0] = np.broadcast_to(ramp, (h, w, 3)).astype(np.uint8)
    return frames


def compare(original: Path, folded: Path, card, folded_card, frames: np.ndarray) -> dict:
    """Run both graphs on the same frames; return the largest output error and label mismatch."""
    from vit_seg_node.backends.onnxruntime_backend import OnnxRuntimeBackend
    from vit_seg_node.core.processing import model_input, to_labels
    from vit_seg_optimize.export import relative_error

    a = OnnxRuntimeBackend(original, card, threads=0, providers=['CPUExecutionProvider'])
    b = OnnxRuntimeBackend(folded, folded_card, threads=0, providers=['CPUExecutionProvider'])
    worst, mismatch = 0.0, 0.0
    for i in range(0, len(frames) - card.batch + 1, card.batch):
        chunk = frames[i:i + card.batch]
        ref = a.infer(model_input(chunk, card))
        got = b.infer(model_input(chunk, folded_card))
        if card.output_kind == 'logits':
            worst = max(worst, relative_error(got.astype(np.float64), ref))
        mismatch = max(mismatch, float(np.mean(to_labels(got, card.output_kind) !=
                                               to_labels(ref, card.output_kind))))
    return {'max_relative_error': worst, 'max_label_mismatch': mismatch,
            'frames': int(len(frames) // card.batch * card.batch)}


def fold_input(model_path: str | os.PathLike, out_path: str | os.PathLike,
               command: str = '', frames: Optional[np.ndarray] = None):
    """Write ``model_path`` with its normalisation folded in, and its card; return the card.

    The folded graph is checked against the original on ``frames`` (resized RGB uint8, N x H x
    W x 3; default ``check_frames``) and written only if it agrees (``TOLERANCE``,
    ``MAX_LABEL_MISMATCH``); the check goes in the card's ``extra.fold_check``.
    """
    from vit_seg_node.core.card import load_card
    from vit_seg_optimize.onnx_io import load_onnx, write_checked

    src, out = Path(model_path), Path(out_path)
    if src.resolve() == out.resolve():
        raise UserError('--out must differ from --model (the original is the reference)')
    card = load_card(src)
    if card.bytes_input:
        raise UserError(f'{src} already takes uint8 frames (its card: input.dtype uint8)')
    model = fold_graph(load_onnx(src), card.mean, card.std, card.input_name)
    folded_card = load_card(src)
    folded_card.input_dtype, folded_card.input_layout = 'uint8', 'NHWC'
    frames = check_frames(card) if frames is None else frames

    def check(path: Path) -> dict:
        report = compare(src, path, card, folded_card, frames)
        if report['max_relative_error'] > TOLERANCE or \
                report['max_label_mismatch'] > MAX_LABEL_MISMATCH:
            raise UserError(f'the folded graph disagrees with {src}: {report}')
        return report

    write_checked(model, out, folded_card, check, 'fold_check', command)
    return folded_card
