"""Load a trained model from its weights file and the resolved config saved beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from training.config import build_model, load_config
from vit_seg_node.errors import UserError


def config_path_for(checkpoint: str | os.PathLike) -> Path:
    """Return the resolved config that belongs to ``checkpoint`` (``config.yaml`` beside it)."""
    return Path(checkpoint).with_name('config.yaml')


def load_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights without running code: safetensors, or ``torch.load(weights_only=True)``."""
    p = Path(checkpoint)
    if not p.is_file():
        raise UserError(f'checkpoint not found: {p}')
    if p.suffix == '.safetensors':
        from safetensors.torch import load_file

        sd = load_file(str(p))
    else:
        obj = torch.load(p, map_location='cpu', weights_only=True)
        sd = obj['model'] if isinstance(obj, dict) and 'model' in obj else obj
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def load_model(checkpoint: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model from ``config.yaml`` beside ``checkpoint`` and load its weights."""
    cfg_path = config_path_for(checkpoint)
    if not cfg_path.is_file():
        raise UserError(f'no config.yaml beside checkpoint {checkpoint}: the resolved config is '
                        f'needed to rebuild the model')
    cfg = load_config(cfg_path)
    model = build_model(cfg, pretrained=False)
    sd = load_state_dict(checkpoint)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(f'checkpoint {checkpoint} does not fit its config: missing '
                        f'{missing[:3]}, unexpected {unexpected[:3]}')
    return model.eval(), cfg
