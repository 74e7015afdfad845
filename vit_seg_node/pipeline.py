"""Image in, class map out: pre-process, backend, post-process, with per-stage timings."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
import time

import cv2
import numpy as np

from vit_seg_node.core.errors import UserError
from vit_seg_node.backends.base import Backend, card_for_model, create_backend
from vit_seg_node.core.card import card_path_for, load_card, ModelCard
from vit_seg_node.core.processing import Geometry, Preprocessor, restore_labels, to_labels

DATA_DIR = Path(__file__).resolve().parent / 'data'
DEFAULT_MODEL = DATA_DIR / 'models' / 'default.onnx'
SHIPPED_LADDER = DATA_DIR / 'models' / 'cpu.ladder.yaml'


def shipped_models() -> dict[str, Path]:
    """Return the models shipped with the package: name -> path."""
    return {m.stem: m for m in sorted((DATA_DIR / 'models').glob('*.onnx'))}


def shipped_name(name: str) -> str | None:
    """Return the shipped model ``name`` means (``fast`` or ``fast.onnx``: 'fast'), else None."""
    stem = name[:-len('.onnx')] if name.endswith('.onnx') else name
    return stem if stem in shipped_models() else None


def resolve_model(model: str | os.PathLike | None) -> Path:
    """Return the model file that ``model`` names, wherever a model is taken.

    Empty: the shipped default. A file that exists: itself. Otherwise a shipped model's name,
    with or without ``.onnx`` (``fast``, ``fast.onnx``); anything else is returned as a path
    (which the caller reports as missing).
    """
    if not model:
        return default_model_path()
    path = Path(model)
    name = str(model)
    if path.is_file() or '/' in name or os.sep in name:
        return path
    stem = shipped_name(name)
    return shipped_models()[stem] if stem else path


def default_model_path() -> Path:
    """Return the shipped default model (what the node and ``vit-seg eval`` use by default)."""
    return DEFAULT_MODEL


def load_model_card(path: Path, backend: str = 'auto') -> ModelCard:
    """Return the card beside ``path``, or the one its backend builds (a training checkpoint)."""
    if not card_path_for(path).is_file():
        card = card_for_model(path, backend)
        if card is not None:
            return card
    return load_card(path)


def with_resize(card: ModelCard, resize: str) -> ModelCard:
    """Return ``card`` fitting frames by ``resize`` (stretch, letterbox, crop; card: its own)."""
    if resize in ('card', card.resize):
        return card
    return dataclasses.replace(card, resize=resize).validate()


@dataclasses.dataclass
class Segmentation:
    """One result: the class map, the resize geometry and the stage timings in ms."""

    labels: np.ndarray
    geometry: Geometry
    pre_ms: float
    infer_ms: float
    post_ms: float


def tuned_options(card: ModelCard, options: dict) -> dict:
    """Return backend options with the thread setting of a tuned card (``vit-seg tune``).

    Applied only when no thread count was asked for (``threads`` missing or 0): the setting the
    model was tuned with on this kind of machine, in its regime.
    """
    tuned = card.precision.get('tuned') if isinstance(card.precision, dict) else None
    if not tuned or options.get('threads'):
        return options
    return {**options, 'threads': int(tuned['threads']), 'spinning': bool(tuned['spinning'])}


class SegmentationPipeline:
    """Loads a model and its card once; segments RGB uint8 images, one caller at a time.

    ``resize``: how frames of another aspect ratio than the model's fit its input (the card's
    choice unless given: ``with_resize``).

    Pre-processing writes into buffers kept between calls (``core.processing.Preprocessor``).
    """

    def __init__(self, model_path: str | os.PathLike | None = None, backend: str = 'auto',
                 resize: str = 'card', **backend_options) -> None:
        path = resolve_model(model_path)
        if not path.is_file():
            raise UserError(f'model file not found: {path} (shipped models, by name: '
                            f'{", ".join(shipped_models())})')
        self.model_path = path
        self.card: ModelCard = with_resize(load_model_card(path, backend), resize)
        self.options = tuned_options(self.card, backend_options)
        self.backend: Backend = create_backend(path, self.card, backend, **self.options)
        self._preprocess = Preprocessor(self.card)

    def __call__(self, image: np.ndarray, at_source: bool = True) -> Segmentation:
        """Segment one HxWx3 RGB uint8 image; labels at its resolution or the network's.

        A model with a static batch of N > 1 runs the image alone in its batch (``segment``).
        """
        if self.card.batch > 1:
            return self.segment([image], at_source)[0]
        t0 = time.perf_counter()
        batch, geo = self._preprocess(image)
        t1 = time.perf_counter()
        out = self.backend.infer(batch)
        t2 = time.perf_counter()
        labels = to_labels(out, self.card.output_kind)[0]
        if at_source:
            labels = restore_labels(labels, geo, self.card.output_stride)
        t3 = time.perf_counter()
        return Segmentation(labels, geo, (t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3)

    def segment(self, images: list[np.ndarray], at_source: bool = True) -> list[Segmentation]:
        """Segment up to ``card.batch`` RGB uint8 images in one call of the backend.

        A batch not full is filled with copies of the last image; only the images given get a
        result. Each result has its own pre- and post-processing times (the filling counts to
        the last image's) and the call's inference time.
        """
        if not 1 <= len(images) <= self.card.batch:
            raise ValueError(f'{len(images)} images for a model with a batch of '
                             f'{self.card.batch}')
        pre, geos = [], []
        for i, image in enumerate(images):
            t = time.perf_counter()
            geos.append(self._preprocess.put(i, image))
            pre.append(time.perf_counter() - t)
        t0 = time.perf_counter()
        batch = self._preprocess.batch(len(images))
        t1 = time.perf_counter()
        pre[-1] += t1 - t0
        out = self.backend.infer(batch)
        infer_ms = (time.perf_counter() - t1) * 1e3
        labels = to_labels(out[:len(images)], self.card.output_kind)
        results = []
        for lab, geo, pre_s in zip(labels, geos, pre):
            t = time.perf_counter()
            lab = restore_labels(lab, geo, self.card.output_stride) if at_source else lab
            results.append(Segmentation(lab, geo, pre_s * 1e3, infer_ms,
                                        (time.perf_counter() - t) * 1e3))
        return results


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """Read an image file as RGB uint8; raise UserError if it is missing or unreadable."""
    from vit_seg_node.core.imagesize import DEFAULT_MAX_PIXELS, encoded_size

    p = Path(path)
    if not p.is_file():
        raise UserError(f'image not found: {p}')
    with open(p, 'rb') as f:
        size = encoded_size(f.read(65536))
    if size is not None and size[0] * size[1] > DEFAULT_MAX_PIXELS:
        raise UserError(f'image {p} declares {size[0]}x{size[1]} pixels, more than '
                        f'{DEFAULT_MAX_PIXELS}')
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise UserError(f'cannot decode image: {p}')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def check_image_path(path: str | os.PathLike) -> Path:
    """Return ``path`` if OpenCV can write its format; UserError otherwise."""
    p = Path(path)
    if not p.suffix or not cv2.haveImageWriter(str(p)):
        raise UserError(f'cannot write image {p}: unknown format {p.suffix!r} (use .png or .jpg)')
    return p


def write_image(path: str | os.PathLike, image: np.ndarray) -> None:
    """Write an RGB (HxWx3) or single-channel (HxW) uint8 image atomically, format by suffix.

    An unknown suffix, a folder that cannot be created or a failed write is a UserError; the
    target is never left half-written.
    """
    from vit_seg_node.core.io import atomic_write_bytes

    p = check_image_path(path)
    data = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
    ok, buf = cv2.imencode(p.suffix, data)
    if not ok:
        raise UserError(f'cannot encode image {p}')
    atomic_write_bytes(p, buf.tobytes())
