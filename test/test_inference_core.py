import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.backends.base import BackendError, create_backend, resolve_backend_name
from vit_seg_node.core.card import card_path_for, load_card
from vit_seg_node.pipeline import SegmentationPipeline

VIT_SEG = [sys.executable, '-m', 'vit_seg_node.cli']


def test_onnxruntime_backend_runs_tiny_model(tiny_model):
    card = load_card(tiny_model)
    backend = create_backend(tiny_model, card, threads=1)
    out = backend.infer(np.zeros((1, 3, card.input_height, card.input_width), np.float32))
    assert out.shape == (1, 11, card.input_height, card.input_width)
    assert np.isfinite(out).all()


@pytest.mark.parametrize('spinning', [True, False])
def test_backend_pool_stops_spinning_when_a_run_returns(tiny_model, spinning):
    """A backend serves frames: its pool may spin during a run, never after it."""
    card = load_card(tiny_model)
    opts = create_backend(tiny_model, card, threads=2, spinning=spinning).session \
        .get_session_options()
    if spinning:
        assert opts.get_session_config_entry('session.force_spinning_stop') == '1'
    else:
        assert opts.get_session_config_entry('session.intra_op.allow_spinning') == '0'


def test_pipeline_returns_source_resolution(tiny_model, camvid_mini):
    img, _ = SegmentationDataset(camvid_mini, 'val', cache=False).load(0)
    result = SegmentationPipeline(tiny_model, threads=1)(img)
    assert result.labels.shape == img.shape[:2]
    assert result.labels.max() < 11
    assert result.infer_ms > 0


def test_backend_selection_is_exact():
    assert resolve_backend_name('m.onnx') == 'onnxruntime'
    assert resolve_backend_name('m.engine') == 'tensorrt'
    assert resolve_backend_name('m.safetensors') == 'torch'
    with pytest.raises(BackendError):
        resolve_backend_name('m.onnx.bak')
    with pytest.raises(BackendError):
        resolve_backend_name('m.onnx', 'onnx')  # no prefix/substring matching


def test_cli_infer_writes_mask_of_input_size(tiny_model, camvid_mini, tmp_path):
    image = sorted((camvid_mini / 'val').iterdir())[0]
    out, ovl = tmp_path / 'mask.png', tmp_path / 'overlay.png'
    r = subprocess.run(VIT_SEG + ['infer', '--model', str(tiny_model), '--image', str(image),
                                  '--out', str(out), '--overlay', str(ovl), '--threads', '1'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    src = cv2.imread(str(image))
    for p in (out, ovl):
        assert cv2.imread(str(p)).shape == src.shape


def _bad_model_dirs(tiny_model, tmp_path):
    no_card = tmp_path / 'nocard' / 'm.onnx'
    no_card.parent.mkdir()
    shutil.copy(tiny_model, no_card)
    bad_card = tmp_path / 'badcard' / 'm.onnx'
    bad_card.parent.mkdir()
    shutil.copy(tiny_model, bad_card)
    card_path_for(bad_card).write_text('format: vit_seg_node/model-card/1\nname: x\n')
    wrong = tmp_path / 'wrong' / 'm.onnx'
    wrong.parent.mkdir()
    wrong.write_bytes(b'not an onnx file')
    shutil.copy(card_path_for(tiny_model), card_path_for(wrong))
    return {'missing card': no_card, 'invalid card': bad_card, 'not onnx': wrong}


def test_cli_infer_errors_are_one_line_exit_2(tiny_model, camvid_mini, tmp_path):
    image = sorted((camvid_mini / 'val').iterdir())[0]
    garbage = tmp_path / 'garbage.png'
    garbage.write_bytes(b'\x89PNG but not really')
    cases = {'missing image': ['--model', str(tiny_model), '--image', str(tmp_path / 'no.png')],
             'unreadable image': ['--model', str(tiny_model), '--image', str(garbage)],
             'missing model': ['--model', str(tmp_path / 'no.onnx'), '--image', str(image)]}
    for name, path in _bad_model_dirs(tiny_model, tmp_path).items():
        cases[name] = ['--model', str(path), '--image', str(image)]
    for name, args in cases.items():
        r = subprocess.run(VIT_SEG + ['infer', '--out', str(tmp_path / 'o.png')] + args,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2, (name, r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and 'error' in lines[0], (name, r.stderr)
        assert 'Traceback' not in r.stderr
