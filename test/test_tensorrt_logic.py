"""TensorRT cannot run here (no GPU, no TensorRT): these test the pure logic around it."""

import collections
import subprocess
import sys

import numpy as np
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
    base = engine_cache_path(a, tmp_path, 'Orin (nvgpu)', '10.3.0', 'int8', '8.7')
    assert base.parent == tmp_path and base.name.startswith('m-') and ' ' not in base.name
    assert engine_cache_path(a, tmp_path, 'Orin (nvgpu)', '10.3.0', 'int8', '8.7') == base
    others = [('NVIDIA H100', '10.3.0', 'int8', '9.0'), ('Orin (nvgpu)', '10.7.0', 'int8', '8.7'),
              ('Orin (nvgpu)', '10.3.0', 'fp16', '8.7'), ('Orin (nvgpu)', '10.3.0', 'int8', '7.2')]
    for other in others:
        assert engine_cache_path(a, tmp_path, *other) != base
    a.write_bytes(b'model-b')
    assert engine_cache_path(a, tmp_path, 'Orin (nvgpu)', '10.3.0', 'int8', '8.7') != base
    assert engine_cache_key('ab', 'x/y', '1', 'fp32', '8.7') == 'ab-x-y-sm87-trt1-fp32'


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


# ------------------------------------------------------------------------ the runtime, faked
class FakeCudart:
    """cuda-python's runtime API over host memory: enough to run the backend's logic."""

    class cudaMemcpyKind:
        cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost = 1, 2

    class cudaStreamCaptureMode:
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self, fail_free=False):
        import ctypes

        self.ctypes, self.fail_free = ctypes, fail_free
        self.device, self.pinned, self.calls = {}, {}, collections.Counter()
        self.capturing, self.graphs = None, {}

    def _ok(self, *rest):
        return (0, *rest)

    def cudaMalloc(self, n):
        ptr = 0x1000 + 0x100000 * (len(self.device) + 1)
        self.device[ptr] = bytearray(n)
        return self._ok(ptr)

    def cudaFree(self, ptr):
        self.calls['free'] += 1
        self.device.pop(ptr)
        return (2,) if self.fail_free else (0,)

    def cudaMallocHost(self, n):
        buf = self.ctypes.create_string_buffer(n)
        self.pinned[self.ctypes.addressof(buf)] = buf
        return self._ok(self.ctypes.addressof(buf))

    def cudaFreeHost(self, ptr):
        self.calls['free_host'] += 1
        self.pinned.pop(ptr)
        return (0,)

    def cudaStreamCreate(self):
        return self._ok('stream')

    def cudaStreamDestroy(self, s):
        self.calls['stream_destroy'] += 1
        return (0,)

    def cudaStreamSynchronize(self, s):
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        self.calls['copy'] += 1
        self.calls['pinned_copy'] += int((src if kind == 1 else dst) in self.pinned)
        if kind == 1:
            self.device[dst][:n] = self.ctypes.string_at(src, n)
        else:
            self.ctypes.memmove(dst, bytes(self.device[src][:n]), n)
        return (0,)

    def cudaStreamBeginCapture(self, stream, mode):
        self.capturing = []
        return (0,)

    def cudaStreamEndCapture(self, stream):
        self.graphs['g'], self.capturing = self.capturing, None
        return self._ok('g')

    def cudaGraphInstantiate(self, graph, flags):
        return self._ok('exec')

    def cudaGraphLaunch(self, graph_exec, stream):
        self.calls['graph_launch'] += 1
        for fn in self.graphs['g']:
            fn()
        return (0,)

    def cudaGraphExecDestroy(self, e):
        self.calls['graph_destroy'] += 1
        return (0,)

    def cudaGraphDestroy(self, g):
        return (0,)


