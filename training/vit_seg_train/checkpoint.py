"""Load a trained model from its weights file and the resolved config saved beside it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from vit_seg_train.config import build_model, load_config
from vit_seg_node.core.errors import UserError


def config_path_for(checkpoint: str | os.PathLike) -> Path:
    """Return the resolved config that belongs to ``checkpoint`` (``config.yaml`` beside it)."""
    return Path(checkpoint).with_name('config.yaml')


def run_weights(ck: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Return the weights a training checkpoint (``last.pt``) evaluates: its average, if any."""
    return ck['ema'] if 'ema' in ck else ck['model']


def load_state_dict(checkpoint: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read weights without running code: safetensors, or ``torch.load(weights_only=True)``."""
    p = Path(checkpoint)
    if not p.is_file():
        raise UserError(f'checkpoint not found: {p}')
    try:
        if p.suffix == '.safetensors':
            from safetensors.torch import load_file

            sd = load_file(str(p))
        else:
            obj = torch.load(p, map_location='cpu', weights_only=True)
            sd = run_weights(obj) if isinstance(obj, dict) and 'model' in obj else obj
    except Exception as exc:   # safetensors, pickle and zip each raise their own types
        raise UserError(f'cannot read checkpoint {p}: {type(exc).__name__}: {exc}') from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise UserError(f'checkpoint {p} holds no state dict of tensors')
    return {k: (v.float() if v.is_floating_point() else v) for k, v in sd.items()}


def load_model(checkpoint: str | os.PathLike,
               img_size: Optional[Sequence[int]] = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild the model from ``config.yaml`` beside ``checkpoint`` and load its weights.

    ``img_size`` (H, W) rebuilds it for another input size: the learned position embeddings are
    resampled (bicubic, timm's ``resample_abs_pos_embed``) to the new token grid.
    """
    cfg_path = config_path_for(checkpoint)
    if not cfg_path.is_file():
        raise UserError(f'no config.yaml beside checkpoint {checkpoint}: the resolved config is '
                        f'needed to rebuild the model')
    cfg = load_config(cfg_path)
    old_size = tuple(cfg['model']['img_size'])
    if img_size is not None and tuple(img_size) != old_size:
        cfg['model']['img_size'] = [int(img_size[0]), int(img_size[1])]
    model = build_model(cfg, pretrained=False)
    sd = load_state_dict(checkpoint)
    key = 'encoder.pos_embed'
    if key in sd and sd[key].shape != model.encoder.pos_embed.shape:
        from timm.layers import resample_abs_pos_embed

        patch = model.patch_size
        sd[key] = resample_abs_pos_embed(
            sd[key], new_size=list(model.grid_size(*cfg['model']['img_size'])),
            old_size=[old_size[0] // patch[0], old_size[1] // patch[1]],
            num_prefix_tokens=model.num_prefix_tokens)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if missing or unexpected:
        raise UserError(f'checkpoint {checkpoint} does not fit its config: missing '
                        f'{missing[:3]}, unexpected {unexpected[:3]}')
    return model.eval(), cfg
