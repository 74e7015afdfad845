"""The model card: one YAML file that travels beside every exported model.

``model.onnx`` (or ``model.engine``) has its card at ``model.card.yaml``. Everything a backend, the
node, replay or the benchmark needs to run the model is read from the card, never guessed from the
file name: input size and layout, normalisation, classes and palette, the token-reduction schedule,
the per-layer precision plan, and the exact command that produced the file.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import atomic_write_text, load_yaml

CARD_FORMAT = 'vit_seg_node/model-card/1'
CARD_SUFFIX = '.card.yaml'
RESIZE_MODES = ('stretch', 'letterbox')
OUTPUT_KINDS = ('logits', 'labels')


class ModelCardError(UserError):
    """The model card is missing or does not describe a usable model."""


@dataclasses.dataclass
class ModelCard:
    """Everything needed to run an exported segmentation model."""

    name: str
    input_height: int
    input_width: int
    classes: list[str]
    palette: list[list[int]]
    mean: list[float] = dataclasses.field(default_factory=lambda: [0.485, 0.456, 0.406])
    std: list[float] = dataclasses.field(default_factory=lambda: [0.229, 0.224, 0.225])
    ignore_index: int = 255
    resize: str = 'stretch'
    input_name: str = 'image'
    output_name: str = 'logits'
    output_kind: str = 'logits'
    backbone: str = ''
    decoder: str = ''
    reduction: dict[str, Any] = dataclasses.field(default_factory=lambda: {'policy': 'none'})
    precision: dict[str, Any] = dataclasses.field(default_factory=lambda: {'default': 'fp32'})
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    command: str = ''
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Return the number of classes the model predicts."""
        return len(self.classes)

    def validate(self) -> 'ModelCard':
        """Raise ModelCardError when a field cannot describe a working model."""
        if self.input_height <= 0 or self.input_width <= 0:
            raise ModelCardError(f'input size must be positive, got '
                                 f'{self.input_height}x{self.input_width}')
        if not self.classes:
            raise ModelCardError('card lists no classes')
        if len(self.palette) < len(self.classes):
            raise ModelCardError(f'palette has {len(self.palette)} colours for '
                                 f'{len(self.classes)} classes')
        if any(len(c) != 3 or not all(0 <= v <= 255 for v in c) for c in self.palette):
            raise ModelCardError('palette entries must be [r, g, b] in 0..255')
        if len(self.mean) != 3 or len(self.std) != 3 or any(s <= 0 for s in self.std):
            raise ModelCardError('mean and std must have 3 entries, std > 0')
        if self.resize not in RESIZE_MODES:
            raise ModelCardError(f'resize must be one of {RESIZE_MODES}, got {self.resize!r}')
        if self.output_kind not in OUTPUT_KINDS:
            raise ModelCardError(f'output kind must be one of {OUTPUT_KINDS}')
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the YAML document for this card."""
        return {
            'format': CARD_FORMAT,
            'name': self.name,
            'input': {'name': self.input_name, 'height': self.input_height,
                      'width': self.input_width, 'layout': 'NCHW', 'dtype': 'float32',
                      'resize': self.resize, 'mean': list(self.mean), 'std': list(self.std)},
            'output': {'name': self.output_name, 'kind': self.output_kind},
            'classes': list(self.classes),
            'palette': [list(map(int, c)) for c in self.palette],
            'ignore_index': int(self.ignore_index),
            'backbone': self.backbone,
            'decoder': self.decoder,
            'reduction': self.reduction,
            'precision': self.precision,
            'metrics': self.metrics,
            'command': self.command,
            'extra': self.extra,
        }

    @classmethod
    def from_dict(cls, doc: Any) -> 'ModelCard':
        """Build a card from its YAML document; raise ModelCardError on a malformed one."""
        if not isinstance(doc, dict):
            raise ModelCardError('model card is not a mapping')
        if doc.get('format') != CARD_FORMAT:
            raise ModelCardError(f'unknown model card format {doc.get("format")!r} '
                                 f'(expected {CARD_FORMAT!r})')
        try:
            inp, out = doc['input'], doc.get('output', {})
            return cls(
                name=str(doc['name']),
                input_height=int(inp['height']), input_width=int(inp['width']),
                input_name=str(inp.get('name', 'image')), resize=str(inp.get('resize', 'stretch')),
                mean=[float(v) for v in inp['mean']], std=[float(v) for v in inp['std']],
                output_name=str(out.get('name', 'logits')),
                output_kind=str(out.get('kind', 'logits')),
                classes=[str(c) for c in doc['classes']],
                palette=[[int(v) for v in c] for c in doc['palette']],
                ignore_index=int(doc.get('ignore_index', 255)),
                backbone=str(doc.get('backbone', '')), decoder=str(doc.get('decoder', '')),
                reduction=dict(doc.get('reduction') or {'policy': 'none'}),
                precision=dict(doc.get('precision') or {'default': 'fp32'}),
                metrics=dict(doc.get('metrics') or {}),
                command=str(doc.get('command', '')),
                extra=dict(doc.get('extra') or {}),
            ).validate()
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, ModelCardError):
                raise
            raise ModelCardError(f'model card is malformed: {type(exc).__name__}: {exc}') from None


def card_path_for(model_path: str | os.PathLike) -> Path:
    """Return where the card of ``model_path`` lives (``x.onnx`` -> ``x.card.yaml``)."""
    p = Path(model_path)
    return p.with_name(p.stem + CARD_SUFFIX)


def load_card(model_path: str | os.PathLike) -> ModelCard:
    """Load and validate the card beside ``model_path``."""
    path = card_path_for(model_path)
    if not path.is_file():
        raise ModelCardError(f'model card not found: {path} (every model needs one beside it)')
    try:
        doc = load_yaml(path, 'model card')
    except UserError as exc:
        raise ModelCardError(str(exc)) from None
    return ModelCard.from_dict(doc)


def save_card(card: ModelCard, model_path: str | os.PathLike) -> Path:
    """Write ``card`` beside ``model_path`` atomically and return the card's path."""
    card.validate()
    path = card_path_for(model_path)
    atomic_write_text(path, yaml.safe_dump(card.to_dict(), sort_keys=False, width=100))
    return path


# CamVid (SegNet layout) classes and the customary palette, used by defaults and the demo.
CAMVID_CLASSES = ['Sky', 'Building', 'Pole', 'Road', 'Pavement', 'Tree', 'SignSymbol', 'Fence',
                  'Car', 'Pedestrian', 'Bicyclist']
CAMVID_PALETTE = [[128, 128, 128], [128, 0, 0], [192, 192, 128], [128, 64, 128], [60, 40, 222],
                  [128, 128, 0], [192, 128, 128], [64, 64, 128], [64, 0, 128], [64, 64, 0],
                  [0, 128, 192]]
CAMVID_IGNORE_INDEX = 11
