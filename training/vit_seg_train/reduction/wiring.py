"""Wiring: run a timm ViT's own modules with a reduction schedule between its blocks.

Nothing of timm is copied or patched: the encoder's ``patch_embed``, ``_pos_embed``,
``patch_drop``, ``norm_pre``, blocks and ``norm`` are called in timm's order; the schedule only
inserts static-shape reduction steps between blocks. ``encode`` returns the reduced tokens and
the assignment of every dense position to one of them (the decoder can work on those, see
``vit_seg_train.models.decoders``); ``forward`` restores the dense grid (LayerNorm acts per
token, so
restoring after ``norm`` changes nothing). With an empty schedule this is timm's
``forward_features`` (a test checks equality bit for bit).
"""

from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn as nn

from vit_seg_train.reduction import ops
from vit_seg_train.reduction.policies import make_policy, Policy, Step


class TokenReduction(nn.Module):
    """Callable as ``reduction(encoder, images)``; returns prefix + dense patch tokens."""

    def __init__(self, policy: Policy, grid: tuple[int, int], depth: int) -> None:
        super().__init__()
        self.policy = policy
        self.grid = tuple(grid)
        self.steps: list[Optional[Step]] = policy.schedule(self.grid, depth)

    def card(self) -> dict[str, Any]:
        """Return the model-card entry for this reduction."""
        return self.policy.describe(self.grid, len(self.steps))

    def forward(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Encode ``images`` with the scheduled reductions; prefix + dense patch tokens out."""
        tokens, assign = self.encode(encoder, images)
        if assign is None:
            return tokens
        p = encoder.num_prefix_tokens
        return torch.cat([tokens[:, :p], ops.gather_tokens(tokens[:, p:], assign)], 1)

    def encode(self, encoder: nn.Module,
               images: torch.Tensor) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Encode ``images``; return prefix + *reduced* tokens and the dense assignment.

        Patch position ``q`` of the dense grid holds token ``assign[:, q]`` of the reduced tokens
        (after the prefix); ``assign`` is ``None`` when no step ran (the tokens are the dense
        grid). The final norm acts per token, so it runs on the reduced tokens.
        """
        x = encoder.patch_embed(images)
        x = encoder._pos_embed(x)
        x = encoder.patch_drop(x)
        x = encoder.norm_pre(x)
        p = encoder.num_prefix_tokens
        prefix = x[:, :p]
        state = ops.TokenState.start(x[:, p:], self.grid)
        merged = False
        for blk, step in zip(encoder.blocks, self.steps):
            if step is not None:
                state = self.policy.apply(step, blk, prefix, state, self.grid)
                merged = True
            mask = None
            if merged and self.policy.proportional_attention:
                log_size = torch.cat([state.size.new_zeros(state.size.shape[0], p, 1),
                                      state.size.log()], 1)
                t = log_size.shape[1]
                # B x 1 x T x T: the exporter mishandles a broadcast query dimension here
                mask = log_size.transpose(1, 2).unsqueeze(1).expand(-1, -1, t, -1).to(x.dtype)
            y = blk(torch.cat([prefix, state.x], 1), attn_mask=mask) if mask is not None else \
                blk(torch.cat([prefix, state.x], 1))
            prefix = y[:, :p]
            state = ops.TokenState(y[:, p:], state.size, state.pos, state.assign, state.store)
        tokens = encoder.norm(torch.cat([prefix, state.values()], 1))
        return tokens, (state.assign if merged else None)


def attach_reduction(model: nn.Module, spec: Optional[dict[str, Any]],
                     img_size: tuple[int, int]) -> nn.Module:
    """Attach the reduction described by ``spec`` to a Segmenter (``None``/none: detach)."""
    policy = make_policy(spec)
    if policy.name == 'none':
        model.reduction = None
        model.reduction_card = {'policy': 'none'}
        return model
    grid = model.grid_size(*img_size)
    model.reduction = TokenReduction(policy, grid, len(model.encoder.blocks))
    model.reduction_card = model.reduction.card()
    return model
