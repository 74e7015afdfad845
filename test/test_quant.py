"""Quantization: plan groups, QDQ placement, dynamic INT8, allocation."""

import numpy as np
import onnx

from training.export import frames_to_batches
from training.quant import allocate, node_groups, plan_fp32_nodes, quantize_mixed, quantize_qdq
from training.data import SegmentationDataset
from vit_seg_node.runtime.backends import create_backend
from vit_seg_node.runtime.card import load_card


def test_groups_cover_blocks_and_decoder(tiny_model):
    groups = node_groups(tiny_model)
    assert [g for g in groups if g.startswith('encoder.blocks.')] == \
        [f'encoder.blocks.{i:02d}' for i in range(4)]
    assert all(groups.values())


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
        'd': {'miou_drop': -0.001, 'latency_gain_ms': 1.0}}}
    plan = allocate(sens, 0.005)
    assert plan['groups'] == {'a': 'int8', 'b': 'int8', 'c': 'fp32', 'd': 'int8'}
    assert plan['estimated_drop'] <= 0.005


def _tiny_torch_model():
    import torch

    from training.models import create_model

    torch.manual_seed(0)   # the tiny_model fixture's seed: the same weights
    return create_model('segvit_test', num_classes=11, img_size=(64, 96), decoder='linear').eval()


def test_fakequant_16bit_matches_fp32(camvid_mini):
    import copy

    import torch

    from training.fakequant import calibrate, quantize_model
    from vit_seg_node.runtime.card import CAMVID_CLASSES, CAMVID_PALETTE, ModelCard

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

    from training.fakequant import calibrate, quantize_model

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
