"""Shared fixtures: a tiny exported model, a few CamVid frames, ROS domain isolation."""

from __future__ import annotations

import os
from pathlib import Path
import sys

import pytest

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / 'test' / 'data' / 'camvid_mini'
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope='session')
def camvid_mini() -> Path:
    """Return a few real CamVid frames in the SegNet layout (shipped with the tests)."""
    return MINI


@pytest.fixture(scope='session')
def frames(camvid_mini) -> list:
    """Return every val frame of the mini CamVid set (RGB uint8, 480x360)."""
    from vit_seg_node.core.datasets import SegmentationDataset

    ds = SegmentationDataset(camvid_mini, 'val', cache=False)
    return [ds.load(i)[0] for i in range(len(ds))]


@pytest.fixture(scope='session')
def tiny_model(tmp_path_factory) -> Path:
    """Export a tiny ViT segmenter (random weights, seeded) to ONNX with its card."""
    return export_tiny(tmp_path_factory.mktemp('models') / 'tiny.onnx')


@pytest.fixture(scope='session')
def tiny_model_b2(tmp_path_factory) -> Path:
    """Export ``tiny_model``'s segmenter with a static batch of two frames (two cameras a call)."""
    return export_tiny(tmp_path_factory.mktemp('models') / 'tiny_b2.onnx', batch=2)


def export_tiny(out: Path, batch: int = 1, output: str = 'logits') -> Path:
    """Export the tiny ViT segmenter (random weights, seed 0) to ``out`` with its card."""
    import torch

    from vit_seg_train.config import card_from_config, DEFAULTS, _merge
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_optimize.export import export_onnx
    from vit_seg_train.models import create_model

    torch.manual_seed(0)
    cfg = _merge(DEFAULTS, {'model': {'name': 'segvit_test', 'img_size': [64, 96],
                                      'decoder': 'linear'}})
    model = create_model('segvit_test', num_classes=11, img_size=(64, 96), decoder='linear')
    card = card_from_config(cfg, 'tiny_test', command='pytest fixture')
    frames = [SegmentationDataset(MINI, 'val', cache=False).load(i)[0] for i in range(2)]
    export_onnx(model, card, out, frames, batch=batch, output=output)
    return out


@pytest.fixture(scope='session')
def tiny_neighbor():
    """Return a tiny ViT segmenter with neighbour merge attached (seeded) and its card."""
    import torch

    from vit_seg_train.config import card_from_config, DEFAULTS, _merge
    from vit_seg_train.models import create_model
    from vit_seg_train.reduction.wiring import attach_reduction

    torch.manual_seed(0)
    model = create_model('segvit_test', num_classes=11, img_size=(64, 96)).eval()
    attach_reduction(model, {'policy': 'neighbor', 'window_first': 0.5, 'ratio': 0.3,
                             'locations': [1, 2]}, (64, 96))
    card = card_from_config(_merge(DEFAULTS, {'model': {'name': 'segvit_test',
                                                        'img_size': [64, 96]}}), 'nb')
    card.reduction = model.reduction_card
    return model, card


@pytest.fixture(scope='session')
def tiny_hybrid_neighbor():
    """Return a tiny hybrid (conv stages, skip decoder) with neighbour merge, and its card."""
    import torch

    from vit_seg_train.config import card_from_config, DEFAULTS, _merge
    from vit_seg_train.models import create_model
    from vit_seg_train.reduction.wiring import attach_reduction

    torch.manual_seed(0)
    spec = {'name': 'segvit_hybrid_test', 'img_size': [64, 96], 'stem': 'hybrid',
            'decoder': 'skip'}
    model = create_model(spec['name'], num_classes=11, img_size=(64, 96), stem='hybrid',
                         decoder='skip').eval()
    attach_reduction(model, {'policy': 'neighbor', 'window_first': 0.5, 'ratio': 0.3,
                             'locations': [0, 1]}, (64, 96))
    card = card_from_config(_merge(DEFAULTS, {'model': spec}), 'hybrid_nb')
    card.reduction = model.reduction_card
    return model, card


def ros_domain(offset: int) -> int:
    """Return a ROS_DOMAIN_ID for one test module, away from 0 and from other runs."""
    return 30 + (os.getpid() + offset) % 70
