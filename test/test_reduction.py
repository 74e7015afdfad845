"""Token reduction: exactness at zero budget, restoration, static ONNX graphs, cost counting."""

from __future__ import annotations

import onnx
import pytest
import torch

from vit_seg_train.config import card_from_config, DEFAULTS, _merge
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_optimize.export import export_onnx, graph_problems
from vit_seg_optimize.flops import analytic_vit_macs, count_macs
from vit_seg_train.models import create_model
from vit_seg_train.reduction import ops
from vit_seg_train.reduction.policies import make_policy, token_counts
from vit_seg_train.reduction.wiring import attach_reduction

IMG = (64, 96)   # 4 x 6 token grid for the 4-block test variant
POLICIES = {
    'tome': ({'r': 0}, {'r': 3}),
    'evit': ({'keep_rate': 1.0}, {'keep_rate': 0.6, 'locations': [1, 2]}),
    'window': ({'merge_fraction': 0.0}, {'merge_fraction': 0.5, 'at': 1}),
    'neighbor': ({'ratio': 0.0}, {'ratio': 0.3, 'locations': [1, 2]}),
}


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model('segvit_test', num_classes=11, img_size=IMG).eval()


@pytest.mark.parametrize('policy', sorted(POLICIES))
def test_zero_budget_equals_unpruned_model_exactly(policy):
    model = tiny()
    x = torch.randn(2, 3, *IMG)
    with torch.no_grad():
        ref = model(x)
        attach_reduction(model, {'policy': policy, **POLICIES[policy][0]}, IMG)
        assert model.reduction is not None  # the reduction wiring runs ...
        assert all(s is None for s in model.reduction.steps)  # ... with an empty schedule
        assert torch.equal(model(x), ref)


def test_wiring_without_steps_is_timms_forward_features():
    from vit_seg_train.reduction.wiring import TokenReduction

    model = tiny()
    x = torch.randn(1, 3, *IMG)
    with torch.no_grad():
        ref = model.encoder.forward_features(x)
        got = TokenReduction(make_policy({'policy': 'tome', 'r': 0}), (4, 6), 4)(model.encoder, x)
    assert torch.equal(got, ref)


def test_restoration_of_pruned_and_merged_tokens():
    torch.manual_seed(0)
    x = torch.randn(2, 24, 8)
    start = ops.TokenState.start(x, (4, 6))
    assert torch.equal(ops.prune(start, torch.randn(2, 24), 10).restore(), x)
    for state in (ops.bipartite_merge(start, x, 5), ops.window_merge(start, (4, 6), x, 2)):
        dense = state.restore()
        assert dense.shape == x.shape
        for b in range(2):
            for t in range(state.x.shape[1]):
                where = (state.assign[b] == t).nonzero().flatten()
                assert len(where) == int(state.size[b, t, 0].round())
                assert torch.allclose(x[b, where].mean(0), state.x[b, t], atol=1e-5)
                assert torch.allclose(dense[b, where], state.x[b, t].expand(len(where), -1))


@pytest.mark.parametrize('decoder', ['mask_transformer', 'linear'])
@pytest.mark.parametrize('policy', sorted(POLICIES))
def test_decoding_reduced_tokens_equals_decoding_the_dense_grid(policy, decoder):
    torch.manual_seed(0)
    model = create_model('segvit_test', num_classes=11, img_size=IMG, decoder=decoder).eval()
    attach_reduction(model, {'policy': policy, **POLICIES[policy][1]}, IMG)
    x = torch.randn(2, 3, *IMG)
    with torch.no_grad():
        tokens, assign = model.forward_tokens(x)
        dense = model.forward_features(x)
        assert dense.shape[1] == 24
        got = model.forward_head(tokens, (4, 6), assign)
        ref = model.forward_head(dense, (4, 6))
    if policy != 'evit':   # merging: the decoder sees fewer tokens than the grid has
        assert assign is not None and tokens.shape[1] < 24
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-5), (got - ref).abs().max()


