"""The model card: one YAML file that travels beside every exported model.

``model.onnx`` (or ``model.engine``) has its card at ``model.card.yaml``. Everything a backend, the
node, replay or the benchmark needs to run the model is read from the card, never guessed from the
file name: input size and layout, normalisation, classes and palette, the token-reduction schedule,
the per-layer precision plan, and the exact command that produced the file.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import yaml

from vit_seg_node.core import schema
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import atomic_write_text, load_yaml
from vit_seg_node.core.schema import SchemaError

CARD_FORMAT = 'vit_seg_node/model-card/1'
CARD_SUFFIX = '.card.yaml'
RESIZE_MODES = ('stretch', 'letterbox', 'crop')   # crop: the centre, at the input's aspect
OUTPUT_KINDS = ('logits', 'labels')
PRECISIONS = ('fp32', 'fp16', 'int8', 'mixed')   # precision.default
MAX_THREADS = 256        # CPU threads a backend may be asked for (the node's ``threads`` range)
MAX_CLASSES = 255        # labels are uint8
MAX_INPUT_SIDE = 4096    # network input height and width
CARD_KEYS = ('format', 'name', 'input', 'output', 'classes', 'palette', 'ignore_index',
             'backbone', 'decoder', 'reduction', 'precision', 'metrics', 'command', 'extra')
INPUT_KEYS = ('name', 'batch', 'height', 'width', 'layout', 'dtype', 'resize', 'mean', 'std')
OUTPUT_KEYS = ('name', 'kind', 'stride')
MAX_OUTPUT_STRIDE = 32     # output map at 1/stride of the input (``vit-seg label-stride``)
# What the graph takes: normalised float32 planes, or the RGB bytes of the resized frame with
# the normalisation (``mean``/``std``) inside the graph (``vit-seg fold-input``).
INPUT_FORMATS = (('NCHW', 'float32'), ('NHWC', 'uint8'))
MAX_BATCH = 16           # a static batch dimension: frames of several cameras in one call


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
    input_layout: str = 'NCHW'
    input_dtype: str = 'float32'
    batch: int = 1
    output_name: str = 'logits'
    output_kind: str = 'logits'
    output_stride: int = 1
    backbone: str = ''
    decoder: str = ''
    reduction: dict[str, Any] = dataclasses.field(default_factory=lambda: {'policy': 'none'})
    precision: dict[str, Any] = dataclasses.field(default_factory=lambda: {'default': 'fp32'})
    metrics: dict[str, Any] = dataclasses.field(default_factory=dict)
    command: str = ''
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def bytes_input(self) -> bool:
        """Whether the graph takes RGB bytes (NHWC uint8) and normalises them itself."""
        return self.input_dtype == 'uint8'

    @property
    def num_classes(self) -> int:
        """Return the number of classes the model predicts."""
        return len(self.classes)

    def validate(self) -> 'ModelCard':
        """Raise ModelCardError when a field cannot describe a working model (``check_card``)."""
        check_card(self.to_dict())
        return self

    def to_dict(self) -> dict[str, Any]:
        """Return the YAML document for this card."""
        return {
            'format': CARD_FORMAT,
            'name': self.name,
            'input': {'name': self.input_name, 'batch': int(self.batch),
                      'height': self.input_height, 'width': self.input_width,
                      'layout': self.input_layout, 'dtype': self.input_dtype,
                      'resize': self.resize, 'mean': list(self.mean), 'std': list(self.std)},
            'output': {'name': self.output_name, 'kind': self.output_kind,
                       **({'stride': int(self.output_stride)} if self.output_stride != 1 else {})},
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
    def from_dict(cls, doc: Any, source: str = 'model card') -> 'ModelCard':
        """Build a card from its YAML document; ModelCardError naming the key on a bad one."""
        return cls(**check_card(doc, source))


def check_card(doc: Any, source: str = 'model card') -> dict[str, Any]:
    """Return ``ModelCard``'s fields from a card document; ModelCardError naming the bad key.

    The one schema of the card: every reader (node, CLI, benchmark, tune) and the writer
    (``save_card``) go through it. ``source`` starts the message (the card's path).
    """
    try:
        return _card_fields(doc)
    except SchemaError as exc:
        raise ModelCardError(f'{source}: {exc}') from None


def _card_fields(doc: Any) -> dict[str, Any]:
    doc = schema.mapping(doc, 'model card', CARD_KEYS)
    if doc.get('format') != CARD_FORMAT:
        raise SchemaError(f'format: must be {CARD_FORMAT!r}, got '
                          f'{schema.shorten(doc.get("format"))}')
    inp = schema.mapping(schema.required(doc, 'input'), 'input', INPUT_KEYS)
    out = schema.mapping(schema.required(doc, 'output'), 'output', OUTPUT_KEYS)
    classes = schema.sequence(schema.required(doc, 'classes'), 'classes', 1, MAX_CLASSES)
    classes = [schema.text(c, f'classes[{i}]', 64, empty=False) for i, c in enumerate(classes)]
    if len(set(classes)) < len(classes):
        raise SchemaError('classes: must be distinct names, '
                          f'{schema.shorten(next(c for c in classes if classes.count(c) > 1))} '
                          f'is listed twice')
    palette = schema.sequence(schema.required(doc, 'palette'), 'palette', 1, MAX_CLASSES)
    if len(palette) != len(classes):
        raise SchemaError(f'palette: must have one colour per class ({len(classes)}), has '
                          f'{len(palette)}')
    layout = schema.text(inp.get('layout', 'NCHW'), 'input.layout',
                         choices=sorted({f[0] for f in INPUT_FORMATS}))
    dtype = schema.text(inp.get('dtype', 'float32'), 'input.dtype',
                        choices=sorted({f[1] for f in INPUT_FORMATS}))
    if (layout, dtype) not in INPUT_FORMATS:
        raise SchemaError(f'input: layout {layout} with dtype {dtype} is not a format a graph '
                          f'takes here ({", ".join(" ".join(f) for f in INPUT_FORMATS)})')
    return dict(
        name=schema.text(schema.required(doc, 'name'), 'name', empty=False),
        input_height=schema.integer(schema.required(inp, 'height', 'input.'), 'input.height',
                                    1, MAX_INPUT_SIDE),
        input_width=schema.integer(schema.required(inp, 'width', 'input.'), 'input.width',
                                   1, MAX_INPUT_SIDE),
        input_name=schema.text(inp.get('name', 'image'), 'input.name', empty=False),
        input_layout=layout,
        input_dtype=dtype,
        batch=schema.integer(inp.get('batch', 1), 'input.batch', 1, MAX_BATCH),
        resize=schema.text(inp.get('resize', 'stretch'), 'input.resize', choices=RESIZE_MODES),
        mean=_triple(schema.required(inp, 'mean', 'input.'), 'input.mean', positive=False),
        std=_triple(schema.required(inp, 'std', 'input.'), 'input.std', positive=True),
        output_name=schema.text(schema.required(out, 'name', 'output.'), 'output.name',
                                empty=False),
        output_kind=schema.text(schema.required(out, 'kind', 'output.'), 'output.kind',
                                choices=OUTPUT_KINDS),
        output_stride=_stride(out.get('stride', 1), inp),
        classes=classes,
        palette=[[schema.integer(v, f'palette[{i}][{j}]', 0, 255) for j, v in
                  enumerate(schema.sequence(c, f'palette[{i}]', 3, 3))]
                 for i, c in enumerate(palette)],
        ignore_index=schema.integer(doc.get('ignore_index', 255), 'ignore_index', 0, 255),
        backbone=schema.text(doc.get('backbone', ''), 'backbone'),
        decoder=schema.text(doc.get('decoder', ''), 'decoder'),
        reduction=_reduction(doc.get('reduction')),
        precision=_precision(doc.get('precision')),
        metrics=dict(schema.mapping(doc.get('metrics') or {}, 'metrics')),
        command=schema.text(doc.get('command', ''), 'command', 10000),
        extra=dict(schema.mapping(doc.get('extra') or {}, 'extra')),
    )


def _stride(value: Any, inp: dict) -> int:
    """Return ``output.stride``: the output map is the input's height and width over it."""
    stride = schema.integer(value, 'output.stride', 1, MAX_OUTPUT_STRIDE)
    for side in ('height', 'width'):
        size = inp.get(side)
        if isinstance(size, int) and size % stride:
            raise SchemaError(f'output.stride: {stride} does not divide input.{side} {size}')
    return stride


def _triple(value: Any, key: str, positive: bool) -> list[float]:
    """Return three finite numbers (> 0 if ``positive``): a per-channel mean or std."""
    items = schema.sequence(value, key, 3, 3)
    return [schema.number(v, f'{key}[{i}]', 0.0 if positive else -math.inf, low_open=positive)
            for i, v in enumerate(items)]


def _reduction(value: Any) -> dict[str, Any]:
    block = dict(schema.mapping(value if value is not None else {'policy': 'none'},
                                'reduction'))
    schema.text(block.setdefault('policy', 'none'), 'reduction.policy', 64, empty=False)
    return block


def _precision(value: Any) -> dict[str, Any]:
    block = dict(schema.mapping(value if value is not None else {'default': 'fp32'},
                                'precision'))
    schema.text(block.setdefault('default', 'fp32'), 'precision.default', choices=PRECISIONS)
    if 'tuned' in block:
        tuned = schema.mapping(block['tuned'], 'precision.tuned')
        schema.integer(schema.required(tuned, 'threads', 'precision.tuned.'),
                       'precision.tuned.threads', 0, MAX_THREADS)
        schema.boolean(schema.required(tuned, 'spinning', 'precision.tuned.'),
                       'precision.tuned.spinning')
    return block


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
    return ModelCard.from_dict(doc, f'model card {path}')


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
