"""Quantization: plan groups, QDQ placement, dynamic INT8, allocation."""

from pathlib import Path
import shutil

import numpy as np
import onnx
import pytest

from vit_seg_optimize.export import frames_to_batches
from vit_seg_optimize.plan import allocate, node_groups, plan_fp32_nodes
from vit_seg_optimize.quant import quantize_mixed, quantize_qdq
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.backends.base import create_backend
from vit_seg_node.core.card import load_card


def test_groups_cover_blocks_and_decoder(tiny_model):
    groups = node_groups(tiny_model)
    assert [g for g in groups if g.startswith('encoder.blocks.')] == \
        [f'encoder.blocks.{i:02d}' for i in range(4)]
    assert all(groups.values())
    # attention's two activation products per block and the stem convolutions are groups too
    assert len(groups['attention.scores']) == 4 and len(groups['attention.values']) == 4
    assert len(groups['stem']) >= 4
    assert not any('/attn/qkv/' in n for g in ('attention.scores', 'attention.values')
                   for n in groups[g])


def test_plan_keys_name_groups_or_their_parents(tiny_model):
    import pytest

    from vit_seg_optimize.plan import group_precisions
    from vit_seg_node.core.errors import UserError

    prec = group_precisions(tiny_model, {'default': 'int8', 'groups': {
        'attention': 'int8', 'attention.scores': 'fp32', 'encoder.blocks': 'fp32'}})
    assert prec['attention.values'] == 'int8' and prec['attention.scores'] == 'fp32'
    assert prec['encoder.blocks.02'] == 'fp32' and prec['decoder'] == 'int8'
    assert prec['stem'] == 'fp32'                      # float by default unless named
    with pytest.raises(UserError, match='unknown groups'):
        group_precisions(tiny_model, {'groups': {'attn': 'int8'}})


def test_plan_decides_which_operators_are_int8(tiny_model, camvid_mini, tmp_path):
    import pytest

    from vit_seg_node.core.errors import UserError

    def quantized(path):
        """Return the INT8 forms in a model: dynamic MatMuls, static products, Q/DQ convs."""
        g = onnx.load(str(path)).graph
        producer = {o: n for n in g.node for o in n.output}
        kinds = {n.op_type for n in g.node} & {'DynamicQuantizeLinear', 'MatMulIntegerToFloat'}
        if any(n.op_type == 'Conv' and producer.get(n.input[0]) is not None and
               producer[n.input[0]].op_type == 'DequantizeLinear' for n in g.node):
            kinds.add('qdq-conv')
        return kinds
    default = quantize_mixed(tiny_model, tmp_path / 'default.onnx', {'default': 'int8'})
    assert quantized(default) == {'DynamicQuantizeLinear'}      # Linear layers only
    plan = {'default': 'int8', 'groups': {'attention': 'int8', 'stem': 'int8'}}
    with pytest.raises(UserError, match='calibrat'):   # static forms need calibration frames
        quantize_mixed(tiny_model, tmp_path / 'all.onnx', plan)
    with pytest.raises(UserError, match='calibrat'):
        quantize_mixed(tiny_model, tmp_path / 'stem.onnx', {'groups': {'stem': 'int8'}})
    calib = frames_to_batches([SegmentationDataset(camvid_mini, 'train', cache=False).load(0)[0]],
                              load_card(tiny_model))
    everything = quantize_mixed(tiny_model, tmp_path / 'all.onnx', plan, calib)
    assert quantized(everything) == {'DynamicQuantizeLinear', 'MatMulIntegerToFloat', 'qdq-conv'}
    ops = [n.op_type for n in onnx.load(str(everything)).graph.node]
    assert ops.count('MatMulIntegerToFloat') == 2 * 4   # attention's products, static U8S8
    assert 'ConvInteger' not in ops                      # the slow dynamic conv form
    assert plan_fp32_nodes(tiny_model, plan) == []
    none = quantize_mixed(tiny_model, tmp_path / 'none.onnx', {'default': 'fp32'})
    assert not quantized(none)
    ref = create_backend(tiny_model, load_card(tiny_model), threads=1).infer(calib[0])
    got = create_backend(everything, load_card(tiny_model), threads=1).infer(calib[0])
    assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.9


