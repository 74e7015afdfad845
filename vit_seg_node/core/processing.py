"""Pre- and post-processing shared by every backend, the node, evaluation and replay.

One implementation serves training-time evaluation and deployment, so a model scores the same in
``vit-seg eval`` as through the node.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional

import cv2
import numpy as np

from vit_seg_node.core.card import ModelCard

UNSEEN = 255    # mask value of source pixels outside a centre crop (no class predicted)


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Where the network input came from: the original size and the letterbox placement."""

    src_height: int
    src_width: int
    # Region of the network input that holds the image (y0, x0, h, w); the whole input for stretch.
    roi: tuple[int, int, int, int]
    # Region of the source the network sees (y0, x0, h, w): the whole image unless cropped.
    crop: Optional[tuple[int, int, int, int]] = None


def check_image(image: np.ndarray) -> np.ndarray:
    """Return ``image`` as HxWx3 uint8 RGB; raise ValueError for anything else."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f'image must be a numpy array, got {type(image).__name__}')
    if image.dtype != np.uint8:
        raise ValueError(f'image must be uint8, got {image.dtype}')
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be HxWx3 (RGB), got shape {image.shape}')
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError('image is empty (zero height or width)')
    return image


def fit_geometry(src_h: int, src_w: int, dst_h: int, dst_w: int, mode: str) -> Geometry:
    """Return the placement of a ``src`` image in a ``dst`` network input.

    stretch: the whole image, scaled to the input; letterbox: the whole image at its aspect
    ratio, padded; crop: the centre of the image at the input's aspect ratio, the rest unseen.
    """
    if mode == 'stretch':
        return Geometry(src_h, src_w, (0, 0, dst_h, dst_w))
    if mode == 'crop':
        return Geometry(src_h, src_w, (0, 0, dst_h, dst_w), aspect_crop_box(src_h, src_w,
                                                                            dst_w / dst_h))
    scale = min(dst_h / src_h, dst_w / src_w)
    h, w = max(1, round(src_h * scale)), max(1, round(src_w * scale))
    y0, x0 = (dst_h - h) // 2, (dst_w - w) // 2
    return Geometry(src_h, src_w, (y0, x0, h, w))


def resize_to_input(image: np.ndarray, card: ModelCard,
                    out: Optional[np.ndarray] = None) -> tuple[np.ndarray, Geometry]:
    """Resize (stretch or letterbox) an RGB uint8 image to the network input size.

    ``out`` (input height x width x 3, uint8), when given, receives the result; an image that
    already has the input size is returned as it is.
    """
    image = check_image(image)
    geo = fit_geometry(image.shape[0], image.shape[1], card.input_height, card.input_width,
                       card.resize)
    if geo.crop is not None:
        cy, cx, ch, cw = geo.crop
        image = image[cy:cy + ch, cx:cx + cw]
    y0, x0, h, w = geo.roi
    full = (h, w) == (card.input_height, card.input_width)
    if (h, w) != image.shape[:2]:
        image = cv2.resize(image, (w, h), dst=out if full else None,
                           interpolation=cv2.INTER_LINEAR)
    if full:
        return image, geo
    canvas = np.empty((card.input_height, card.input_width, 3), np.uint8) if out is None else out
    canvas[:, :] = np.round(np.asarray(card.mean) * 255).astype(np.uint8)  # pads to zero after norm
    canvas[y0:y0 + h, x0:x0 + w] = image
    return canvas, geo


def normalize(images: np.ndarray, card: ModelCard, out: Optional[np.ndarray] = None,
              planes: Optional[list[np.ndarray]] = None) -> np.ndarray:
    """Map a uint8 batch NxHxWx3 (RGB) to the float32 NCHW tensor the network expects.

    Each channel plane is split out and scaled and shifted into its place in the output in one
    OpenCV pass (``addWeighted`` with a float32 destination): 0.24 ms for a 352x480 frame on a
    2-core Xeon, where a cast-and-transpose blob followed by in-place arithmetic takes 1.39 ms.
    ``out`` (N x 3 x H x W float32) and ``planes`` (three H x W uint8) are written in place when
    given (``Preprocessor`` keeps them between frames).
    """
    images = np.asarray(images)
    n, h, w, _ = images.shape
    scale = 1.0 / (255.0 * np.asarray(card.std, np.float64))
    shift = np.asarray(card.mean, np.float64) / np.asarray(card.std, np.float64)
    x = np.empty((n, 3, h, w), np.float32) if out is None else out
    for i in range(n):
        split = cv2.split(np.ascontiguousarray(images[i]), planes)
        for c, plane in enumerate(split):
            cv2.addWeighted(plane, float(scale[c]), plane, 0.0, float(-shift[c]), dst=x[i, c],
                            dtype=cv2.CV_32F)
    return x


def model_input(images: np.ndarray, card: ModelCard) -> np.ndarray:
    """Return the graph input for resized RGB uint8 frames (N x H x W x 3) as the card says.

    A graph that takes bytes (``input.dtype: uint8``, NHWC) gets the frames as they are and
    normalises them itself; any other gets the normalised float32 planes (``normalize``).
    """
    if card.bytes_input:
        return np.ascontiguousarray(images, np.uint8)
    return normalize(images, card)


def blank_input(card: ModelCard) -> np.ndarray:
    """Return an all-zero input of the card's batch, shape and type (warm-up, start checks)."""
    h, w = card.input_height, card.input_width
    if card.bytes_input:
        return np.zeros((card.batch, h, w, 3), np.uint8)
    return np.zeros((card.batch, 3, h, w), np.float32)


