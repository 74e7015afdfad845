"""Image in, class map out: pre-process, backend, post-process, with per-stage timings."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import time

import cv2
import numpy as np

from vit_seg_node.errors import UserError
from vit_seg_node.runtime.backends import Backend, create_backend, resolve_backend_name
from vit_seg_node.runtime.card import card_path_for, load_card, ModelCard
from vit_seg_node.runtime.processing import postprocess, preprocess

DATA_DIR = Path(__file__).resolve().parent.parent / 'data'
DEFAULT_MODEL = DATA_DIR / 'models' / 'default.onnx'


def default_model_path() -> Path:
    """Return the shipped default model (what the node and ``vit-seg eval`` use by default)."""
    return DEFAULT_MODEL


def load_model_card(path: Path, backend: str = 'auto') -> ModelCard:
    """Return the card beside ``path`` (a bare training checkpoint: built from its config)."""
    if resolve_backend_name(path, backend) == 'torch' and not card_path_for(path).is_file():
        from vit_seg_node.runtime.backends.torch_backend import card_for_checkpoint

        return card_for_checkpoint(path)
    return load_card(path)


@dataclasses.dataclass
class Segmentation:
    """One result: the class map at the source resolution and the stage timings in ms."""

    labels: np.ndarray
    pre_ms: float
    infer_ms: float
    post_ms: float


class SegmentationPipeline:
    """Loads a model and its card once; segments RGB uint8 images."""

    def __init__(self, model_path: str | os.PathLike | None = None, backend: str = 'auto',
                 **backend_options) -> None:
        path = Path(model_path) if model_path else default_model_path()
        if not path.is_file():
            raise UserError(f'model file not found: {path}')
        self.model_path = path
        self.card: ModelCard = load_model_card(path, backend)
        self.backend: Backend = create_backend(path, self.card, backend, **backend_options)

    def __call__(self, image: np.ndarray) -> Segmentation:
        """Segment one HxWx3 RGB uint8 image."""
        t0 = time.perf_counter()
        batch, geo = preprocess(image, self.card)
        t1 = time.perf_counter()
        out = self.backend.infer(batch)
        t2 = time.perf_counter()
        labels = postprocess(out, geo, self.card)
        t3 = time.perf_counter()
        return Segmentation(labels, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8; raise UserError if it is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f'image not found: {p}')
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f'cannot decode image: {p}')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def write_rgb(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB uint8 image (format from the suffix)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(p), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise UserError(f'cannot write image: {p}')
