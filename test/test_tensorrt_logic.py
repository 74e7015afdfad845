"""TensorRT cannot run here (no GPU, no TensorRT): these test the pure logic around it."""

import subprocess
import sys

import pytest

from vit_seg_node.backends.base import BackendError, create_backend
from vit_seg_node.backends.tensorrt_backend import (check_io, engine_cache_key, engine_cache_path,
                                                    TensorSpec)
from vit_seg_node.core.card import CAMVID_CLASSES, CAMVID_PALETTE, ModelCard


def card():
    return ModelCard(name='t', input_height=64, input_width=96, classes=CAMVID_CLASSES,
                     palette=CAMVID_PALETTE)


def specs(inp=(1, 3, 64, 96), out=(1, 11, 64, 96), names=('image', 'logits')):
    return [TensorSpec(names[0], True, inp, 'float32'),
            TensorSpec(names[1], False, out, 'float32')]


def test_io_matches_card():
    i, o = check_io(specs(), card())
    assert i.name == 'image' and o.name == 'logits'


@pytest.mark.parametrize('kw, message', [
    ({'names': ('input', 'logits')}, 'no input tensor'),
    ({'names': ('image', 'out')}, 'no output tensor'),
    ({'inp': (-1, 3, 64, 96)}, 'dynamic'),
    ({'inp': (1, 3, 64, 64)}, 'does not match'),
    ({'out': (1, 19, 64, 96)}, '11 class'),
])
def test_io_mismatch_is_refused(kw, message):
    with pytest.raises(BackendError, match=message):
        check_io(specs(**kw), card())


def test_cache_key_depends_on_model_gpu_version_precision(tmp_path):
    a = tmp_path / 'm.onnx'
    a.write_bytes(b'model-a')
    base = engine_cache_path(a, tmp_path, 'Orin (nvgpu)', '10.3.0', 'int8')
    assert base.parent == tmp_path and base.name.startswith('m-') and ' ' not in base.name
    assert engine_cache_path(a, tmp_path, 'Orin (nvgpu)', '10.3.0', 'int8') == base
    for other in [('NVIDIA H100', '10.3.0', 'int8'), ('Orin (nvgpu)', '10.7.0', 'int8'),
                  ('Orin (nvgpu)', '10.3.0', 'fp16')]:
        assert engine_cache_path(a, tmp_path, *other) != base
    a.write_bytes(b'model-b')
    assert engine_cache_path(a, tmp_path, 'Orin (nvgpu)', '10.3.0', 'int8') != base
    assert engine_cache_key('ab', 'x/y', '1', 'fp32') == 'ab-x-y-trt1-fp32'


def test_missing_tensorrt_is_a_clear_error(tiny_model, tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip('TensorRT is installed here')
    except ImportError:
        pass
    engine = tmp_path / 'm.engine'
    engine.write_bytes(b'\0')
    with pytest.raises(BackendError, match='TensorRT is not installed'):
        create_backend(engine, card(), backend='auto')
    r = subprocess.run([sys.executable, '-m', 'vit_seg_node.cli', 'build-engine', '--onnx',
                        str(tiny_model)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'TensorRT is not installed' in r.stderr
    assert 'Traceback' not in r.stderr