def test_fp32_layer_in_plan_has_no_qdq(tiny_model, camvid_mini, tmp_path):
    card = load_card(tiny_model)
    ds = SegmentationDataset(camvid_mini, 'train', cache=False)
    calib = frames_to_batches([ds.load(i)[0] for i in range(3)], card)
    plan = {'default': 'int8', 'groups': {'encoder.blocks.00': 'fp32'}}
    out = quantize_qdq(tiny_model, tmp_path / 'q.onnx', calib, card.input_name, 'minmax', plan)
    g = onnx.load(str(out)).graph
    producer = {o: n for n in g.node for o in n.output}
    fp32 = set(plan_fp32_nodes(tiny_model, plan))
    checked = 0
    for n in g.node:
        if n.op_type not in ('MatMul', 'Gemm'):
            continue
        fed_by_dq = [producer.get(i) is not None and producer[i].op_type == 'DequantizeLinear'
                     for i in n.input]
        if n.name in fp32:
            assert not any(fed_by_dq), n.name
            checked += 1
        elif '/blocks.1/attn/qkv/' in n.name:
            assert any(fed_by_dq), n.name
    assert checked >= 4
    # symmetric activations and weights: every zero point is 0 (TensorRT's requirement)
    for init in g.initializer:
        if 'zero_point' in init.name:
            assert not np.any(onnx.numpy_helper.to_array(init)), init.name


def test_dynamic_int8_runs_and_stays_close(tiny_model, camvid_mini, tmp_path):
    card = load_card(tiny_model)
    out = quantize_mixed(tiny_model, tmp_path / 'd.onnx', {'default': 'int8'})
    frame = SegmentationDataset(camvid_mini, 'val', cache=False).load(0)[0]
    x = frames_to_batches([frame], card)[0]
    ref = create_backend(tiny_model, card, threads=1).infer(x)
    got = create_backend(out, card, threads=1).infer(x)
    assert got.shape == ref.shape
    assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.9


def test_allocation_respects_budget():
    sens = {'groups': {
        'a': {'miou_drop': 0.0, 'latency_gain_ms': 2.0},
        'b': {'miou_drop': 0.004, 'latency_gain_ms': 3.0},
        'c': {'miou_drop': 0.003, 'latency_gain_ms': 0.5},
        'd': {'miou_drop': -0.001, 'latency_gain_ms': 1.0},
        'e': {'miou_drop': 0.0, 'latency_gain_ms': -0.7}}}   # free but slower: stays FP32
    plan = allocate(sens, 0.005)
    assert plan['groups'] == {'a': 'int8', 'b': 'int8', 'c': 'fp32', 'd': 'int8', 'e': 'fp32'}
    assert plan['estimated_drop'] <= 0.005


def _tiny_torch_model():
    import torch

    from vit_seg_train.models import create_model

    torch.manual_seed(0)   # the tiny_model fixture's seed: the same weights
    return create_model('segvit_test', num_classes=11, img_size=(64, 96), decoder='linear').eval()


def test_fakequant_16bit_matches_fp32(camvid_mini):
    import copy

    import torch

    from vit_seg_train.fakequant import calibrate, quantize_model
    from vit_seg_node.core.card import CAMVID_CLASSES, CAMVID_PALETTE, ModelCard

    model = _tiny_torch_model()
    card = ModelCard(name='t', input_height=64, input_width=96, classes=CAMVID_CLASSES,
                     palette=CAMVID_PALETTE)
    ds = SegmentationDataset(camvid_mini, 'train', cache=False)
    x = [torch.from_numpy(b) for b in frames_to_batches([ds.load(i)[0] for i in range(3)], card)]
    q16 = copy.deepcopy(model)
    assert len(quantize_model(q16, bits=16)) == 4 * 4 + 1   # 4 Linears per block + head
    calibrate(q16, x)
    with torch.no_grad():
        ref, got = model(x[0]), q16(x[0])
    assert torch.linalg.norm(got - ref) / torch.linalg.norm(ref) < 1e-2


def test_exported_int8_matches_pytorch_fakequant(tiny_model, camvid_mini, tmp_path):
    """Tolerance: relative logit error < 0.1 and labels agree on > 97 % of the pixels."""
    import copy

    import torch

    from vit_seg_train.fakequant import calibrate, quantize_model

    model = _tiny_torch_model()
    card = load_card(tiny_model)
    train = SegmentationDataset(camvid_mini, 'train', cache=False)
    calib = frames_to_batches([train.load(i)[0] for i in range(len(train))], card)
    fq = copy.deepcopy(model)
    quantize_model(fq)
    calibrate(fq, [torch.from_numpy(b) for b in calib])
    out = quantize_qdq(tiny_model, tmp_path / 'q.onnx', calib, card.input_name, 'minmax')
    backend = create_backend(out, card, threads=1)
    val = SegmentationDataset(camvid_mini, 'val', cache=False)
    for i in range(len(val)):
        x = frames_to_batches([val.load(i)[0]], card)[0]
        with torch.no_grad():
            ref = fq(torch.from_numpy(x)).numpy()
        got = backend.infer(x)
        assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < 0.1
        assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.97


