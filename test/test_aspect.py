"""Frames of another aspect ratio than the model's: stretch, letterbox, centre crop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vit_seg_node.core.processing import (aspect_crop_box, fit_geometry, parse_aspect,
                                          resize_to_input, restore_labels, UNSEEN)
from vit_seg_node.pipeline import SegmentationPipeline


def test_centre_crop_box_and_aspect():
    assert aspect_crop_box(360, 480, 16 / 9) == (45, 0, 270, 480)
    assert aspect_crop_box(1080, 1920, 480 / 352) == (0, 223, 1080, 1473)
    assert parse_aspect('16:9') == pytest.approx(16 / 9)
    for bad in ('16', '0:9', '16:0', 'a:b', '-4:3'):
        with pytest.raises(ValueError):
            parse_aspect(bad)


@pytest.mark.parametrize('mode', ['stretch', 'letterbox', 'crop'])
def test_every_mode_gives_masks_at_the_camera_size(tiny_model, mode):
    pipe = SegmentationPipeline(tiny_model, threads=1, resize=mode)
    assert pipe.card.resize == mode
    rng = np.random.default_rng(0)
    for h, w in ((720, 1280), (480, 640), (100, 96)):
        seg = pipe(rng.integers(0, 255, (h, w, 3), np.uint8))
        assert seg.labels.shape == (h, w)
        unseen = seg.labels == UNSEEN
        if mode == 'crop' and abs(w / h - 96 / 64) > 0.01:
            y0, x0, ch, cw = seg.geometry.crop
            inside = np.zeros((h, w), bool)
            inside[y0:y0 + ch, x0:x0 + cw] = True
            assert unseen[~inside].all() and not unseen[inside].any()
        else:
            assert not unseen.any()


def test_crop_sees_the_centre_and_letterbox_the_whole_frame(tiny_model):
    card = SegmentationPipeline(tiny_model, resize='crop').card
    image = np.zeros((90, 160, 3), np.uint8)
    image[:, 80:] = 255                      # right half white
    net, geo = resize_to_input(image, card)
    assert net.shape == (64, 96, 3) and geo.crop == aspect_crop_box(90, 160, 96 / 64)
    assert net[:, :40].max() == 0 and net[:, 56:].min() == 255
    labels = np.arange(64 * 96, dtype=np.uint8).reshape(64, 96)
    assert restore_labels(labels, geo).shape == (90, 160)
    box = SegmentationPipeline(tiny_model, resize='letterbox').card
    geo = fit_geometry(90, 160, 64, 96, box.resize)
    assert geo.crop is None and geo.roi[3] == 96 and geo.roi[2] == 54


def test_eval_scores_aspect_crops_in_each_mode(tiny_model, camvid_mini, tmp_path):
    import json

    exe = str(Path(sys.executable).parent / 'vit-seg')
    scores = {}
    for mode in ('stretch', 'letterbox', 'crop'):
        out = tmp_path / f'{mode}.json'
        r = subprocess.run([exe, 'eval', '--model', str(tiny_model), '--data', str(camvid_mini),
                            '--split', 'val', '--aspect', '16:9', '--resize', mode,
                            '--json', str(out)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        report = json.loads(out.read_text())
        assert report['resize'] == mode and report['aspect'] == '16:9'
        scores[mode] = report['pixel_acc']
    assert len(set(scores.values())) > 1       # the modes see the frames differently
    r = subprocess.run([exe, 'eval', '--model', str(tiny_model), '--data', str(camvid_mini),
                        '--aspect', '16', '--limit', '1'], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'aspect' in r.stderr
