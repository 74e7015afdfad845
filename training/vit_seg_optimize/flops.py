"""Params, MACs and FLOPs with fvcore, which traces the model and so sees reduced token counts.

Why fvcore: it counts from a real trace (every reduction step's actual shapes, not a formula we
would have to keep in sync), handles timm models, and lets us register a handle for operators it
does not know. It counts one per multiply-accumulate, so its total is MACs; FLOPs = 2 x MACs.
``scaled_dot_product_attention`` (timm's fused attention) is added here: QK^T and AV. Token
bookkeeping (TopK, Gather, one-hot comparisons) is not counted; the one-hot merge MatMuls are.
``analytic_vit_macs`` is the textbook formula used to cross-check the count in the tests.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    from fvcore.nn.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    b_h = 1
    for d in q[:-2]:
        b_h *= d
    lq, dk = q[-2], q[-1]
    lk = k[-2]
    return int(b_h * lq * lk * dk * 2)     # QK^T and attention @ V


def count_macs(model: torch.nn.Module, input_shape: Sequence[int]) -> int:
    """Return the MACs of one forward pass at ``input_shape`` (fvcore trace)."""
    import logging

    from fvcore.nn import FlopCountAnalysis

    logging.getLogger('fvcore').setLevel(logging.ERROR)
    x = torch.zeros(*input_shape)
    with torch.no_grad():
        fca = FlopCountAnalysis(model.eval(), (x,))
        fca.set_op_handle('aten::scaled_dot_product_attention', _sdpa_handle)
        fca.unsupported_ops_warnings(False)
        fca.uncalled_modules_warnings(False)
        return int(fca.total())


def count_params(model: torch.nn.Module) -> int:
    """Return the number of parameters."""
    return sum(p.numel() for p in model.parameters())


def cost(model: torch.nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """Return ``{'params', 'macs', 'flops'}``."""
    macs = count_macs(model, input_shape)
    return {'params': count_params(model), 'macs': macs, 'flops': 2 * macs}


def analytic_vit_macs(tokens_per_block: Sequence[int], dim: int, mlp_ratio: float = 4.0,
                      prefix: int = 1) -> int:
    """Textbook MACs of ViT blocks: 4nC^2 (qkv, proj) + 2 r n C^2 (MLP) + 2 n^2 C (attention).

    Plus fvcore's convention for the two LayerNorms (5 per element each), so that the formula and
    the counter agree exactly on plain blocks.
    """
    total = 0
    for n in tokens_per_block:
        t = n + prefix
        total += 4 * t * dim * dim + int(2 * mlp_ratio * t * dim * dim) + 2 * t * t * dim
        total += 2 * 5 * t * dim
    return total