class FakeTrt:
    """TensorRT's runtime objects for an engine that thresholds channel 0 into uint8 labels."""

    class TensorIOMode:
        INPUT, OUTPUT = 'in', 'out'

    class Logger:
        WARNING = 0

        def __init__(self, level):
            pass

    def __init__(self, cudart):
        self.cudart = cudart
        self.enqueues = 0

    def nptype(self, dtype):
        return dtype

    def Runtime(self, logger):
        trt = self

        class Engine:
            num_io_tensors = 2
            names = ['image', 'labels']

            def get_tensor_name(self, i):
                return self.names[i]

            def get_tensor_mode(self, n):
                return 'in' if n == 'image' else 'out'

            def get_tensor_shape(self, n):
                return (1, 3, 64, 96) if n == 'image' else (1, 64, 96)

            def get_tensor_dtype(self, n):
                return np.float32 if n == 'image' else np.uint8

            def create_execution_context(self):
                return Context()

        class Context:
            def __init__(self):
                self.addr = {}

            def set_tensor_address(self, n, ptr):
                self.addr[n] = ptr

            def execute_async_v3(self, stream):
                def run():
                    trt.enqueues += 1
                    x = np.frombuffer(trt.cudart.device[self.addr['image']], np.float32)
                    y = (x.reshape(1, 3, 64, 96)[:, 0] > 0).astype(np.uint8)
                    trt.cudart.device[self.addr['labels']][:] = y.tobytes()
                if trt.cudart.capturing is not None:
                    trt.cudart.capturing.append(run)
                else:
                    run()
                return True

        class Runtime:
            def deserialize_cuda_engine(self, data):
                return Engine()
        return Runtime()


@pytest.fixture()
def fake_tensorrt(monkeypatch, tmp_path):
    from vit_seg_node.backends import tensorrt_backend as tb

    rt = FakeCudart()
    trt = FakeTrt(rt)
    monkeypatch.setattr(tb, '_import_trt', lambda: trt)
    monkeypatch.setattr(tb._Cuda, '__init__', lambda self: setattr(self, 'rt', rt))
    engine = tmp_path / 'm.engine'
    engine.write_bytes(b'engine')
    labels_card = card()
    labels_card.output_kind, labels_card.output_name = 'labels', 'labels'
    return tb, rt, trt, engine, labels_card


@pytest.mark.parametrize('graph', [False, True])
def test_runtime_pinned_warmup_uint8_graph_and_cleanup(fake_tensorrt, graph):
    tb, rt, trt, engine, c = fake_tensorrt
    b = tb.TensorRTBackend(engine, c, cuda_graph=graph, warmup=3)
    assert trt.enqueues == 3 and len(rt.pinned) == 2        # warm-up, page-locked buffers
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 96)).astype(np.float32)
    y = b.infer(x)
    assert y.dtype == np.uint8 and np.array_equal(y, (x[:, 0] > 0).astype(np.uint8))
    assert rt.calls['graph_launch'] == int(graph)
    assert rt.calls['pinned_copy'] == rt.calls['copy']      # every copy from/to pinned memory
    b.close()
    assert not rt.device and not rt.pinned and rt.calls['stream_destroy'] == 1
    assert rt.calls['graph_destroy'] == int(graph)


def test_cleanup_errors_are_raised_after_everything_is_released(fake_tensorrt):
    tb, rt, trt, engine, c = fake_tensorrt
    b = tb.TensorRTBackend(engine, c)
    rt.fail_free = True
    with pytest.raises(BackendError, match='CUDA error'):
        b.close()
    assert not rt.device and not rt.pinned and rt.calls['stream_destroy'] == 1


def test_labels_card_refuses_a_float_output():
    c = card()
    c.output_kind, c.output_name = 'labels', 'logits'
    with pytest.raises(BackendError, match='labels'):
        check_io(specs(), c)


def test_cpu_forms_are_refused_with_one_line(tmp_path):
    from vit_seg_node.pipeline import shipped_models

    fast = shipped_models()['fast']    # the ONNX Runtime CPU form: MatMulInteger & co
    r = subprocess.run([sys.executable, '-m', 'vit_seg_node.cli', 'build-engine', '--onnx',
                        str(fast)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and 'CPU form' in r.stderr and 'Traceback' not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_timing_cache_is_per_architecture_and_version(tmp_path):
    from vit_seg_node.backends.tensorrt_backend import timing_cache_path

    a = timing_cache_path(tmp_path, '8.7', '10.3.0')
    assert a != timing_cache_path(tmp_path, '9.0', '10.3.0')
    assert a != timing_cache_path(tmp_path, '8.7', '10.7.0')
    key = engine_cache_key('ab', 'Orin', '10.3', 'int8', '8.7')
    assert 'sm87' in key and key != engine_cache_key('ab', 'Orin', '10.3', 'int8', '7.2')
