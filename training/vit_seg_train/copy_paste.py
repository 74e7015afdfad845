"""Copy-paste of rare classes between training frames (Ghiasi et al., "Simple Copy-Paste").

The pixels of chosen classes in one augmented frame are pasted, with their labels, over another
augmented frame at the same place: poles, signs, pedestrians and bicyclists appear in more
frames and in new surroundings. Pure functions; ``TrainTransform`` draws the source frame and
the decision from ``(seed, epoch, index)``, so a resumed run pastes exactly the same.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from vit_seg_node.core.errors import UserError


def class_ids(names: Sequence[str | int], classes: Sequence[str]) -> list[int]:
    """Return class indices for names (or indices); ValueError for an unknown name."""
    ids = []
    for n in names:
        if isinstance(n, int) and 0 <= n < len(classes):
            ids.append(n)
        elif n in classes:
            ids.append(list(classes).index(n))
        else:
            raise ValueError(f'unknown class {n!r}; known: {", ".join(classes)}')
    return sorted(set(ids))


def copy_paste_settings(spec: Any, classes: Sequence[str]) -> tuple[list[int], float]:
    """Return (class ids, probability) of a config's ``data.copy_paste``; UserError if malformed."""
    if not spec:
        return [], 0.0
    if not isinstance(spec, dict) or not spec.get('classes'):
        raise UserError('data.copy_paste needs {classes: [names], prob: P}')
    prob = spec.get('prob', 0.5)
    if not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
        raise UserError(f'data.copy_paste.prob must be in [0, 1], got {prob!r}')
    try:
        return class_ids(spec['classes'], classes), float(prob)
    except ValueError as exc:
        raise UserError(f'data.copy_paste: {exc}') from None


def paste(image: np.ndarray, label: np.ndarray, src_image: np.ndarray, src_label: np.ndarray,
          ids: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Return ``image``/``label`` with the pixels of classes ``ids`` of the source pasted over.

    All four arrays share height and width (augmented crops of the same size).
    """
    if src_label.shape != label.shape or src_image.shape != image.shape:
        raise ValueError(f'source {src_image.shape}/{src_label.shape} and target '
                         f'{image.shape}/{label.shape} differ in size')
    mask = np.isin(src_label, np.asarray(ids, dtype=src_label.dtype))
    if not mask.any():
        return image, label
    image, label = image.copy(), label.copy()
    image[mask] = src_image[mask]
    label[mask] = src_label[mask]
    return image, label
