"""Static U8S8 INT8 of activation-activation MatMuls (attention), run in ONNX Runtime."""

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
import onnxruntime as ort
import pytest

from vit_seg_optimize.static_int8 import (calibration_tensors, quantize_activation_matmuls,
                                          tensor_ranges)
from vit_seg_node.core.errors import UserError

SHAPE = [1, 3, 40, 16]


def _attention_graph(path):
    """softmax((q * c) @ (k^T * c)) @ v with c = d^-1/4 computed from a shape, as exported."""
    f = TensorProto.FLOAT
    nodes = [
        helper.make_node('Shape', ['q'], ['shape']),
        helper.make_node('Gather', ['shape', 'last'], ['d']),
        helper.make_node('Cast', ['d'], ['d_f'], to=f),
        helper.make_node('Sqrt', ['d_f'], ['sqrt_d']),
        helper.make_node('Sqrt', ['sqrt_d'], ['qrt_d']),
        helper.make_node('Reciprocal', ['qrt_d'], ['c']),
        helper.make_node('Mul', ['q', 'c'], ['qs'], name='mul_q'),
        helper.make_node('Transpose', ['k'], ['kt'], perm=[0, 1, 3, 2], name='k_T'),
        helper.make_node('Mul', ['kt', 'c'], ['kts'], name='mul_k'),
        helper.make_node('MatMul', ['qs', 'kts'], ['s'], name='scores'),
        helper.make_node('Softmax', ['s'], ['p'], axis=-1),
        helper.make_node('MatMul', ['p', 'v'], ['out'], name='values'),
    ]
    graph = helper.make_graph(
        nodes, 'attn', [helper.make_tensor_value_info(n, f, SHAPE) for n in 'qkv'],
        [helper.make_tensor_value_info('out', f, SHAPE)],
        [numpy_helper.from_array(np.array(3, np.int64), 'last')])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def _feeds(seed, n):
    rng = np.random.default_rng(seed)
    return [{k: (2.0 * rng.standard_normal(SHAPE)).astype(np.float32) for k in 'qkv'}
            for _ in range(n)]


def _run(path, feed):
    sess = ort.InferenceSession(str(path), providers=['CPUExecutionProvider'])
    return sess.run(None, feed)[0]


def test_rewrite_folds_scale_and_transpose_and_stays_close(tmp_path):
    fp32 = _attention_graph(tmp_path / 'a.onnx')
    nodes = ['scores', 'values']
    tensors = calibration_tensors(fp32, nodes)
    assert {'p', 'v', 'c'} <= set(tensors)   # operands calibrated; the computed scale read too
    ranges = tensor_ranges(fp32, tensors, _feeds(0, 4), input_name=None, percentile=100)
    out = quantize_activation_matmuls(fp32, tmp_path / 'q.onnx', nodes, ranges)
    g = onnx.load(str(out)).graph
    ops = [n.op_type for n in g.node]
    assert ops.count('MatMulIntegerToFloat') == 2 and 'MatMul' not in ops
    assert 'Mul' not in ops                                 # both scale multiplications folded
    producer = {o: n for n in g.node for o in n.output}
    t = next(n for n in g.node if n.op_type == 'Transpose')
    assert producer[t.input[0]].op_type == 'QuantizeLinear'   # k^T now moves int8
    for feed in _feeds(1, 3):
        ref, got = _run(fp32, feed), _run(out, feed)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05


def test_tensor_ranges_clip_with_a_percentile(tiny_model, camvid_mini):
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_optimize.export import frames_to_batches
    from vit_seg_optimize.plan import node_groups
    from vit_seg_node.core.card import load_card

    card = load_card(tiny_model)
    batch = frames_to_batches([SegmentationDataset(camvid_mini, 'train', cache=False)
                               .load(0)[0]], card)
    nodes = node_groups(tiny_model)['attention.scores']
    tensors = calibration_tensors(tiny_model, nodes)
    full = tensor_ranges(tiny_model, tensors, batch, card.input_name, percentile=100)
    clipped = tensor_ranges(tiny_model, tensors, batch, card.input_name, percentile=99.0)
    operand = next(t for t in tensors if full[t][0] < full[t][1])
    assert full[operand][0] <= clipped[operand][0] < clipped[operand][1] <= full[operand][1]
    assert clipped[operand] != full[operand]
    with pytest.raises(UserError, match='calibration frames'):
        tensor_ranges(tiny_model, tensors, [], card.input_name)


