"""Rare-class sampling: draw training frames by class rarity, not uniformly.

DAFormer's rare-class sampling (Hoyer et al., CVPR 2022): class ``c`` is drawn with probability
``p_c ~ exp((1 - f_c) / T)``, ``f_c`` its pixel frequency in the training set, then a frame that
shows ``c`` is drawn uniformly. With a small temperature ``T`` the rare classes of a street scene
(pole, sign, pedestrian, bicyclist, fence) are drawn about as often as road and sky, so a model
trained on a few hundred frames sees their few frames many times. Every epoch's draw is a function
of ``(seed, epoch)``, like the uniform order, so resumed runs stay exact.

Configured as ``data.rare_class_sampling: {temperature: T}``; the resolved config records the
class probabilities.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def class_presence(labels: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Return an ``(n_frames, num_classes)`` bool matrix: which classes each frame shows."""
    out = np.zeros((len(labels), num_classes), bool)
    for i, lbl in enumerate(labels):
        out[i] = np.bincount(lbl.ravel(), minlength=256)[:num_classes] > 0
    return out


def rcs_probabilities(freq: Sequence[float], temperature: float) -> np.ndarray:
    """Return the class probabilities ``softmax((1 - freq) / temperature)`` (absent classes 0)."""
    if temperature <= 0:
        raise ValueError(f'rare-class sampling temperature must be > 0, got {temperature}')
    f = np.asarray(freq, np.float64)
    logits = (1.0 - f) / temperature
    logits[f <= 0] = -np.inf
    p = np.exp(logits - logits.max())
    return p / p.sum()


def rcs_order(presence: np.ndarray, probs: Sequence[float], count: int, seed: int,
              epoch: int) -> list[int]:
    """Return ``count`` frame indices for one epoch: a class by ``probs``, then a frame showing it.

    Classes that no frame shows are never drawn.
    """
    p = np.asarray(probs, np.float64) * presence.any(axis=0)
    if p.sum() <= 0:
        raise ValueError('no class with a positive probability is present in any frame')
    p = p / p.sum()
    g = torch.Generator().manual_seed(seed * 100003 + epoch + 7919)
    classes = torch.multinomial(torch.as_tensor(p), count, replacement=True, generator=g)
    picks = torch.rand(count, generator=g, dtype=torch.float64).numpy()
    frames_of = [np.flatnonzero(presence[:, c]) for c in range(presence.shape[1])]
    order = []
    for c, u in zip(classes.tolist(), picks):
        frames = frames_of[c]
        order.append(int(frames[min(len(frames) - 1, int(u * len(frames)))]))
    return order