def test_float16_typed_qdq_for_strongly_typed_tensorrt(tiny_neighbor, camvid_mini, tmp_path):
    """Q/DQ + FP16-typed blocks (opset 19); token scoring, I/O and TopK stay FP32; it runs."""
    import pytest

    from vit_seg_optimize.export import export_onnx
    from vit_seg_optimize.float16 import to_float16
    from vit_seg_node.core.errors import UserError

    model, card = tiny_neighbor
    ds = SegmentationDataset(camvid_mini, 'train', cache=False)
    frames = [ds.load(i)[0] for i in range(3)]
    calib = frames_to_batches(frames, card)
    for opset in (17, 19):
        fp32 = tmp_path / f'm{opset}.onnx'
        export_onnx(model, card, fp32, frames[:1], opset=opset)
        qdq = quantize_qdq(fp32, tmp_path / f'q{opset}.onnx', calib, card.input_name)
    with pytest.raises(UserError, match='opset >= 19'):
        to_float16(tmp_path / 'q17.onnx', tmp_path / 'bad.onnx')
    out = to_float16(qdq, tmp_path / 'q16.onnx')
    g = onnx.load(str(out)).graph
    f32, f16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert g.input[0].type.tensor_type.elem_type == f32
    types = {v.name: v.type.tensor_type.elem_type for v in
             list(onnx.shape_inference.infer_shapes(onnx.load(str(out))).graph.value_info)}
    topk_in = [types.get(n.input[0]) for n in g.node if n.op_type == 'TopK']
    assert topk_in and all(t == f32 for t in topk_in)         # token selection stays FP32
    scales = {i.name: i.data_type for i in g.initializer if i.name.endswith('_scale')}
    assert scales and f16 in scales.values()                   # FP16-typed Q/DQ in the blocks
    qkv = [n for n in g.node if n.op_type == 'MatMul' and '/blocks.1/attn/qkv' in n.name]
    assert qkv and types.get(qkv[0].output[0]) == f16
    ref = create_backend(tmp_path / 'm19.onnx', card, threads=1).infer(calib[0])
    got = create_backend(out, card, threads=1).infer(calib[0])
    assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.9


def test_sensitivity_report_drives_the_quantize_command(tiny_model, camvid_mini, tmp_path):
    import json

    from vit_seg_optimize.sensitivity import sensitivity
    from vit_seg_node.cli import main

    card = load_card(tiny_model)
    calib = frames_to_batches([SegmentationDataset(camvid_mini, 'train', cache=False).load(0)[0]],
                              card)
    sens = sensitivity(tiny_model, card, str(camvid_mini), 'val', limit=2, threads=1, pairs=3,
                       calibration=calib)
    assert set(sens['groups']) == set(node_groups(tiny_model))
    for s in sens['groups'].values():
        assert {'miou_drop', 'latency_gain_ms', 'noise_ms'} <= set(s) and s['noise_ms'] >= 0
    sens['plan'] = allocate(sens, 0.005)
    report = tmp_path / 'sens.json'
    report.write_text(json.dumps(sens))
    out = tmp_path / 'm.onnx'
    assert main(['quantize', '--model', str(tiny_model), '--out', str(out), '--plan',
                 str(report), '--calib', str(camvid_mini), '--num-calib', '2']) == 0
    groups = load_card(out).precision['groups']
    assert groups == {g: sens['plan']['groups'][g] for g in groups}
    bad = tmp_path / 'bad.json'
    bad.write_text('{"default": "int8", "groups": {"encoder.blocks.00": "int4"}}')
    assert main(['quantize', '--model', str(tiny_model), '--out', str(tmp_path / 'b.onnx'),
                 '--plan', str(bad)]) == 2


