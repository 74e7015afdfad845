"""Augmentations on uint8 arrays (OpenCV/numpy), deterministic per (seed, epoch, index)."""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import torch

from vit_seg_node.core.card import ModelCard
from vit_seg_node.core.processing import normalize, resize_to_input
from vit_seg_train.copy_paste import paste


@dataclasses.dataclass
class TrainTransform:
    """Random scale, crop, horizontal flip and photometric jitter, then normalisation.

    The image is first brought to the network's scale (``size``, the network input size; the
    crop size by default, smaller crops suit size-agnostic CNNs): aspect-preserving by default,
    or stretched exactly as the deployed pre-processing does
    (``stretch``); then scaled by a factor in ``scale_range``, cropped (padded with
    ``ignore_index`` when smaller) and flipped. With ``paste_ids`` and a ``source`` (frame index
    -> raw image and label), a frame is, with probability ``paste_prob``, overlaid with the pixels
    of those classes from another frame augmented the same way (``copy_paste``) before the
    photometric jitter. The random draws depend only on ``(seed, epoch, index)``.
    """

    crop: Sequence[int]
    mean: Sequence[float]
    std: Sequence[float]
    ignore_index: int
    seed: int = 0
    scale_range: Sequence[float] = (0.5, 2.0)
    flip: bool = True
    jitter: float = 0.3
    stretch: bool = False
    size: Sequence[int] | None = None
    paste_ids: Sequence[int] = ()
    paste_prob: float = 0.0
    source: Optional[Callable[[int], tuple[np.ndarray, np.ndarray]]] = None
    num_frames: int = 0

    def __call__(self, image: np.ndarray, label: np.ndarray, epoch: int = 0,
                 index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Return a normalised CHW float tensor and an HW int64 label tensor."""
        rng = np.random.default_rng([self.seed, epoch, index])
        image, label = self.geometric(image, label, rng)
        if self.paste_ids and self.paste_prob > 0 and self.source is not None \
                and self.num_frames > 1 and rng.random() < self.paste_prob:
            j = (index + 1 + int(rng.integers(self.num_frames - 1))) % self.num_frames
            src_rng = np.random.default_rng([self.seed, epoch, index, 1])
            src_image, src_label = self.geometric(*self.source(j), src_rng)
            image, label = paste(image, label, src_image, src_label, self.paste_ids)
        if self.jitter > 0:
            image = photometric_jitter(image, rng, self.jitter)
        x = normalize(np.ascontiguousarray(image)[None], _card_like(self.mean, self.std))[0]
        return torch.from_numpy(x), torch.from_numpy(np.ascontiguousarray(label).astype(np.int64))

    def geometric(self, image: np.ndarray, label: np.ndarray,
                  rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Return the scaled, cropped and flipped uint8 image and label (the crop's size)."""
        ch, cw = self.crop
        th, tw = self.size or self.crop
        h, w = label.shape
        s = rng.uniform(*self.scale_range)
        if self.stretch:   # the deployment geometry (card resize 'stretch'): per-axis base scale
            nh, nw = max(1, round(th * s)), max(1, round(tw * s))
        else:
            base = min(th / h, tw / w) if (h, w) != (th, tw) else 1.0
            nh, nw = max(1, round(h * base * s)), max(1, round(w * base * s))
        image = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
        label = cv2.resize(label, (nw, nh), interpolation=cv2.INTER_NEAREST)
        ph, pw = max(ch - nh, 0), max(cw - nw, 0)
        if ph or pw:
            image = cv2.copyMakeBorder(image, 0, ph, 0, pw, cv2.BORDER_CONSTANT, value=0)
            label = cv2.copyMakeBorder(label, 0, ph, 0, pw, cv2.BORDER_CONSTANT,
                                       value=self.ignore_index)
        y0 = int(rng.integers(0, image.shape[0] - ch + 1))
        x0 = int(rng.integers(0, image.shape[1] - cw + 1))
        image = image[y0:y0 + ch, x0:x0 + cw]
        label = label[y0:y0 + ch, x0:x0 + cw]
        if self.flip and rng.random() < 0.5:
            image, label = image[:, ::-1], label[:, ::-1]
        return np.ascontiguousarray(image), np.ascontiguousarray(label)


def photometric_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Random brightness, contrast, saturation and hue on an RGB uint8 image."""
    img = image.astype(np.float32)
    img = img * rng.uniform(1 - strength, 1 + strength)  # brightness
    mean = img.mean()
    img = (img - mean) * rng.uniform(1 - strength, 1 + strength) + mean  # contrast
    img = np.clip(img, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV).astype(np.float32)
    hsv[..., 1] = np.clip(hsv[..., 1] * rng.uniform(1 - strength, 1 + strength), 0, 255)
    hsv[..., 0] = (hsv[..., 0] + rng.uniform(-9, 9) * strength) % 180
    return cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB)


@dataclasses.dataclass
class EvalTransform:
    """The deployment pre-processing (``vit_seg_node.runtime``); the label stays at full size."""

    card: ModelCard

    def __call__(self, image: np.ndarray, label: np.ndarray, epoch: int = 0,
                 index: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the network input tensor and the untouched label map."""
        resized, _ = resize_to_input(image, self.card)
        x = normalize(resized[None], self.card)[0]
        return torch.from_numpy(x), torch.from_numpy(label.astype(np.int64))


def _card_like(mean: Sequence[float], std: Sequence[float]) -> ModelCard:
    return ModelCard(name='transform', input_height=1, input_width=1, classes=['x'],
                     palette=[[0, 0, 0]], mean=list(mean), std=list(std))
