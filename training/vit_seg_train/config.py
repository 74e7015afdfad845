"""Training configuration: YAML in, a resolved config saved beside every checkpoint.

The resolved config is the only thing needed to rebuild a model (``build_model``) or its model
card (``card_from_config``); nothing is ever rebuilt from command-line flags.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.card import CAMVID_CLASSES, CAMVID_IGNORE_INDEX, CAMVID_PALETTE, ModelCard
from vit_seg_node.core.io import atomic_write_text, load_yaml

DEFAULTS: dict[str, Any] = {
    'seed': 0,
    'output_dir': 'runs/default',
    'model': {'name': 'segvit_tiny', 'img_size': [352, 480], 'stem': 'conv',
              'decoder': 'mask_transformer', 'drop_path_rate': 0.1, 'pretrained': False},
    'data': {'root': '../shared/datasets/camvid', 'train_split': 'train', 'val_split': 'val',
             'classes': CAMVID_CLASSES, 'palette': CAMVID_PALETTE,
             'ignore_index': CAMVID_IGNORE_INDEX, 'mean': [0.485, 0.456, 0.406],
             'std': [0.229, 0.224, 0.225], 'scale_range': [0.5, 2.0], 'jitter': 0.3,
             'class_weights': 'median_frequency', 'max_class_weight': 10.0, 'cache': True,
             'stretch': False,
             # training crop (H, W); null: the model's img_size. A smaller crop trains a ViT
             # with its position embeddings resampled to the crop's grid (train.py); the saved
             # weights are those of the img_size model
             'crop': None,
             # draw frames by class rarity (sampling.py): {temperature: T}; null: uniform
             'rare_class_sampling': None,
             # paste the pixels of these classes from another training frame, with probability
             # prob (vit_seg_train.copy_paste): {classes: [Pole, SignSymbol, ...], prob: 0.5}
             'copy_paste': None,
             # where augmentation runs: host (OpenCV in DataLoader workers) or device (batched
             # tensor ops on the training device, frames decoded once: vit_seg_train.device_augment)
             'pipeline': 'host'},
    'train': {'epochs': 100, 'batch_size': 8, 'lr': 5.0e-4, 'min_lr': 1.0e-6,
              'weight_decay': 0.05, 'warmup_steps': 200, 'schedule': 'cosine',
              'grad_clip': 1.0, 'eval_every': 5, 'checkpoint_every': 100, 'num_workers': 2,
              'amp': 'auto', 'max_steps': 0, 'threads': 0, 'log_every': 10,
              'init_from': '', 'freeze_bn': False, 'trainable': 'all',
              # name prefixes init_from may lack (new layers, e.g. decoder.fine); the rest must fit
              'init_missing': [],
              # quantization-aware: {calibrator: minmax|percentile|mse, frames: N, plan: {...}}
              'fake_quant': None,
              # self-distillation from the unreduced model: {weight: a, temperature: T,
              # teacher: checkpoint (default: init_from)}; loss = CE + a * T^2 * KL
              'distill': None,
              # evaluate, select and save an exponential moving average of the weights
              # (vit_seg_train.ema): {decay: 0.999}; null: the live weights
              'ema': None},
}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML config (``yaml.safe_load``) and fill in defaults."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f'config not found: {p}')
    doc = load_yaml(p, 'config') or {}
    if not isinstance(doc, dict):
        raise UserError(f'config {p} must be a mapping')
    unknown = set(doc) - set(DEFAULTS) - {'command', 'resolved'}
    if unknown:
        raise UserError(f'config {p} has unknown sections: {sorted(unknown)}')
    return _merge(DEFAULTS, doc)


def save_config(cfg: dict[str, Any], path: str | os.PathLike) -> None:
    """Write the resolved config atomically."""
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False, width=100))


def model_kwargs(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return the registry name and constructor arguments of the config's model."""
    m = dict(cfg['model'])
    name = m.pop('name')
    m['num_classes'] = len(cfg['data']['classes'])
    return name, m


def build_model(cfg: dict[str, Any], pretrained: bool | None = None, **overrides: Any):
    """Rebuild the model described by a (resolved) config (``overrides``: constructor arguments)."""
    from vit_seg_train.models import create_model

    name, kw = model_kwargs(cfg)
    if pretrained is not None:
        kw['pretrained'] = pretrained
    kw.update(overrides)
    try:
        return create_model(name, **kw)
    except (KeyError, TypeError, ValueError) as exc:   # an unknown name, option or value
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        raise UserError(f'cannot build model {name!r} from the config: {msg}') from None


def card_from_config(cfg: dict[str, Any], name: str, command: str = '') -> ModelCard:
    """Return the model card of a model trained with ``cfg`` (before export details)."""
    d, m = cfg['data'], cfg['model']
    return ModelCard(
        name=name, input_height=int(m['img_size'][0]), input_width=int(m['img_size'][1]),
        classes=list(d['classes']), palette=[list(c) for c in d['palette']],
        mean=list(d['mean']), std=list(d['std']), ignore_index=int(d['ignore_index']),
        backbone=str(m['name']), decoder=str(m.get('decoder', '')), command=command,
    ).validate()
