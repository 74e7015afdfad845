"""PyTorch fake quantization of Linear layers, the reference the exported INT8 models are held to.

Weights: symmetric, per output channel. Activations (each Linear's input): symmetric, per tensor,
with a scale from a calibrator run over real frames -- ``minmax`` (max |x|), ``percentile``
(the 99.99th percentile of |x|) or ``mse`` (the clipping ratio that minimises the quantization
error). This is the arithmetic of ONNX Runtime's static QDQ export with symmetric activations
(``vit_seg_optimize.quant.quantize_qdq``) and of TensorRT's explicit INT8, so the two can be
compared.
Attention's activation-activation products and LayerNorm/softmax/GELU stay in float, as there.
"""

from __future__ import annotations

import re
from typing import Iterable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

CALIBRATORS = ('minmax', 'percentile', 'mse')


def fake_quant(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric fake quantization: round(x / scale) clamped to the signed range, times scale."""
    q = 2 ** (bits - 1) - 1
    return torch.clamp(torch.round(x / scale), -q, q) * scale


class FakeQuantLinear(nn.Module):
    """A Linear whose weight and input are fake-quantized (straight-through in training)."""

    def __init__(self, linear: nn.Linear, bits: int = 8, calibrator: str = 'minmax') -> None:
        super().__init__()
        if calibrator not in CALIBRATORS:
            raise ValueError(f'calibrator must be one of {CALIBRATORS}')
        self.linear = linear
        self.bits = bits
        self.calibrator = calibrator
        self.register_buffer('act_scale', torch.tensor(0.0))
        self.calibrating = False
        self._samples: list[torch.Tensor] = []

    def weight_scale(self) -> torch.Tensor:
        """Return per-output-channel symmetric scales of the weight."""
        q = 2 ** (self.bits - 1) - 1
        return (self.linear.weight.detach().abs().amax(dim=1, keepdim=True) / q).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Calibrate (observe |x|) or run with fake-quantized input and weight."""
        if self.calibrating:
            self._samples.append(x.detach().abs().flatten().float())
            return self.linear(x)
        w = self.linear.weight
        wq = w + (fake_quant(w, self.weight_scale(), self.bits) - w).detach()
        xq = x + (fake_quant(x, self.act_scale, self.bits) - x).detach()
        return F.linear(xq, wq, self.linear.bias)

    def finish_calibration(self) -> None:
        """Set the activation scale from the observed values."""
        a = torch.cat(self._samples) if self._samples else torch.zeros(1)
        q = 2 ** (self.bits - 1) - 1
        if self.calibrator == 'minmax':
            clip = a.max()
        elif self.calibrator == 'percentile':
            k = max(1, int(round(0.9999 * a.numel())))
            clip = a.kthvalue(k).values if a.numel() < 16_000_000 else a.max()
        else:
            sub = a[torch.randperm(a.numel())[:200_000]] if a.numel() > 200_000 else a
            best, clip = None, a.max()
            for ratio in torch.linspace(0.3, 1.0, 15):
                c = a.max() * ratio
                err = ((fake_quant(sub.clamp(max=c), c / q, self.bits) - sub) ** 2).mean()
                if best is None or err < best:
                    best, clip = err, c
        self.act_scale.fill_(float(max(clip / q, 1e-12)))
        self.calibrating = False
        self._samples = []


def group_of(name: str) -> str:
    """Return the precision-plan group of a module name (as in ``vit_seg_optimize.plan``)."""
    m = re.match(r'encoder\.blocks\.(\d+)\.', name)
    if m:
        return f'encoder.blocks.{int(m.group(1)):02d}'
    return 'decoder' if name.startswith('decoder.') else 'other'


def quantize_model(model: nn.Module, plan: Optional[dict] = None, bits: int = 8,
                   calibrator: str = 'minmax') -> list[str]:
    """Replace the Linear layers of INT8 groups by FakeQuantLinear (in place); return their names.

    ``plan``: ``{'default': 'int8'|'fp32', 'groups': {group: 'int8'|'fp32'}}``; without one,
    every Linear in the encoder blocks and the decoder is quantized.
    """
    plan = plan or {'default': 'int8'}
    default = plan.get('default', 'int8')
    names = []
    for name, mod in list(model.named_modules()):
        for child_name, child in list(mod.named_children()):
            full = f'{name}.{child_name}' if name else child_name
            if not isinstance(child, nn.Linear) or group_of(full) == 'other':
                continue
            if plan.get('groups', {}).get(group_of(full), default) != 'int8':
                continue
            setattr(mod, child_name, FakeQuantLinear(child, bits, calibrator))
            names.append(full)
    return names


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Return the state dict without fake-quant wrappers: the float model's keys and weights.

    The deployed INT8 models are quantized from these float weights by the exporter, so a model
    adapted under fake quantization is saved, loaded and exported like any other.
    """
    wrapped = {n for n, m in model.named_modules() if isinstance(m, FakeQuantLinear)}
    out = {}
    for k, v in model.state_dict().items():
        owner, _, leaf = k.rpartition('.')
        if owner in wrapped:
            if leaf == 'act_scale':
                continue
        parent, _, child = owner.rpartition('.')
        if parent in wrapped and child == 'linear':
            k = f'{parent}.{leaf}'
        out[k] = v
    return out


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[torch.Tensor]) -> None:
    """Run calibration frames and freeze every FakeQuantLinear's activation scale."""
    fq = [m for m in model.modules() if isinstance(m, FakeQuantLinear)]
    for m in fq:
        m.calibrating = True
    model.eval()
    for b in batches:
        model(b)
    for m in fq:
        m.finish_calibration()


def calibrate_on_split(model: nn.Module, root: str, split: str, card, frames: int) -> None:
    """Calibrate on the first ``frames`` frames of a dataset split, pre-processed for deployment."""
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_train.transforms import EvalTransform

    ds = SegmentationDataset(root, split, None, cache=False)
    ev = EvalTransform(card)
    calibrate(model, (ev(*ds.load(i))[0][None] for i in range(min(frames, len(ds)))))