def preprocess(image: np.ndarray, card: ModelCard) -> tuple[np.ndarray, Geometry]:
    """Turn one RGB uint8 image into a batch of one in the card's input format, and geometry."""
    resized, geo = resize_to_input(image, card)
    return model_input(resized[None], card), geo


class Preprocessor:
    """``preprocess`` for a stream of frames, writing into buffers kept from frame to frame.

    A fresh 2 MB input tensor per frame is memory the process has not touched recently (and, once
    freed, may have handed back to the kernel); refilling the same buffers took 4.8 ms against
    6.0 ms for a 480x360 frame paced 50 ms after an inference (``experiments/frame_path.py``,
    2-core Xeon VM, busy host). The batch returned is overwritten by the next call: one caller
    at a time, done with it before the next frame.

    A graph that takes bytes (``card.bytes_input``) gets the resized frame itself: the resize
    writes straight into the batch, and nothing else is done on the host.

    A model with a static batch of N (``card.batch``) takes its frames through ``put`` (frame i
    into place i of the kept batch) and ``batch`` (the places not filled get copies of the last
    frame put: the graph computes each frame on its own, so a copy changes nothing of the real
    ones).
    """

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        h, w = card.input_height, card.input_width
        self._frames = np.empty((card.batch, h, w, 3), np.uint8)
        self._resized = self._frames[0]
        self._batch = np.empty((card.batch, 3, h, w), np.float32)
        self._planes = [np.empty((h, w), np.uint8) for _ in range(3)]

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, Geometry]:
        """Return the batch of one RGB uint8 image as the card says (a kept buffer), geometry."""
        resized, geo = resize_to_input(image, self.card, self._resized)
        if self.card.bytes_input:       # the kept buffer, or a frame already of the input size
            return resized[None], geo
        return normalize(resized[None], self.card, self._batch[:1], self._planes), geo

    def put(self, i: int, image: np.ndarray) -> Geometry:
        """Pre-process ``image`` into place ``i`` of the kept batch; return its geometry."""
        slot = self._frames[i]
        resized, geo = resize_to_input(image, self.card, slot)
        if not np.may_share_memory(resized, slot):     # a bounds check, not an exact one
            slot[...] = resized
        if not self.card.bytes_input:
            normalize(slot[None], self.card, self._batch[i:i + 1], self._planes)
        return geo

    def batch(self, filled: int) -> np.ndarray:
        """Return the kept batch of the ``filled`` frames put, the rest copies of the last one."""
        if not 1 <= filled <= self.card.batch:
            raise ValueError(f'{filled} frames for a batch of {self.card.batch}')
        out = self._frames if self.card.bytes_input else self._batch
        out[filled:] = out[filled - 1]
        return out


def to_labels(output: np.ndarray, kind: str) -> np.ndarray:
    """Return a uint8 label map (N x H x W) from the network's logits or labels."""
    if kind == 'labels':
        labels = output if output.ndim == 3 else output[:, 0]
    else:
        if output.ndim != 4:
            raise ValueError(f'logits must be NxCxHxW, got shape {output.shape}')
        labels = output.argmax(axis=1)
    return labels.astype(np.uint8, copy=False)


@functools.lru_cache(maxsize=32)
def nearest_rows(src: int, dst: int) -> np.ndarray:
    """Return the source row of each of ``dst`` rows, as OpenCV's INTER_NEAREST picks it.

    OpenCV takes ``floor(i / (dst / src))`` clipped to the last row (``resizeNN``); the result
    is read-only (cached).
    """
    idx = np.minimum(np.floor(np.arange(dst) * (1.0 / (dst / src))).astype(np.intp), src - 1)
    idx.flags.writeable = False
    return idx