def test_quantized_card_drops_float_metrics_until_eval_records(tiny_model, camvid_mini, tmp_path,
                                                               caplog):
    from vit_seg_node.cli import main

    out = tmp_path / 'q.onnx'
    assert main(['quantize', '--model', str(tiny_model), '--out', str(out)]) == 0
    # ONNX Runtime quantizer's advice ("consider pre-processing ...") is not shown to users
    assert not [r for r in caplog.records if 'onnxruntime' in r.pathname], caplog.text
    assert load_card(out).metrics == {}
    args = ['eval', '--model', str(out), '--data', str(camvid_mini), '--split', 'val']
    assert main(args + ['--record', '--limit', '1']) == 2
    assert main(args + ['--record']) == 0
    metrics = load_card(out).metrics
    assert 0.0 <= metrics['miou'] <= 1.0 and metrics['num_images'] == 3


def test_label_agreement_tool(tiny_model, camvid_mini, tmp_path):
    from vit_seg_optimize.agreement import agreement

    q = quantize_mixed(tiny_model, tmp_path / 'q.onnx', {'default': 'int8'})
    import shutil
    shutil.copyfile(tiny_model.with_suffix('.card.yaml'), tmp_path / 'q.card.yaml')
    rep = agreement(str(tiny_model), [str(tiny_model), str(q)], str(camvid_mini), limit=2)
    assert rep[str(tiny_model)] == 1.0 and 0.9 < rep[str(q)] <= 1.0


def test_ort_profile_attributes_kernel_time(tiny_model):
    from vit_seg_optimize.profile import profile, scope_of

    rep = profile(str(tiny_model), runs=3, threads=1, warmup=1)
    assert rep['wall_ms'] > 0 and rep['kernel_ms'] > 0
    assert abs(sum(rep['by_scope'].values()) - rep['kernel_ms']) < 1e-6
    assert 'encoder blocks' in rep['by_scope']
    assert scope_of('/model/decoder/blocks.0/attn/MatMul') == 'decoder'
    assert scope_of('/model/patch_embed/proj/Conv') == 'stem'


@pytest.mark.parametrize('family', ['tiny_neighbor', 'tiny_hybrid_neighbor'])
def test_tensorrt_qdq_fp16_form_follows_tensorrt_rules(family, camvid_mini, tmp_path, request):
    """The rules a strongly typed TensorRT build needs to run the Linear layers in INT8."""
    from vit_seg_optimize.export import export_onnx
    from vit_seg_optimize.float16 import to_float16

    model, card = request.getfixturevalue(family)
    ds = SegmentationDataset(camvid_mini, 'train', cache=False)
    frames = [ds.load(i)[0] for i in range(3)]
    calib = frames_to_batches(frames, card)
    fp32 = tmp_path / 'm.onnx'
    export_onnx(model, card, fp32, frames[:1], opset=19)
    out = to_float16(quantize_qdq(fp32, tmp_path / 'q.onnx', calib, card.input_name),
                     tmp_path / 'q16.onnx')
    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)              # node order, types, shapes
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    types = {v.name: v.type.tensor_type.elem_type for v in
             onnx.shape_inference.infer_shapes(m).graph.value_info}
    f16 = onnx.TensorProto.FLOAT16
    dqs = [n for n in g.node if n.op_type == 'DequantizeLinear']
    weight_dqs = [n for n in dqs if n.input[0] in inits]
    assert weight_dqs
    for n in dqs:   # every dequantized tensor goes straight into a MatMul/Conv/Gemm
        users = consumers.get(n.output[0], [])
        assert users and all(u.op_type in ('MatMul', 'Conv', 'Gemm') for u in users), \
            (n.name, [u.op_type for u in users])
    for n in weight_dqs:
        w = onnx.numpy_helper.to_array(inits[n.input[0]])
        scale = onnx.numpy_helper.to_array(inits[n.input[1]])
        zero = onnx.numpy_helper.to_array(inits[n.input[2]]) if len(n.input) > 2 else 0
        axis = next((a.i for a in n.attribute if a.name == 'axis'), 1)
        assert w.dtype == np.int8 and np.all(zero == 0)                  # symmetric
        assert scale.shape == (w.shape[axis],) and axis == (0 if w.ndim == 4 else 1)
        if any('/blocks.' in u.name for u in consumers[n.output[0]]):   # FP16 directly
            assert inits[n.input[1]].data_type == f16
            assert types.get(n.output[0], f16) == f16
    assert not any(n.op_type == 'Cast' and n.input[0] in {d.output[0] for d in dqs}
                   for n in g.node)
    ref = create_backend(fp32, card, threads=1).infer(calib[0])
    got = create_backend(out, card, threads=1).infer(calib[0])
    assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.97


