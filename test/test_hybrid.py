"""The hybrid family: conv stages, ViT blocks on stride-16 tokens, the stride-8 skip decoder."""

import numpy as np
import onnx
import pytest
import torch
import yaml

from conftest import ROOT
from vit_seg_node.backends.base import create_backend
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_optimize.export import export_onnx, frames_to_batches, graph_problems
from vit_seg_optimize.plan import node_groups
from vit_seg_optimize.quant import quantize_mixed
from vit_seg_train.config import _merge, build_model, card_from_config, DEFAULTS, load_config
from vit_seg_train.models import create_model, list_models
from vit_seg_train.models.hybrid import HybridSegmenter
from vit_seg_train.reduction.wiring import attach_reduction

IMG = (64, 96)
NEIGHBOR = {'policy': 'neighbor', 'window_first': 0.5, 'ratio': 0.3, 'locations': [0, 1]}


def hybrid(**kw):
    torch.manual_seed(0)
    return create_model('segvit_hybrid_test', num_classes=11, img_size=IMG, stem='hybrid',
                        decoder='skip', **kw).eval()


def card_for(model, name):
    cfg = _merge(DEFAULTS, {'model': {'name': 'segvit_hybrid_test', 'img_size': list(IMG),
                                      'stem': 'hybrid', 'decoder': 'skip'}})
    card = card_from_config(cfg, name)
    card.reduction = model.reduction_card
    return card


@pytest.fixture(scope='module')
def frames(camvid_mini):
    ds = SegmentationDataset(camvid_mini, 'val', cache=False)
    return [ds.load(i)[0] for i in range(2)]


def test_registered_with_a_tiny_test_variant():
    assert {'segvit_hybrid_tiny', 'segvit_hybrid_test'} <= set(list_models())
    model = hybrid()
    y = model(torch.randn(2, 3, *IMG))
    assert y.shape == (2, 11, *IMG)
    # the decoder classifies on the stride-8 grid: the skip reaches it
    assert model.encoder.patch_embed.proj.skip.shape[-2:] == (IMG[0] // 8, IMG[1] // 8)
    with pytest.raises(KeyError, match='own stem'):
        create_model('segvit_hybrid_test', num_classes=11, img_size=IMG, stem='conv')


def test_the_skip_changes_the_output_and_can_be_left_out():
    x = torch.randn(1, 3, *IMG)
    with torch.no_grad():
        a = hybrid()(x)
        model = hybrid()
        model.encoder.patch_embed.proj.stages[2][0].body[-1][1].bias.data += 1.0
        b = model(x)
        c = hybrid(decoder_args={'d_model': 16, 'skip_dim': 0, 'depth': 1})(x)
    assert not torch.allclose(a, b) and c.shape == a.shape


def test_zero_budget_and_reduced_decoding_equal_the_dense_model():
    x = torch.randn(2, 3, *IMG)
    model = hybrid()
    with torch.no_grad():
        ref = model(x)
        attach_reduction(model, {'policy': 'neighbor', 'ratio': 0.0, 'locations': [1]}, IMG)
        assert torch.equal(model(x), ref)
        attach_reduction(model, NEIGHBOR, IMG)
        tokens, assign = model.forward_tokens(x)
        assert assign is not None and tokens.shape[1] < 24
        got = model.forward_head(tokens, (4, 6), assign)
        dense = model.forward_features(x)
        want = model.forward_head(dense, (4, 6))
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize('reduction', [None, NEIGHBOR], ids=['dense', 'neighbor'])
def test_exports_static_and_matches_pytorch(reduction, frames, tmp_path):
    model = hybrid()
    attach_reduction(model, reduction, IMG)
    card = card_for(model, 'hybrid')
    path = tmp_path / 'h.onnx'
    rep = export_onnx(model, card, path, frames)
    assert rep['max_relative_error'] < 1e-4
    assert graph_problems(path) == []
    groups = node_groups(path)
    assert [g for g in groups if g.startswith('encoder.blocks.')] == \
        ['encoder.blocks.00', 'encoder.blocks.01']
    assert len(groups['stem']) > 10            # the conv stages (BatchNorm folded)
    # the mixed INT8 form (Linear layers of the blocks in INT8, convolutions float) runs close
    q = quantize_mixed(path, tmp_path / 'q.onnx', {'default': 'int8'})
    x = frames_to_batches(frames[:1], card)[0]
    ref = create_backend(path, card, threads=1).infer(x)
    got = create_backend(q, card, threads=1).infer(x)
    assert np.mean(got.argmax(1) == ref.argmax(1)) > 0.9
    ops = {n.op_type for n in onnx.load(str(q)).graph.node}
    assert ops & {'MatMulInteger', 'DynamicQuantizeLinear'}


FINE = {'d_model': 16, 'skip_dim': 8, 'depth': 1, 'fine_dim': 8}
NARROW = {**FINE, 'fine_context': 4}     # stride-8 features narrowed to 4 channels first


def test_the_narrow_refinement_moves_fewer_channels_at_stride4():
    wide, narrow = hybrid(decoder_args=FINE), hybrid(decoder_args=NARROW)
    assert wide.decoder.fine.block[0][0].in_channels == 16 + 8
    assert narrow.decoder.fine.block[0][0].in_channels == 4 + 8
    assert wide.decoder.fine.context is None and narrow.decoder.fine.context[0].out_channels == 4
    with pytest.raises(ValueError, match='fine_context'):
        hybrid(decoder_args={**FINE, 'fine_context': -1})


@pytest.mark.parametrize('args', [FINE, NARROW], ids=['wide', 'narrow'])
def test_the_stride4_refinement_starts_as_the_stride8_decoder(args):
    import torch.nn.functional as F

    x = torch.randn(1, 3, *IMG)
    base, fine = hybrid(), hybrid(decoder_args=args)
    missing, unexpected = fine.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith('decoder.fine.') for k in missing)
    with torch.no_grad():
        want = base.forward_head(base.forward_features(x), (4, 6))        # stride 8: 8 x 12
        want = F.interpolate(want, size=(16, 24), mode='bilinear', align_corners=False)
        got = fine.forward_head(fine.forward_features(x), (4, 6))         # stride 4
        assert got.shape == (1, 11, 16, 24) and torch.allclose(got, want, atol=1e-6)
        fine.decoder.fine.classifier.bias += 1.0                          # training moves it
        assert not torch.allclose(fine.forward_head(fine.forward_features(x), (4, 6)), want)
        assert fine(x).shape == base(x).shape == (1, 11, *IMG)


