"""Precision plans over an exported model's operator groups.

Groups: the Linear layers (MatMul/Gemm with a weight) of each encoder block and of the decoder,
attention's two activation products (``attention.scores`` = QK^T, ``attention.values`` = PV),
the token scoring, the conv stem; a plan assigns ``int8`` or ``fp32`` per group. Group names are
dotted: a plan key may name a parent (``attention``, ``encoder.blocks``) to set all its groups,
the most specific key wins. ``allocate`` turns a ``vit-seg sensitivity`` measurement into a plan.
"""

from __future__ import annotations

import os
from pathlib import Path
import re

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import load_json
from vit_seg_optimize.onnx_io import load_onnx

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
    g = load_onnx(model_path, weights=False).graph
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
    return resolve_plan(node_groups(model_path), plan)


def _lineage(group: str) -> list[str]:
    """Return a group and its dotted parents, most specific first: a.b.c, a.b, a."""
    parts = group.split('.')
    return ['.'.join(parts[:k]) for k in range(len(parts), 0, -1)]


def resolve_plan(groups: dict[str, list[str]], plan: dict) -> dict[str, str]:
    """Return each group's precision under ``plan``; UserError for unknown groups or values."""
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
    doc = load_json(p, 'precision plan')
    plan = doc.get('plan', doc) if isinstance(doc, dict) else doc
    if not isinstance(plan, dict) or not isinstance(plan.get('groups', {}), dict):
        raise UserError(f'precision plan {p} must be a mapping with a "groups" mapping')
    return plan


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
    prec = resolve_plan(groups, plan)
    return [n for g, names in groups.items() if prec[g] == precision for n in names]


def is_activation_group(group: str) -> bool:
    """Return whether a group's products take two activations (attention, token scoring)."""
    return any(p in ACTIVATION_GROUPS for p in _lineage(group))


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
