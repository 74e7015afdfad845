"""Segmentation datasets: the SegNet/CamVid layout and any images/ + masks/ folder pair.

SegNet layout: ``ROOT/<split>/*.png`` frames and ``ROOT/<split>annot/*.png`` label maps with the
same file names. Generic layout: ``ROOT/<split>/images/*`` and ``ROOT/<split>/masks/*`` (or
``ROOT/images`` + ``ROOT/masks`` with no split), matched by file stem.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Callable, Optional

import cv2
import numpy as np

from vit_seg_node.core.errors import UserError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp')


class DatasetError(UserError):
    """The dataset directory does not hold a usable split."""


@dataclasses.dataclass(frozen=True)
class Sample:
    """One frame and its label map on disk."""

    image: Path
    label: Path


def _images_in(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir())
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


# The sequence-held-out protocol on CamVid: every frame of drive 0006R0 is held out (never trained
# on, used for selection and every accuracy figure); `fit` is the rest of `train`. `val` (drive
# 0016E5, which also gives 204 training frames) only measures a street the model has seen.
SPLIT_ALIASES = {'heldout': 'train:0006R0', 'fit': 'train:!0006R0', 'all': 'train+val'}


def sequence_of(name: str) -> str:
    """Return the sequence (drive) of a frame file name: the part before the first ``_``."""
    return name.split('_', 1)[0]


def find_split(root: str | os.PathLike, split: str) -> list[Sample]:
    """Return the frame/label pairs of ``split`` under ``root``, sorted by file name.

    ``split`` is a folder name, an alias (``SPLIT_ALIASES``, used when no folder of that name
    exists), a union ``a+b``, or a folder restricted to sequences: ``train:0006R0`` keeps the
    frames whose name starts with ``0006R0_``, ``train:!0006R0`` drops them (comma-separated
    lists allowed). Raises DatasetError for a missing directory, an empty selection, or frames and
    labels whose names do not match one to one.
    """
    root = Path(root)
    if split in SPLIT_ALIASES and not (root / split).is_dir():
        split = SPLIT_ALIASES[split]
    if '+' in split or ':' in split:
        samples = sorted({s for part in split.split('+') for s in _select(root, part)},
                         key=lambda s: s.image.name)
        if not samples:
            raise DatasetError(f'split {split!r} under {root} selects no frames')
        return samples
    return _folder_split(root, split)


def _select(root: Path, part: str) -> list[Sample]:
    folder, _, selector = part.partition(':')
    samples = _folder_split(root, folder)
    if not selector:
        return samples
    exclude = selector.startswith('!')
    wanted = {q for q in selector.lstrip('!').split(',') if q}
    if not wanted:
        raise DatasetError(f'split {part!r}: name at least one sequence after ":"')
    return [s for s in samples if (sequence_of(s.image.stem) in wanted) != exclude]


def _folder_split(root: Path, split: str) -> list[Sample]:
    if not root.is_dir():
        raise DatasetError(f'dataset directory not found: {root}')
    candidates = [(root / split, root / f'{split}annot'),
                  (root / split / 'images', root / split / 'masks'),
                  (root / 'images', root / 'masks')]
    for img_dir, lbl_dir in candidates:
        if img_dir.is_dir() and lbl_dir.is_dir():
            break
    else:
        raise DatasetError(f'no split {split!r} under {root}: expected {split}/ and {split}annot/ '
                           f'(SegNet layout) or {split}/images/ and {split}/masks/')
    images, labels = _images_in(img_dir), _images_in(lbl_dir)
    if not images:
        raise DatasetError(f'split {split!r} is empty: no images in {img_dir}')
    missing = sorted(set(images) - set(labels))
    extra = sorted(set(labels) - set(images))
    if missing or extra:
        raise DatasetError(f'image and label names do not match in {split!r}: '
                           f'{len(missing)} images without label (e.g. {missing[:2]}), '
                           f'{len(extra)} labels without image (e.g. {extra[:2]})')
    return [Sample(images[k], labels[k]) for k in sorted(images)]


def read_image(path: Path) -> np.ndarray:
    """Read an RGB uint8 frame."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f'cannot decode image {path}')
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_label(path: Path) -> np.ndarray:
    """Read a single-channel uint8 label map."""
    lbl = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lbl is None:
        raise DatasetError(f'cannot decode label map {path}')
    if lbl.ndim == 3:
        lbl = lbl[:, :, 0]
    return lbl.astype(np.uint8)


def read_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    """Read a frame and its label map; DatasetError when their sizes differ."""
    image, label = read_image(sample.image), read_label(sample.label)
    if image.shape[:2] != label.shape:
        raise DatasetError(f'label map {sample.label} is {label.shape[1]}x{label.shape[0]}, its '
                           f'frame {image.shape[1]}x{image.shape[0]}')
    return image, label


class SegmentationDataset:
    """A map-style dataset over ``find_split``; items go through ``transform``.

    The index may be an ``int`` or an ``(epoch, index)`` pair; the pair lets a seeded transform
    draw the same augmentation for the same sample in the same epoch, on any worker, which makes
    training resumable bit for bit.
    """

    def __init__(self, root: str | os.PathLike, split: str,
                 transform: Optional[Callable[..., tuple]] = None, cache: bool = True) -> None:
        self.samples = find_split(root, split)
        self.transform = transform
        self._cache: Optional[list[tuple[np.ndarray, np.ndarray]]] = None
        if cache:
            self._cache = [read_pair(s) for s in self.samples]

    def __len__(self) -> int:
        """Return the number of frames."""
        return len(self.samples)

    def load(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Return the raw RGB frame and label map ``i``."""
        if self._cache is not None:
            return self._cache[i]
        return read_pair(self.samples[i])

    def __getitem__(self, key):
        """Return ``transform(image, label, epoch=..., index=...)`` or the raw pair."""
        epoch, index = key if isinstance(key, tuple) else (0, key)
        image, label = self.load(index)
        if self.transform is None:
            return image, label
        return self.transform(image, label, epoch=epoch, index=index)


def spread_frames(root: str | os.PathLike, split: str, count: int) -> list[np.ndarray]:
    """Return ``count`` RGB frames spread evenly over a split (calibration sets)."""
    ds = SegmentationDataset(root, split, None, cache=False)
    if len(ds) == 0 or count <= 0:
        return []
    idx = np.unique(np.linspace(0, len(ds) - 1, min(count, len(ds))).round().astype(int))
    return [ds.load(int(i))[0] for i in idx]


def class_frequencies(labels: list[np.ndarray], num_classes: int) -> np.ndarray:
    """Return per-class pixel frequency over ``labels`` (ignored ids excluded)."""
    counts = np.zeros(num_classes, np.int64)
    for lbl in labels:
        counts += np.bincount(lbl.ravel(), minlength=256)[:num_classes]
    return counts / max(1, counts.sum())


def median_frequency_weights(freq: np.ndarray, max_weight: float = 10.0) -> np.ndarray:
    """Median-frequency balancing (Eigen & Fergus 2015), clipped to ``max_weight``."""
    present = freq > 0
    w = np.zeros_like(freq, dtype=np.float64)
    w[present] = np.median(freq[present]) / freq[present]
    return np.clip(w, 0.0, max_weight)