def test_init_from_may_lack_only_the_named_new_layers(tmp_path):
    from safetensors.torch import save_file

    from vit_seg_node.core.errors import UserError
    from vit_seg_train.train import load_initial_weights, set_train_mode

    def saved(model, name):
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / name)
        return str(tmp_path / name)

    base, fine = hybrid(), hybrid(decoder_args=FINE)
    load_initial_weights(fine, saved(base, 'base.safetensors'), ['decoder.fine'])
    assert torch.equal(fine.decoder.classifier.weight, base.decoder.classifier.weight)
    with pytest.raises(UserError, match='missing'):
        load_initial_weights(hybrid(decoder_args=FINE), str(tmp_path / 'base.safetensors'))
    with pytest.raises(UserError, match='unexpected'):     # a checkpoint with more than the model
        load_initial_weights(hybrid(), saved(fine, 'fine.safetensors'), ['decoder.fine'])
    wider = hybrid(decoder_args={'d_model': 24, 'skip_dim': 8, 'depth': 1})
    with pytest.raises(UserError, match='size mismatch'):  # a tensor of another shape: one line
        load_initial_weights(wider, str(tmp_path / 'base.safetensors'))
    set_train_mode(fine, 'encoder')                        # new decoder BatchNorm learns its stats
    bns = [m for m in fine.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert not any(m.training for m in bns if m in set(fine.encoder.modules()))
    assert all(m.training for m in fine.decoder.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_trainable_names_train_only_those_modules_and_keep_every_other_statistic():
    from vit_seg_node.core.errors import UserError
    from vit_seg_train.train import freeze_parameters, set_train_mode

    fine = hybrid(decoder_args=FINE)
    freeze_parameters(fine, ['decoder.fine'])
    learning = {n for n, p in fine.named_parameters() if p.requires_grad}
    assert learning and all(n.startswith('decoder.fine.') for n in learning)
    set_train_mode(fine, False, ['decoder.fine'])
    bns = {n: m.training for n, m in fine.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}
    assert any(bns.values()) and all(t == n.startswith('decoder.fine.') for n, t in bns.items())
    before = {k: v.clone() for k, v in fine.state_dict().items()}
    fine(torch.randn(2, 3, *IMG)).sum().backward()                  # one step of a frozen rest
    torch.optim.SGD([p for p in fine.parameters() if p.requires_grad], lr=0.1).step()
    changed = {k for k, v in fine.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith('decoder.fine.') for k in changed)
    freeze_parameters(hybrid(), 'decoder')                           # the named forms still work
    for bad in (['decoder.nothing'], [], 'encoder', [3], {'decoder': 1}):
        with pytest.raises(UserError, match='train.trainable'):
            freeze_parameters(hybrid(decoder_args=FINE), bad)


@pytest.mark.parametrize('args', [FINE, NARROW], ids=['wide', 'narrow'])
def test_the_refined_decoder_exports_static_and_matches_pytorch(frames, tmp_path, args):
    model = hybrid(decoder_args=args)
    with torch.no_grad():
        model.decoder.fine.classifier.bias += 0.5          # not the zero start
    card = card_for(model, 'fine')
    rep = export_onnx(model, card, tmp_path / 'f.onnx', frames)
    assert rep['max_relative_error'] < 1e-4 and graph_problems(tmp_path / 'f.onnx') == []
    # the Q/DQ form for TensorRT passes the same checks
    from vit_seg_optimize.quant import quantize_qdq

    calib = frames_to_batches(frames[:2], card)
    q = quantize_qdq(tmp_path / 'f.onnx', tmp_path / 'q.onnx', calib, card.input_name)
    assert graph_problems(q) == [] and any(
        n.op_type == 'QuantizeLinear' for n in onnx.load(str(q)).graph.node)


def test_trains_on_crops_smaller_than_its_input(tmp_path):
    from pathlib import Path

    from vit_seg_train.train import train

    root = Path(__file__).resolve().parent.parent
    cfg = yaml.safe_load((root / 'training' / 'configs' / 'test_tiny.yaml').read_text())
    cfg['model'] = {'name': 'segvit_hybrid_test', 'img_size': [64, 96], 'stem': 'hybrid',
                    'decoder': 'skip'}
    cfg['data'].update(root=str(root / 'test' / 'data' / 'camvid_mini'), crop=[32, 64])
    cfg['output_dir'] = str(tmp_path / 'run')
    cfg['train'].update(max_steps=4)
    (tmp_path / 'c.yaml').write_text(yaml.safe_dump(cfg))
    assert train(str(tmp_path / 'c.yaml'))['steps'] == 4


HYBRID_CONFIGS = sorted(p for p in (ROOT / 'training' / 'configs').rglob('*.yaml')
                        if 'segvit_hybrid' in p.read_text())


@pytest.mark.parametrize('path', HYBRID_CONFIGS, ids=lambda p: p.stem)
def test_hybrid_training_configs_build(path):
    """Every hybrid training config in the repository names known options and builds its model."""
    cfg = load_config(path)
    doc = yaml.safe_load(path.read_text())
    for section in ('data', 'train'):
        assert set(doc.get(section) or {}) <= set(DEFAULTS[section]), (path, section)
    model = build_model(cfg)
    assert isinstance(model, HybridSegmenter)
    assert model.encoder.patch_embed.proj.skip_channels == cfg['model'].get(
        'conv_widths', [16, 24, 48, 96])[2]


def test_a_config_that_cannot_build_its_model_is_one_user_error(tmp_path):
    from vit_seg_node.core.errors import UserError

    base = {'model': {'name': 'segvit_hybrid_test', 'img_size': list(IMG), 'stem': 'hybrid',
                      'decoder': 'skip', 'decoder_args': {**FINE, 'fine_context': -1}}}
    for model, match in ((base['model'], 'fine_context must be >= 0'),
                         ({**base['model'], 'name': 'segvit_nothing'}, 'unknown model'),
                         ({**base['model'], 'stem': 'conv'}, 'own stem')):
        (tmp_path / 'c.yaml').write_text(yaml.safe_dump({'model': model}))
        with pytest.raises(UserError, match=match):
            build_model(load_config(tmp_path / 'c.yaml'))