def gather_blocks(labels: np.ndarray, roi: tuple[int, int, int, int], size: tuple[int, int],
                  stride: int) -> np.ndarray:
    """Return the ``size`` map of the input region ``roi`` read from a map at 1/``stride``.

    Each pixel takes the label of the block that holds its nearest input pixel: a letterbox's
    image region need not start or end on a block.
    """
    y0, x0, h, w = roi
    rows = (y0 + np.arange(size[0]) * h // size[0]) // stride
    cols = (x0 + np.arange(size[1]) * w // size[1]) // stride
    return labels[rows[:, None], cols[None, :]]


def restore_labels(labels: np.ndarray, geo: Geometry, stride: int = 1) -> np.ndarray:
    """Return a label map of the network input (or of 1/``stride`` of it) at the source size.

    The letterbox is cut off; a centre crop's label map is placed where the crop came from, and
    the source pixels the network did not see get ``UNSEEN`` (255, no class). Nearest neighbour
    on the uint8 labels, never on logits. When only the height differs (a stretched 480x360
    frame and a 480x352 network), the rows are gathered with a cached index (``nearest_rows``;
    ``experiments/frame_path.py`` times both), with the same result as ``cv2.resize(...,
    INTER_NEAREST)``, which does the rest. ``stride``: the card's ``output.stride`` (a graph
    that arg-maxes below the input's resolution, ``vit-seg label-stride``).
    """
    y0, x0, h, w = geo.roi
    cy, cx, ch, cw = geo.crop or (0, 0, geo.src_height, geo.src_width)
    if stride > 1 and (y0, x0, h, w) != (0, 0, labels.shape[0] * stride,
                                         labels.shape[1] * stride):
        labels = gather_blocks(labels, geo.roi, (ch, cw), stride)
    elif stride == 1:
        labels = labels[y0:y0 + h, x0:x0 + w]
    if labels.shape != (ch, cw):
        labels = np.take(labels, nearest_rows(labels.shape[0], ch), axis=0) \
            if labels.shape[1] == cw else \
            cv2.resize(labels, (cw, ch), interpolation=cv2.INTER_NEAREST)
    if geo.crop is None:
        return labels
    full = np.full((geo.src_height, geo.src_width), UNSEEN, np.uint8)
    full[cy:cy + ch, cx:cx + cw] = labels
    return full


def aspect_crop_box(height: int, width: int, aspect: float) -> tuple[int, int, int, int]:
    """Return the centred (y0, x0, h, w) box of ``width / height == aspect`` in an image."""
    if width / height > aspect:
        w = max(1, round(height * aspect))
        return 0, (width - w) // 2, height, w
    h = max(1, round(width / aspect))
    return (height - h) // 2, 0, h, width


def parse_aspect(text: str) -> float:
    """Return the ratio of an aspect written ``W:H`` (``16:9``); ValueError otherwise."""
    w, sep, h = text.partition(':')
    try:
        width, height = float(w), float(h)
    except ValueError:
        width = height = 0.0
    if not (sep and 0 < width < float('inf') and 0 < height < float('inf')):
        raise ValueError(f'aspect must be W:H with positive numbers, got {text!r}')
    return width / height


def postprocess(output: np.ndarray, geo: Geometry, card: ModelCard) -> np.ndarray:
    """Return the HxW uint8 class map of one image at its source resolution."""
    return restore_labels(to_labels(output, card.output_kind)[0], geo, card.output_stride)


def palette_array(card: ModelCard) -> np.ndarray:
    """Return a 256x3 uint8 lookup table: class id -> RGB (unknown ids black)."""
    lut = np.zeros((256, 3), np.uint8)
    pal = np.asarray(card.palette, np.uint8)
    lut[:len(pal)] = pal
    return lut


def colorize(labels: np.ndarray, card: ModelCard) -> np.ndarray:
    """Return the RGB colour mask of a label map."""
    return palette_array(card)[labels]


def with_legend(image: np.ndarray, card: ModelCard, row: int = 18) -> np.ndarray:
    """Return an RGB image with the card's classes and colours in a white panel on its right."""
    h, w = image.shape[:2]
    names = card.classes
    width = 24 + 8 * max(len(n) for n in names)
    out = np.full((max(h, row * len(names) + 8), w + width, 3), 255, np.uint8)
    out[:h, :w] = image
    for i, (name, rgb) in enumerate(zip(names, card.palette)):
        y = 6 + i * row
        cv2.rectangle(out, (w + 6, y), (w + 18, y + 12), tuple(int(v) for v in rgb), -1)
        cv2.putText(out, name, (w + 22, y + 11), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out


def overlay(image: np.ndarray, color_mask: np.ndarray, alpha: float) -> np.ndarray:
    """Blend a colour mask over an RGB image (``alpha`` is the mask's weight)."""
    if image.shape != color_mask.shape:
        raise ValueError(f'image {image.shape} and mask {color_mask.shape} differ in shape')
    return cv2.addWeighted(color_mask, float(alpha), image, 1.0 - float(alpha), 0.0)
