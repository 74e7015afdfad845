"""``TrainTransform`` as batched tensor operations on the training device.

On a lent GPU the host path (OpenCV per frame in loader workers) sets the pace: a small model
waits for its batches. Here every frame is decoded once and kept on the device as uint8; a batch
is drawn with the same distributions as ``TrainTransform`` -- scale, crop (padded with the ignore
index), flip, copy-paste, brightness / contrast / saturation / hue -- as one ``grid_sample`` and
a few elementwise operations. The draws come from a generator seeded by ``(seed, epoch, step)``,
so a resumed run sees the same batches. A test compares both paths' outputs
(``test/test_device_augment.py``).

Differences from the host path, all below the augmentation's own spread: OpenCV samples labels at
``floor(dst * scale)`` and this at the nearest centre; the hue/saturation step is computed in
float here and on 8-bit HSV there.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch
import torch.nn.functional as F

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_train.transforms import TrainTransform


@dataclasses.dataclass
class Draws:
    """One batch's random draws (B each): scale, crop offsets, flip, jitter, paste."""

    scale: torch.Tensor
    u_y: torch.Tensor
    u_x: torch.Tensor
    flip: torch.Tensor
    bright: torch.Tensor
    contrast: torch.Tensor
    sat: torch.Tensor
    hue: torch.Tensor
    paste: torch.Tensor
    source: torch.Tensor


def draw(t: TrainTransform, n: int, keys: Sequence[int], gen: torch.Generator) -> Draws:
    """Return the draws for frames ``keys`` of an ``n``-frame set (CPU generator)."""
    b = len(keys)

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen, dtype=torch.float64)

    j = t.jitter
    other = torch.randint(0, max(n - 1, 1), (b,), generator=gen)
    return Draws(scale=u(*t.scale_range), u_y=u(0, 1), u_x=u(0, 1),
                 flip=(torch.rand(b, generator=gen) < 0.5) & t.flip,
                 bright=u(1 - j, 1 + j), contrast=u(1 - j, 1 + j), sat=u(1 - j, 1 + j),
                 hue=u(-9, 9) * j,
                 paste=torch.rand(b, generator=gen) < (t.paste_prob if n > 1 else 0.0),
                 source=(torch.as_tensor(list(keys)) + 1 + other) % max(n, 1))


