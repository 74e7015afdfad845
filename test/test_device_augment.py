"""The device augmentation path: same geometry as OpenCV's, same distributions as the host path."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_train.device_augment import DeviceAugment, draw, hsv_to_rgb, rgb_to_hsv
from vit_seg_train.transforms import TrainTransform

ROOT = Path(__file__).resolve().parent.parent
MINI = ROOT / 'test' / 'data' / 'camvid_mini'
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def transform(**kw) -> TrainTransform:
    args = dict(crop=(96, 128), mean=MEAN, std=STD, ignore_index=11, seed=3,
                scale_range=(0.3, 0.8), jitter=0.3, size=(352, 480))
    args.update(kw)
    return TrainTransform(**args)


@pytest.fixture(scope='module')
def dataset():
    return SegmentationDataset(MINI, 'train', None, cache=True)


def test_identity_geometry_reproduces_the_frame(dataset):
    """Scale 1, crop = frame, no flip, no jitter: the batch is the normalised frame itself."""
    img, lab = dataset.load(0)
    h, w = lab.shape
    t = transform(crop=(h, w), size=(h, w), scale_range=(1.0, 1.0), jitter=0.0, flip=False)
    x, y = DeviceAugment(dataset, t, 'cpu', seed=0).batch(0, 0, [0])
    ref = (img.astype(np.float32) / 255 - MEAN) / STD
    assert np.abs(x[0].permute(1, 2, 0).numpy() - ref).max() < 1e-4
    assert np.array_equal(y[0].numpy(), lab.astype(np.int64))


def test_resized_crop_matches_opencv(dataset):
    """A downscale with a crop offset: pixels match cv2.resize + crop, labels almost all."""
    img, lab = dataset.load(1)
    t = transform(crop=(120, 160), size=(360, 480), scale_range=(0.5, 0.5), jitter=0.0,
                  flip=False)
    aug = DeviceAugment(dataset, t, 'cpu', seed=0)
    d = draw(t, aug.n, [1], torch.Generator().manual_seed(0))
    ximg, xlab = aug.geometric(torch.tensor([1]), d.scale, d.u_y, d.u_x, d.flip)
    nh, nw = 180, 240
    y0 = int(d.u_y[0] * (nh - 120 + 1))
    x0 = int(d.u_x[0] * (nw - 160 + 1))
    ref = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)[y0:y0 + 120, x0:x0 + 160]
    ref_lab = cv2.resize(lab, (nw, nh), interpolation=cv2.INTER_NEAREST)[y0:y0 + 120,
                                                                         x0:x0 + 160]
    got = ximg[0].permute(1, 2, 0).round().numpy()
    assert np.abs(got - ref).mean() < 1.0
    assert (xlab[0].numpy() == ref_lab).mean() > 0.9


def test_hsv_round_trip_and_opencv_hue():
    rgb = torch.rand(2, 3, 8, 8)
    assert torch.allclose(hsv_to_rgb(*rgb_to_hsv(rgb)), rgb, atol=1e-5)
    px = (rgb[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    hsv = cv2.cvtColor(px, cv2.COLOR_RGB2HSV_FULL).astype(np.float32)
    h, s, v = rgb_to_hsv(torch.from_numpy(px).permute(2, 0, 1)[None].float() / 255)
    assert np.abs(h[0].numpy() * 256 / 6 - hsv[..., 0]).clip(max=3).mean() < 1.0
    assert np.abs(s[0].numpy() * 255 - hsv[..., 1]).mean() < 1.0


def _stats(xs, ys):
    x = torch.stack(xs)
    y = torch.stack(ys)
    hist = torch.bincount(y.flatten(), minlength=12).double() / y.numel()
    return x.mean((0, 2, 3)), x.std((0, 2, 3)), hist


@pytest.mark.parametrize('paste', [False, True], ids=['plain', 'copy_paste'])
def test_device_and_host_paths_draw_the_same_distributions(dataset, paste):
    """Per-channel mean/std of the inputs and the label histogram agree over many draws."""
    kw = dict(paste_ids=[1, 5, 8], paste_prob=0.7) if paste else {}
    t = transform(**kw)
    if paste:
        t.source, t.num_frames = dataset.load, len(dataset)
    aug = DeviceAugment(dataset, t, 'cpu', seed=3)
    host_x, host_y, dev_x, dev_y = [], [], [], []
    n = len(dataset)
    for epoch in range(40):
        keys = list(range(n))
        x, y = aug.batch(epoch, 0, keys)
        dev_x += list(x)
        dev_y += list(y)
        for i in keys:
            hx, hy = t(*dataset.load(i), epoch=epoch, index=i)
            host_x.append(hx)
            host_y.append(hy)
    hm, hs, hh = _stats(host_x, host_y)
    dm, ds, dh = _stats(dev_x, dev_y)
    assert torch.allclose(hm, dm, atol=0.05), (hm, dm)
    assert torch.allclose(hs, ds, rtol=0.05), (hs, ds)
    assert (hh - dh).abs().max() < 0.02, (hh, dh)


def test_batches_are_seeded_by_epoch_and_step(dataset):
    aug = DeviceAugment(dataset, transform(), 'cpu', seed=3)
    a = aug.batch(2, 5, [0, 1])
    b = aug.batch(2, 5, [0, 1])
    c = aug.batch(2, 6, [0, 1])
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