def test_neighbor_merge_only_merges_spatial_neighbours():
    torch.manual_seed(0)
    x = torch.randn(1, 24, 32)
    x[0, 0] = x[0, 23]   # identical tokens at opposite corners: ToMe would merge them
    model = tiny()
    policy = make_policy({'policy': 'neighbor', 'ratio': 0.45, 'locations': [1]})
    step = policy.schedule((4, 6), 4)[1]
    state = policy.apply(step, model.encoder.blocks[1], x[:, :1], ops.TokenState.start(x, (4, 6)),
                         (4, 6))
    grid = torch.stack([torch.arange(24) // 6, torch.arange(24) % 6], -1).float()
    # members of one merged token were matched within the radius of a common B token
    for t in range(state.x.shape[1]):
        members = grid[(state.assign[0] == t).nonzero().flatten()]
        assert torch.cdist(members, members).max() <= 2 * step.radius + 1e-6
    assert state.x.shape[1] == 24 - step.count
    assert state.assign[0, 0] != state.assign[0, 23]


def test_schedule_is_static():
    for name, (_, budget) in POLICIES.items():
        p = make_policy({'policy': name, **budget})
        a, b = token_counts(p, (4, 6), 4), token_counts(p, (4, 6), 4)
        assert a == b and a[-1] < 24, name
    assert token_counts(make_policy({'policy': 'tome', 'r': 40}), (22, 30), 12)[:3] == \
        [620, 580, 540]


@pytest.fixture(scope='module')
def frames(camvid_mini):
    ds = SegmentationDataset(camvid_mini, 'val', cache=False)
    return [ds.load(i)[0] for i in range(2)]


@pytest.mark.parametrize('policy', sorted(POLICIES))
def test_every_policy_exports_static_and_matches(policy, frames, tmp_path):
    model = tiny()
    attach_reduction(model, {'policy': policy, **POLICIES[policy][1]}, IMG)
    cfg = _merge(DEFAULTS, {'model': {'name': 'segvit_test', 'img_size': list(IMG)}})
    card = card_from_config(cfg, policy)
    card.reduction = model.reduction_card
    path = tmp_path / f'{policy}.onnx'
    rep = export_onnx(model, card, path, frames)
    assert rep['max_relative_error'] < 1e-4
    assert graph_problems(path) == []
    ops_used = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops_used & {'Loop', 'If', 'Scan', 'NonZero', 'ScatterND', 'ScatterElements',
                           'Unique'}
    assert 'TopK' in ops_used


def test_fvcore_matches_analytic_formula():
    model = tiny()
    blocks = torch.nn.Sequential(*model.encoder.blocks)
    for n in (24, 13):
        assert count_macs(blocks, (1, n + 1, 32)) == analytic_vit_macs([n] * 4, 32)
    # the counter sees the reduced token counts: the saving equals the formula's, up to the
    # bookkeeping MatMuls of the reduction itself
    full = count_macs(model, (1, 3, *IMG))
    attach_reduction(model, {'policy': 'evit', 'keep_rate': 0.5, 'locations': [1, 2]}, IMG)
    reduced = count_macs(model, (1, 3, *IMG))
    counts = model.reduction_card['tokens_per_block']
    saving = analytic_vit_macs([24] * 4, 32) - analytic_vit_macs(counts, 32)
    assert saving > 0
    assert abs((full - reduced) - saving) / saving < 0.1


def test_gradients_through_merges_match_finite_differences():
    # training with a reduction active relies on these gradients (selection itself is discrete)
    model = tiny().double()
    attach_reduction(model, {'policy': 'neighbor', 'window_first': 0.5, 'ratio': 0.3,
                             'locations': [1, 2]}, IMG)
    x = torch.randn(1, 3, *IMG, dtype=torch.float64)
    for p, idx in ((model.encoder.blocks[2].mlp.fc1.weight, (5, 7)),
                   (model.encoder.pos_embed, (0, 5, 7))):
        g, = torch.autograd.grad((model(x) ** 2).mean(), p)
        eps = 1e-6
        with torch.no_grad():
            p[idx] += eps
            plus = (model(x) ** 2).mean().item()
            p[idx] -= 2 * eps
            minus = (model(x) ** 2).mean().item()
            p[idx] += eps
        assert abs(g[idx].item() - (plus - minus) / (2 * eps)) < 1e-7