def test_tiny_model_attention_int8_stays_close(tiny_model, camvid_mini, tmp_path):
    """Tolerance: relative logit error < 0.05, labels agree on > 97 % of the pixels."""
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_optimize.export import frames_to_batches
    from vit_seg_optimize.quant import quantize_mixed
    from vit_seg_node.backends.base import create_backend
    from vit_seg_node.core.card import load_card

    card = load_card(tiny_model)
    train = SegmentationDataset(camvid_mini, 'train', cache=False)
    calib = frames_to_batches([train.load(i)[0] for i in range(len(train))], card)
    out = quantize_mixed(tiny_model, tmp_path / 'att.onnx',
                         {'default': 'fp32', 'groups': {'attention': 'int8'}}, calib,
                         card.input_name)
    assert [n.op_type for n in onnx.load(str(out)).graph.node].count('MatMulIntegerToFloat') == 8
    ref_b, got_b = create_backend(tiny_model, card, threads=1), create_backend(out, card, threads=1)
    val = SegmentationDataset(camvid_mini, 'val', cache=False)
    for i in range(len(val)):
        x = frames_to_batches([val.load(i)[0]], card)[0]
        ref, got = ref_b.infer(x), got_b.infer(x)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.05
        assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.97


def test_weight_matmul_is_refused(tiny_model, tmp_path):
    from vit_seg_optimize.plan import node_groups

    linear = node_groups(tiny_model)['encoder.blocks.00'][0]
    with pytest.raises(UserError, match='two activations'):
        quantize_activation_matmuls(tiny_model, tmp_path / 'x.onnx', [linear], {})


def test_matmul_kinds_tool_times_every_form():
    from experiments.matmul_kinds import KINDS, measure

    rep = measure(tokens=32, threads=1, rounds=2, burst=2)
    assert set(rep['kinds']) == set(KINDS)
    assert all(v['ms'] > 0 and v['gops'] > 0 for v in rep['kinds'].values())


def test_quantize_command_needs_frames_for_int8_attention(tiny_model, camvid_mini, tmp_path):
    import json

    from vit_seg_node.cli import main
    from vit_seg_node.core.card import load_card

    plan = tmp_path / 'plan.json'
    plan.write_text(json.dumps({'default': 'int8', 'groups': {'attention.values': 'int8'}}))
    args = ['quantize', '--model', str(tiny_model), '--out', str(tmp_path / 'q.onnx'),
            '--plan', str(plan)]
    assert main(args) == 2                                   # calibration frames missing
    assert main(args + ['--calib', str(camvid_mini), '--num-calib', '2']) == 0
    card = load_card(tmp_path / 'q.onnx')
    assert card.precision['groups']['attention.values'] == 'int8'
    assert card.precision['groups']['attention.scores'] == 'fp32'
    ops = [n.op_type for n in onnx.load(str(tmp_path / 'q.onnx')).graph.node]
    assert ops.count('MatMulIntegerToFloat') == 4


def test_reduced_model_uniform_int8_runs_close(tiny_neighbor, camvid_mini, tmp_path):
    """Neighbour merge: the token scoring's products and the biased attention go static too."""
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_optimize.export import export_onnx, frames_to_batches
    from vit_seg_optimize.plan import node_groups, uniform_plan
    from vit_seg_optimize.quant import quantize_mixed
    from vit_seg_node.backends.base import create_backend

    model, card = tiny_neighbor
    frames = [SegmentationDataset(camvid_mini, 'train', cache=False).load(i)[0] for i in range(3)]
    fp32 = tmp_path / 'nb.onnx'
    export_onnx(model, card, fp32, frames[:1])
    groups = node_groups(fp32)
    assert groups.get('reduction') and groups.get('attention.values')
    calib = frames_to_batches(frames, card)
    out = quantize_mixed(fp32, tmp_path / 'nb.int8.onnx', uniform_plan(fp32), calib,
                         card.input_name)
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert ops.count('MatMulIntegerToFloat') == sum(
        len(groups[g]) for g in groups if g.startswith('attention') or g == 'reduction')
    ref = create_backend(fp32, card, threads=1).infer(calib[0])
    got = create_backend(out, card, threads=1).infer(calib[0])
    assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.9


def test_int8_operand_range_is_halved_without_vnni():
    """AVX2's U8S8 kernel sums pairs in int16: without VNNI the int8 side stays within 63."""
    from vit_seg_optimize.static_int8 import s8_limit

    assert s8_limit(['avx2', 'fma']) == 63
    assert s8_limit(['avx2', 'avx512_vnni']) == 127 and s8_limit(['amx_int8']) == 127
    assert 255 * s8_limit(['avx2']) * 2 <= 32767 < 255 * s8_limit(['avx_vnni']) * 2