def sample_grid(t: TrainTransform, hw: torch.Tensor, pad_hw: tuple[int, int],
                scale: torch.Tensor, u_y: torch.Tensor, u_x: torch.Tensor,
                flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Return the ``grid_sample`` grid (B x ch x cw x 2) and the in-frame mask (B x ch x cw).

    Crop pixel ``(i, j)`` of a frame of size ``hw`` resized to ``(nh, nw)`` (as in
    ``TrainTransform.geometric``) and cropped at ``(y0, x0)`` reads source pixel
    ``((y0 + i + 0.5) * h / nh - 0.5, ...)``, OpenCV's linear-resize convention; positions past
    the resized frame are padding.
    """
    ch, cw = t.crop
    th, tw = t.size or t.crop
    dev = hw.device
    scale, u_y, u_x, flip = (v.to(dev) for v in (scale, u_y, u_x, flip))
    h, w = hw[:, 0].double(), hw[:, 1].double()
    if t.stretch:
        nh = (th * scale).round().clamp_min(1)
        nw = (tw * scale).round().clamp_min(1)
    else:
        same = (h == th) & (w == tw)
        base = torch.where(same, torch.ones_like(h), torch.minimum(th / h, tw / w))
        nh, nw = (h * base * scale).round().clamp_min(1), (w * base * scale).round().clamp_min(1)
    y0 = (u_y * (torch.clamp(nh, min=ch) - ch + 1)).floor()
    x0 = (u_x * (torch.clamp(nw, min=cw) - cw + 1)).floor()
    i = torch.arange(ch, device=dev, dtype=torch.float64)
    jj = torch.arange(cw, device=dev, dtype=torch.float64)
    jj = torch.where(flip[:, None], cw - 1 - jj[None], jj[None])                # B x cw
    ry = y0[:, None] + i[None]                                                  # B x ch
    rx = x0[:, None] + jj                                                       # B x cw
    inside = (ry < nh[:, None])[:, :, None] & (rx < nw[:, None])[:, None, :]
    sy = (ry + 0.5) * (h / nh)[:, None] - 0.5
    sx = (rx + 0.5) * (w / nw)[:, None] - 0.5
    ph, pw = pad_hw
    gy = (2 * sy + 1) / ph - 1
    gx = (2 * sx + 1) / pw - 1
    grid = torch.stack([gx[:, None, :].expand(-1, ch, -1), gy[:, :, None].expand(-1, -1, cw)], -1)
    return grid.float(), inside


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return hue in [0, 6), saturation and value of B x 3 x H x W RGB in [0, 1]."""
    mx, imx = x.max(1)
    mn = x.min(1).values
    delta = mx - mn
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    r, g, b = x.unbind(1)
    h = torch.where(imx == 0, ((g - b) / safe) % 6,
                    torch.where(imx == 1, (b - r) / safe + 2, (r - g) / safe + 4))
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    s = torch.where(mx > 0, delta / torch.where(mx > 0, mx, torch.ones_like(mx)),
                    torch.zeros_like(mx))
    return h, s, mx


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of ``rgb_to_hsv``: B x 3 x H x W RGB in [0, 1]."""
    k = (torch.tensor([5.0, 3.0, 1.0], device=h.device)[None, :, None, None] + h[:, None]) % 6
    return v[:, None] - v[:, None] * s[:, None] * torch.clamp(torch.minimum(k, 4 - k), 0, 1)


def photometric(img: torch.Tensor, d: Draws) -> torch.Tensor:
    """Brightness, contrast (about each frame's mean), saturation and hue, as the host path."""
    dev = img.device

    def per(v: torch.Tensor) -> torch.Tensor:
        return v.to(dev, torch.float32)[:, None, None, None]

    x = img * per(d.bright)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = ((x - mean) * per(d.contrast) + mean).clamp(0, 255).floor() / 255
    h, s, v = rgb_to_hsv(x)
    s = (s * per(d.sat)[:, 0]).clamp(0, 1)
    h = (h + per(d.hue)[:, 0] * 2 / 60) % 6            # OpenCV hue units are 2 degrees
    return hsv_to_rgb(h, s, v) * 255


class DeviceAugment:
    """Every frame of a split on ``device`` as uint8; ``batch(epoch, step, keys)`` augments.

    ``transform`` is the host path's ``TrainTransform``: the same settings drive both.
    """

    def __init__(self, dataset: SegmentationDataset, transform: TrainTransform,
                 device: str | torch.device, seed: int) -> None:
        pairs = [dataset.load(i) for i in range(len(dataset))]
        self.n = len(pairs)
        ph = max(p[1].shape[0] for p in pairs)
        pw = max(p[1].shape[1] for p in pairs)
        self.pad_hw = (ph, pw)
        self.images = torch.zeros(self.n, 3, ph, pw, dtype=torch.uint8, device=device)
        self.labels = torch.full((self.n, 1, ph, pw), transform.ignore_index, dtype=torch.uint8,
                                 device=device)
        for i, (img, lab) in enumerate(pairs):
            h, w = lab.shape
            self.images[i, :, :h, :w] = torch.from_numpy(img).permute(2, 0, 1)
            self.labels[i, 0, :h, :w] = torch.from_numpy(lab)
        self.hw = torch.tensor([p[1].shape for p in pairs], device=device)
        self.t, self.seed, self.device = transform, seed, device
        self.mean = torch.tensor(transform.mean, device=device)[None, :, None, None]
        self.std = torch.tensor(transform.std, device=device)[None, :, None, None]

    def geometric(self, idx: torch.Tensor, scale: torch.Tensor, u_y: torch.Tensor,
                  u_x: torch.Tensor, flip: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return float images (0..255) and int64 labels of frames ``idx``, cropped."""
        idx = idx.to(self.device)
        grid, inside = sample_grid(self.t, self.hw[idx], self.pad_hw, scale, u_y, u_x, flip)
        img = F.grid_sample(self.images[idx].float(), grid, mode='bilinear',
                            padding_mode='border', align_corners=False)
        lab = F.grid_sample(self.labels[idx].float(), grid, mode='nearest',
                            padding_mode='border', align_corners=False)[:, 0].long()
        img = img * inside[:, None]
        lab = torch.where(inside, lab, torch.full_like(lab, self.t.ignore_index))
        return img, lab

    def batch(self, epoch: int, step: int,
              keys: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Return the normalised B x 3 x h x w batch and its int64 labels for frames ``keys``."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch * 10_007 + step)
        d = draw(self.t, self.n, keys, gen)
        idx = torch.as_tensor(list(keys))
        img, lab = self.geometric(idx, d.scale, d.u_y, d.u_x, d.flip)
        if self.t.paste_ids and d.paste.any():
            src = draw(self.t, self.n, keys, gen)      # the source frame's own geometry
            s_img, s_lab = self.geometric(d.source, src.scale, src.u_y, src.u_x, src.flip)
            ids = torch.as_tensor(list(self.t.paste_ids), device=lab.device)
            m = torch.isin(s_lab, ids) & d.paste.to(lab.device)[:, None, None]
            img = torch.where(m[:, None], s_img, img)
            lab = torch.where(m, s_lab, lab)
        img = img.round().clamp(0, 255)        # the host path's uint8 crop
        if self.t.jitter > 0:
            img = photometric(img, d)
        x = (img / 255 - self.mean) / self.std
        return x.contiguous(), lab
