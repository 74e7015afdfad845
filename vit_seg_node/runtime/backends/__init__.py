"""Inference backends behind one protocol, created by name.

Each backend lives in its own module and imports its heavy dependency (``onnxruntime``,
``tensorrt``, ``torch``) only there, when it is created.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from vit_seg_node.errors import UserError
from vit_seg_node.runtime.card import ModelCard


@runtime_checkable
class Backend(Protocol):
    """Runs a batch through the network: NCHW float32 in, logits (NxCxHxW) or labels out."""

    name: str
    card: ModelCard

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Return the network output for ``batch``."""


class BackendError(UserError):
    """A backend cannot be created for this model on this machine."""


# name -> (module, class); looked up exactly, never by substring.
BACKENDS = {
    'onnxruntime': ('vit_seg_node.runtime.backends.onnxruntime_backend', 'OnnxRuntimeBackend'),
    'tensorrt': ('vit_seg_node.runtime.backends.tensorrt_backend', 'TensorRTBackend'),
    'torch': ('vit_seg_node.runtime.backends.torch_backend', 'TorchBackend'),
}
# file suffix -> backend, for backend='auto'
SUFFIX_BACKEND = {'.onnx': 'onnxruntime', '.engine': 'tensorrt', '.plan': 'tensorrt',
                  '.safetensors': 'torch', '.pt': 'torch', '.pth': 'torch'}


def resolve_backend_name(model_path: str | os.PathLike, backend: str = 'auto') -> str:
    """Return the backend that runs ``model_path`` (``auto``: chosen by the file's suffix)."""
    if backend != 'auto':
        if backend not in BACKENDS:
            raise BackendError(f'unknown backend {backend!r}; choose auto or one of '
                               f'{sorted(BACKENDS)}')
        return backend
    suffix = Path(model_path).suffix.lower()
    if suffix not in SUFFIX_BACKEND:
        raise BackendError(f'cannot choose a backend for {model_path} (suffix {suffix!r}); '
                           f'known: {sorted(SUFFIX_BACKEND)}')
    return SUFFIX_BACKEND[suffix]


def create_backend(model_path: str | os.PathLike, card: ModelCard, backend: str = 'auto',
                   **options) -> Backend:
    """Create the backend for ``model_path``; options go to the backend's constructor."""
    path = Path(model_path)
    if not path.is_file():
        raise BackendError(f'model file not found: {path}')
    name = resolve_backend_name(path, backend)
    module_name, class_name = BACKENDS[name]
    module = importlib.import_module(module_name)
    return getattr(module, class_name)(path, card, **options)
