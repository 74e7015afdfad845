"""An exponential moving average of a model's weights (Polyak averaging), for evaluation.

On a few hundred frames the held-out score of the live weights moves by a point between
evaluations late in a schedule; the average of the recent weights sits at the top of that band
and is the model evaluated, selected and saved when ``train.ema.decay`` is set. Every floating
tensor of the state dict (parameters and BatchNorm statistics) is averaged, integer buffers are
copied. The decay ramps up as ``min(decay, (1 + step) / (10 + step))`` so the first steps, whose
weights are still near the initialisation, do not dominate the average; the ramp reaches ``d``
only after ``9 / (1 - d) - 10`` steps (8990 for 0.999), so a shorter run averages with the ramp's
value throughout (0.998 at step 4950).

Only the process that evaluates keeps an average (rank 0 under DDP).
"""

from __future__ import annotations

import copy
from typing import Any

import torch
import torch.nn as nn


def ema_decay(decay: float, step: int) -> float:
    """Return the decay used at optimisation step ``step`` (0-based): ramped up to ``decay``."""
    return min(decay, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def update_average(average: nn.Module, model: nn.Module, decay: float) -> None:
    """Move ``average`` towards ``model``: floats by ``1 - decay``, other tensors copied.

    The floating tensors move in one fused ``_foreach_lerp_`` (one kernel launch per group on a
    GPU, not one per tensor); the state dicts are read anew each step, so a buffer a module
    reassigns (fake quantization's ranges) is followed.
    """
    live = model.state_dict()
    avgs, curs = [], []
    for name, avg in average.state_dict().items():
        cur = live[name].detach()
        if avg.is_floating_point():
            avgs.append(avg)
            curs.append(cur.to(avg.dtype))
        else:
            avg.copy_(cur)
    if avgs:
        torch._foreach_lerp_(avgs, curs, 1.0 - decay)


class WeightAverage:
    """The averaged copy of a model, kept in eval mode; ``state``/``load`` for checkpoints."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f'train.ema.decay must be in (0, 1), got {decay}')
        self.decay = float(decay)
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    def update(self, model: nn.Module, step: int) -> None:
        """Fold in the weights of ``model`` after optimisation step ``step`` (0-based)."""
        update_average(self.module, model, ema_decay(self.decay, step))

    def state(self) -> dict[str, Any]:
        """Return the averaged state dict (for the run's checkpoint)."""
        return self.module.state_dict()

    def load(self, state: dict[str, Any]) -> None:
        """Restore the average from a checkpoint."""
        self.module.load_state_dict(state)
