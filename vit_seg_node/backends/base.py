"""The backend protocol and registry: backends created by name, found by file suffix.

The built-in backends (ONNX Runtime, TensorRT) live beside this module and import their library
only when created. Other packages add backends through the ``vit_seg.backends`` entry-point group
(the training package registers ``torch`` for its checkpoints), so this package never imports them.
"""

from __future__ import annotations

import functools
import importlib
from importlib import metadata
import os
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np

from vit_seg_node.core.card import ModelCard
from vit_seg_node.core.errors import UserError


@runtime_checkable
class Backend(Protocol):
    """Runs a batch through the network: NCHW float32 in, logits (NxCxHxW) or labels out."""

    name: str
    card: ModelCard

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Return the network output for ``batch``."""


class BackendError(UserError):
    """A backend cannot be created for this model on this machine."""


# name -> 'module:Class'; each class names the file suffixes it runs (``suffixes``).
BUILTIN = {
    'onnxruntime': 'vit_seg_node.backends.onnxruntime_backend:OnnxRuntimeBackend',
    'tensorrt': 'vit_seg_node.backends.tensorrt_backend:TensorRTBackend',
}
ENTRY_POINT_GROUP = 'vit_seg.backends'


@functools.lru_cache(maxsize=None)
def registry() -> dict[str, str]:
    """Return every known backend: the built-in ones and those registered by entry points."""
    found = dict(BUILTIN)
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def backend_class(name: str) -> Any:
    """Return the class of backend ``name`` (imports its module, not its library)."""
    known = registry()
    if name not in known:
        raise BackendError(f'unknown backend {name!r}; choose auto or one of {sorted(known)}')
    module, _, cls = known[name].partition(':')
    return getattr(importlib.import_module(module), cls)


def suffixes() -> dict[str, str]:
    """Return file suffix -> backend name over every known backend."""
    out: dict[str, str] = {}
    for name in registry():
        for s in backend_class(name).suffixes:
            out.setdefault(s, name)
    return out


def resolve_backend_name(model_path: str | os.PathLike, backend: str = 'auto') -> str:
    """Return the backend that runs ``model_path`` (``auto``: chosen by the file's suffix)."""
    if backend != 'auto':
        backend_class(backend)   # raises for an unknown name
        return backend
    suffix = Path(model_path).suffix.lower()
    known = suffixes()
    if suffix not in known:
        raise BackendError(f'cannot choose a backend for {model_path} (suffix {suffix!r}); '
                           f'known: {sorted(known)}')
    return known[suffix]


def card_for_model(path: Path, backend: str = 'auto') -> Optional[ModelCard]:
    """Return a card the backend builds itself for a file without one (a checkpoint), or None."""
    cls = backend_class(resolve_backend_name(path, backend))
    build = getattr(cls, 'card_for', None)
    return build(path) if build else None


def create_backend(model_path: str | os.PathLike, card: ModelCard, backend: str = 'auto',
                   **options: Any) -> Backend:
    """Create the backend for ``model_path``; options go to the backend's constructor."""
    path = Path(model_path)
    if not path.is_file():
        raise BackendError(f'model file not found: {path}')
    return backend_class(resolve_backend_name(path, backend))(path, card, **options)


def check_output_size(size, card: ModelCard, what: str) -> None:
    """Raise BackendError unless a static output height x width is the card's input / stride.

    A free (named or unknown) dimension is not checked here.
    """
    want = [card.input_height // card.output_stride, card.input_width // card.output_stride]
    if all(isinstance(d, int) for d in size) and list(size) != want:
        raise BackendError(f'{what} is {list(size)} pixels, not the card\'s input / '
                           f'output.stride ({want})')