def test_tune_allocates_on_this_machine_and_caches(tiny_model, camvid_mini, tmp_path):
    from vit_seg_node.core.card import load_card
    from vit_seg_optimize.tune import tune

    logs = []
    out = tune(tiny_model, str(camvid_mini), tmp_path / 'tuned', regime='loaded', split='val',
               limit=2, pairs=3, num_calib=2, log=logs.append)
    card = load_card(out)
    t = card.precision['tuned']
    assert t['regime'] == 'loaded' and t['threads'] in (1, 2) and t['cpu'] and t['isa']
    assert t['p50_ms'] > 0 and t['fp32_p50_ms'] > 0
    assert set(card.precision['groups'].values()) <= {'int8', 'fp32'}
    assert (out.parent / 'sensitivity.json').is_file()
    again = tune(tiny_model, str(camvid_mini), tmp_path / 'tuned', regime='loaded',
                 split='val', limit=2, pairs=3, num_calib=2, log=logs.append)
    assert again == out and logs[-1].startswith('tune: cached')
    assert [p.name for p in (tmp_path / 'tuned').iterdir()] == [out.parent.name]   # no temporaries
    assert sorted(p.name for p in out.parent.iterdir()) == [
        'fast.card.yaml', 'fast.onnx', 'sensitivity.json']
    # the pipeline (node, infer, eval) takes the tuned thread setting unless threads are asked
    from vit_seg_node.pipeline import SegmentationPipeline

    assert SegmentationPipeline(out, threads=0).options == {
        'threads': t['threads'], 'spinning': t['spinning']}
    assert SegmentationPipeline(out, threads=1).options == {'threads': 1}


def test_tune_cache_key_holds_every_argument_that_changes_the_result(tiny_model, camvid_mini):
    from vit_seg_optimize.measure import machine_info
    from vit_seg_optimize.tune import tune_key

    m = machine_info(0)
    data = {'data': str(camvid_mini), 'split': 'val', 'limit': 2, 'pairs': 3,
            'calib_split': 'fit', 'num_calib': 2}
    base = tune_key(tiny_model, m, 'loaded', 0.005, data)
    others = [tune_key(tiny_model, m, 'hot', 0.005, data),
              tune_key(tiny_model, m, 'loaded', 0.01, data)]
    for k, v in (('data', '/elsewhere'), ('split', 'heldout'), ('limit', 3), ('pairs', 4),
                 ('calib_split', 'val'), ('num_calib', 3)):
        others.append(tune_key(tiny_model, m, 'loaded', 0.005, {**data, k: v}))
    assert len({base, *others}) == len(others) + 1


def test_tune_interrupted_entry_is_ignored_and_two_tunes_at_once_both_succeed(
        tiny_model, camvid_mini, tmp_path):
    """An entry whose card is missing (a run killed between the files) is tuned again.

    Two identical ``vit-seg tune`` processes at once: both exit 0 with the same whole entry.
    """
    import subprocess
    import sys

    from vit_seg_node.core.card import card_path_for, load_card
    from vit_seg_optimize.tune import tune

    model = tmp_path / 'fp32.onnx'
    shutil.copy(tiny_model, model)
    shutil.copy(card_path_for(tiny_model), card_path_for(model))
    args = ['--model', str(model), '--data', str(camvid_mini), '--out', str(tmp_path / 'c'),
            '--split', 'val', '--limit', '2', '--pairs', '3', '--regime', 'hot']
    procs = [subprocess.Popen([sys.executable, '-m', 'vit_seg_node.cli', 'tune', *args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=240) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-500:] for o in outs]
    paths = {o[0].strip().splitlines()[-1] for o in outs}
    assert len(paths) == 1
    out = Path(paths.pop())
    assert 'tuned' in load_card(out).precision
    assert [p.name for p in (tmp_path / 'c').iterdir()] == [out.parent.name]
    assert sorted(p.name for p in tmp_path.iterdir()) == ['c', 'fp32.card.yaml', 'fp32.onnx']
    card_path_for(out).unlink()          # as a run killed after the model was written left it
    logs = []
    again = tune(model, str(camvid_mini), tmp_path / 'c', regime='hot', split='val', limit=2,
                 pairs=3, log=logs.append)
    assert any('incomplete cache entry' in line for line in logs), logs
    assert again == out and 'tuned' in load_card(again).precision
