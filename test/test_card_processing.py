import cv2
import numpy as np
import pytest
import yaml

from vit_seg_node.core.card import (CAMVID_CLASSES, CAMVID_PALETTE, card_path_for, load_card,
                                    ModelCard, ModelCardError, save_card)
from vit_seg_node.core.processing import (colorize, fit_geometry, normalize, overlay, postprocess,
                                          preprocess, Preprocessor)


def make_card(**kw):
    base = dict(name='t', input_height=32, input_width=48, classes=CAMVID_CLASSES,
                palette=CAMVID_PALETTE, ignore_index=11)
    base.update(kw)
    return ModelCard(**base).validate()


def test_card_round_trip(tmp_path):
    card = make_card(reduction={'policy': 'tome', 'keep': [1.0, 0.5]},
                     precision={'default': 'int8', 'layers': {'blocks.0.attn.qkv': 'fp16'}},
                     command='vit-seg export ...')
    model = tmp_path / 'm.onnx'
    path = save_card(card, model)
    assert path == card_path_for(model) == tmp_path / 'm.card.yaml'
    back = load_card(model)
    assert back == card


@pytest.mark.parametrize('mutate, message', [
    (lambda d: d.pop('input'), 'input: missing'),
    (lambda d: d.update(format='other/1'), 'format'),
    (lambda d: d.update(classes=[]), r'classes: must have 1\.\.255 items'),
    (lambda d: d['input'].update(height=0), r'input.height: must be an integer in 1\.\.4096'),
    (lambda d: d.update(palette=[[1, 2, 3]]), 'palette: must have one colour per class'),
])
def test_invalid_card_is_refused(tmp_path, mutate, message):
    doc = make_card().to_dict()
    mutate(doc)
    (tmp_path / 'm.card.yaml').write_text(yaml.safe_dump(doc))
    with pytest.raises(ModelCardError, match=message):
        load_card(tmp_path / 'm.onnx')


def test_missing_card(tmp_path):
    with pytest.raises(ModelCardError, match='not found'):
        load_card(tmp_path / 'none.onnx')


def test_preprocess_shapes_and_normalisation():
    card = make_card()
    img = np.full((360, 480, 3), 255, np.uint8)
    x, geo = preprocess(img, card)
    assert x.shape == (1, 3, 32, 48) and x.dtype == np.float32
    expected = (1.0 - np.array(card.mean)) / np.array(card.std)
    assert np.allclose(x[0, :, 5, 5], expected, atol=1e-5)
    assert (geo.src_height, geo.src_width) == (360, 480)


def test_normalize_matches_the_formula_per_pixel_and_channel():
    """Every pixel of every channel of every image of a batch, also from a strided view."""
    card = make_card(mean=(0.3, 0.5, 0.7), std=(0.2, 0.25, 0.3))
    big = np.random.default_rng(0).integers(0, 256, (2, 32, 96, 3), dtype=np.uint8)
    images = big[:, :, ::2]              # not contiguous
    x = normalize(images, card)
    ref = (images.astype(np.float64) / 255.0 - np.array(card.mean)) / np.array(card.std)
    assert x.shape == (2, 3, 32, 48) and x.dtype == np.float32 and x.flags.c_contiguous
    assert np.abs(x - ref.transpose(0, 3, 1, 2)).max() < 1e-5


def test_postprocess_restores_source_size_with_letterbox():
    card = make_card(resize='letterbox')
    geo = fit_geometry(100, 300, 32, 48, 'letterbox')
    y0, x0, h, w = geo.roi
    assert w == 48 and h == 16 and y0 == 8
    logits = np.zeros((1, 11, 32, 48), np.float32)
    logits[0, 3, y0:y0 + h, :24] = 1.0   # left half of the image region: class 3
    logits[0, 5, y0:y0 + h, 24:] = 1.0   # right half: class 5
    labels = postprocess(logits, geo, card)
    assert labels.shape == (100, 300) and labels.dtype == np.uint8
    assert (labels[:, :140] == 3).all() and (labels[:, 160:] == 5).all()


def test_grayscale_is_accepted_and_bad_shapes_are_not():
    card = make_card()
    x, _ = preprocess(np.zeros((10, 10), np.uint8), card)
    assert x.shape == (1, 3, 32, 48)
    with pytest.raises(ValueError):
        preprocess(np.zeros((0, 10, 3), np.uint8), card)
    with pytest.raises(ValueError):
        preprocess(np.zeros((10, 10, 3), np.float32), card)


def test_colorize_and_overlay():
    card = make_card()
    labels = np.array([[0, 3], [11, 255]], np.uint8)
    color = colorize(labels, card)
    assert color[0, 0].tolist() == CAMVID_PALETTE[0]
    assert color[0, 1].tolist() == CAMVID_PALETTE[3]
    assert color[1, 1].tolist() == [0, 0, 0]
    img = np.full((2, 2, 3), 100, np.uint8)
    assert (overlay(img, color, 0.0) == img).all()
    assert (overlay(img, color, 1.0) == color).all()


def test_camera_info_is_scaled_to_the_mask():
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from vit_seg_node.ros.node import scaled_camera_info

    info = CameraInfo(width=480, height=360, k=[480.0, 0, 240, 0, 480, 180, 0, 0, 1],
                      p=[480.0, 0, 240, 0, 0, 480, 180, 0, 0, 0, 1, 0])
    geo = fit_geometry(360, 480, 352, 480, 'stretch')
    same = scaled_camera_info(info, geo, 360, 480, Header(frame_id='cam'))
    assert list(same.k) == list(info.k) and same.header.frame_id == 'cam'
    net = scaled_camera_info(info, geo, 352, 480, Header())
    sy = 352 / 360
    assert net.k[0] == 480 and abs(net.k[4] - 480 * sy) < 1e-9 and abs(net.k[5] - 180 * sy) < 1e-9
    assert (net.height, net.width) == (352, 480)


@pytest.mark.parametrize('resize', ['stretch', 'letterbox'])
def test_preprocessor_with_kept_buffers_equals_preprocess(resize):
    """Frames of changing sizes through one Preprocessor: each batch equals preprocess's."""
    card = make_card(resize=resize)
    prep = Preprocessor(card)
    rng = np.random.default_rng(1)
    for shape in [(360, 480, 3), (360, 480, 3), (32, 48, 3), (50, 40), (360, 480, 3)]:
        img = rng.integers(0, 256, shape, np.uint8)
        x, geo = prep(img)
        ref, ref_geo = preprocess(img, card)
        assert geo == ref_geo and x.shape == ref.shape
        assert np.array_equal(x, ref), shape


def test_label_restore_equals_opencv_nearest_for_any_size():
    """Row gathering (height change only) gives exactly cv2.resize's INTER_NEAREST."""
    from vit_seg_node.core.processing import restore_labels

    rng = np.random.default_rng(0)
    for _ in range(200):
        h, w = (int(v) for v in rng.integers(4, 400, 2))
        src_h = int(rng.integers(4, 900))
        src_w = w if rng.random() < 0.7 else int(rng.integers(4, 900))
        labels = rng.integers(0, 255, (h, w), dtype=np.uint8)
        geo = fit_geometry(src_h, src_w, h, w, 'stretch')
        want = cv2.resize(labels, (src_w, src_h), interpolation=cv2.INTER_NEAREST)
        got = restore_labels(labels, geo)
        assert got.dtype == np.uint8 and np.array_equal(got, want), (h, w, src_h, src_w)
