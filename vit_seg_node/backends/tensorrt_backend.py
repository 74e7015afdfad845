"""TensorRT 10 backend and engine builder (Jetson Orin, any NVIDIA GPU).

Runtime: named I/O tensors, ``set_tensor_address`` and ``execute_async_v3`` on one CUDA stream.
Device memory goes through one CUDA binding, NVIDIA's ``cuda-python`` (``cuda.bindings.runtime``):
it is what NVIDIA's TensorRT samples use since 10.x, it is maintained with the CUDA toolkit, and
unlike pycuda it needs no compiled extension matching the JetPack image. All CUDA calls are in
this module.

Builder: the exported ONNX is parsed into a *strongly typed* network, so precision comes from the
graph itself (explicit Q/DQ for INT8, FP16-typed tensors for FP16) -- the route TensorRT 10
recommends and TensorRT 11 requires. Engines are cached by (ONNX hash, GPU, TensorRT version,
precision); a timing cache speeds up rebuilds; nothing is rebuilt unless asked.

What can and cannot be checked without a GPU: everything outside ``_Cuda``, ``build_engine`` and
``TensorRTBackend.__init__/infer`` is pure logic and unit-tested on CPU (cache keys, I/O checks
against the model card). The TensorRT calls follow NVIDIA's documented TensorRT 10 Python API
and have not been run by this project's CI (no GPU there).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path
import re
import time
from typing import Callable, Optional, Sequence

import numpy as np

from vit_seg_node.backends.base import BackendError
from vit_seg_node.core.card import card_path_for, ModelCard
from vit_seg_node.core.io import atomic_write_bytes, copy_atomic


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: str   # numpy dtype name


def check_io(specs: Sequence[TensorSpec], card: ModelCard) -> tuple[TensorSpec, TensorSpec]:
    """Match the engine's I/O tensors to the model card; raise BackendError on any mismatch."""
    by_name = {s.name: s for s in specs}
    inp, out = by_name.get(card.input_name), by_name.get(card.output_name)
    if inp is None or not inp.is_input:
        raise BackendError(f'engine has no input tensor {card.input_name!r} '
                           f'(tensors: {sorted(by_name)})')
    if out is None or out.is_input:
        raise BackendError(f'engine has no output tensor {card.output_name!r} '
                           f'(tensors: {sorted(by_name)})')
    if any(d < 0 for d in inp.shape) or any(d < 0 for d in out.shape):
        raise BackendError('engine has dynamic shapes; export with a static input shape')
    if inp.shape[1:] != (3, card.input_height, card.input_width):
        raise BackendError(f'engine input shape {inp.shape} does not match the card '
                           f'(N, 3, {card.input_height}, {card.input_width})')
    if inp.dtype not in ('float32', 'float16'):
        raise BackendError(f'engine input dtype {inp.dtype} is not float32/float16')
    if card.output_kind == 'logits' and (len(out.shape) != 4 or out.shape[1] != card.num_classes):
        raise BackendError(f'engine output shape {out.shape} does not give '
                           f'{card.num_classes} class logits')
    return inp, out


def sanitize(text: str) -> str:
    """Return ``text`` reduced to characters safe in a file name."""
    return re.sub(r'[^A-Za-z0-9._-]+', '-', text).strip('-').lower()


def file_digest(path: str | os.PathLike, length: int = 16) -> str:
    """Return the first ``length`` hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()[:length]


def engine_cache_key(onnx_digest: str, gpu_name: str, trt_version: str, precision: str) -> str:
    """Return the cache key of an engine: it is only valid for this model, GPU, TRT, precision."""
    return '-'.join(sanitize(x) for x in (onnx_digest, gpu_name, 'trt' + trt_version, precision))


def engine_cache_path(onnx_path: str | os.PathLike, cache_dir: str | os.PathLike, gpu_name: str,
                      trt_version: str, precision: str) -> Path:
    """Return where the engine built from ``onnx_path`` is cached."""
    key = engine_cache_key(file_digest(onnx_path), gpu_name, trt_version, precision)
    return Path(cache_dir) / f'{Path(onnx_path).stem}-{key}.engine'


def default_cache_dir() -> Path:
    """Return the engine cache directory ($VIT_SEG_ENGINE_CACHE or ~/.cache/vit_seg_node)."""
    return Path(os.environ.get('VIT_SEG_ENGINE_CACHE',
                               Path.home() / '.cache' / 'vit_seg_node' / 'engines'))


# ------------------------------------------------------------------------------- CUDA / TRT
class _Cuda:
    """The only place that calls CUDA (cuda-python runtime bindings)."""

    def __init__(self) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            try:
                from cuda import cudart  # cuda-python < 12.6
            except ImportError:
                raise BackendError('TensorRT backend needs cuda-python (pip install '
                                   'cuda-python); see requirements/jetson.txt') from None
        self.rt = cudart

    def check(self, result):
        """Unwrap a cuda-python result tuple, raising on an error code."""
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            raise BackendError(f'CUDA error {err}')
        return rest[0] if len(rest) == 1 else rest

    def device_name(self, device: int = 0) -> str:
        """Return the GPU's name."""
        prop = self.check(self.rt.cudaGetDeviceProperties(device))
        name = prop.name
        return (name.decode() if isinstance(name, bytes) else str(name)).split('\x00')[0]

    def malloc(self, nbytes: int) -> int:
        """Allocate device memory."""
        return int(self.check(self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        """Free device memory."""
        self.rt.cudaFree(ptr)

    def stream(self):
        """Create a CUDA stream."""
        return self.check(self.rt.cudaStreamCreate())

    def h2d(self, dst: int, src: np.ndarray, stream) -> None:
        """Copy host to device asynchronously."""
        self.check(self.rt.cudaMemcpyAsync(dst, src.ctypes.data, src.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream))

    def d2h(self, dst: np.ndarray, src: int, stream) -> None:
        """Copy device to host asynchronously."""
        self.check(self.rt.cudaMemcpyAsync(dst.ctypes.data, src, dst.nbytes,
                                           self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream))

    def sync(self, stream) -> None:
        """Wait for the stream."""
        self.check(self.rt.cudaStreamSynchronize(stream))


def _import_trt():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError('TensorRT is not installed (on a Jetson it comes with JetPack; '
                           'elsewhere see requirements/jetson.txt)') from None
    return trt


def card_precision(card: ModelCard) -> str:
    """Return the precision tag of a model card (for the engine cache key)."""
    return str(card.precision.get('default', 'fp32'))


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike,
                 timing_cache: Optional[str | os.PathLike] = None, workspace_gb: float = 2.0,
                 log: Callable[[str], None] = print) -> Path:
    """Build a strongly typed TensorRT engine from an ONNX file (precision from the graph)."""
    trt = _import_trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = '; '.join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f'TensorRT cannot parse {onnx_path}: {errors}')
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    cache_bytes = b''
    if timing_cache and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    class Progress(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.last = 0.0

        def phase_start(self, phase_name, parent_phase, num_steps):
            log(f'build-engine: {phase_name} ({num_steps} steps)')

        def step_complete(self, phase_name, step):
            if time.time() - self.last > 10:
                self.last = time.time()
                log(f'build-engine: {phase_name} step {step}')
            return True

        def phase_finish(self, phase_name):
            pass

    config.progress_monitor = Progress()
    t0 = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f'TensorRT failed to build an engine from {onnx_path}')
    out_path = atomic_write_bytes(out_path, bytes(serialized))
    if timing_cache:
        atomic_write_bytes(timing_cache, bytes(config.get_timing_cache().serialize()))
    log(f'build-engine: {out_path} built in {time.time() - t0:.0f} s')
    return out_path


def build_or_reuse(onnx_path: str | os.PathLike, card: ModelCard,
                   cache_dir: Optional[str | os.PathLike] = None, force: bool = False,
                   log: Callable[[str], None] = print) -> Path:
    """Return a cached engine for ``onnx_path`` on this GPU, building it only if missing."""
    trt = _import_trt()
    gpu = _Cuda().device_name()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = engine_cache_path(onnx_path, cache_dir, gpu, trt.__version__, card_precision(card))
    if path.is_file() and not force:
        log(f'build-engine: reusing {path}')
    else:
        build_engine(onnx_path, path, timing_cache=cache_dir / 'timing.cache', log=log)
    if not card_path_for(path).is_file():
        copy_atomic(card_path_for(onnx_path), card_path_for(path))
    return path


class TensorRTBackend:
    """Run a TensorRT engine (or an ONNX file, built once into the engine cache)."""

    name = 'tensorrt'
    suffixes = ('.engine', '.plan')

    def __init__(self, model_path: str | os.PathLike, card: ModelCard, threads: int = 0,
                 cache_dir: Optional[str] = None) -> None:
        trt = _import_trt()
        self.card = card
        self.cuda = _Cuda()
        path = Path(model_path)
        if path.suffix == '.onnx':
            path = build_or_reuse(path, card, cache_dir)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f'cannot deserialize {path}: built for another GPU or '
                               f'TensorRT version? Rebuild with vit-seg build-engine')
        specs = []
        for i in range(self.engine.num_io_tensors):
            n = self.engine.get_tensor_name(i)
            specs.append(TensorSpec(
                n, self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                tuple(self.engine.get_tensor_shape(n)),
                np.dtype(trt.nptype(self.engine.get_tensor_dtype(n))).name))
        self.inp, self.out = check_io(specs, card)
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        self.host = {s.name: np.empty(s.shape, s.dtype) for s in specs}
        self.device = {s.name: self.cuda.malloc(self.host[s.name].nbytes) for s in specs}
        for n, ptr in self.device.items():
            self.context.set_tensor_address(n, ptr)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; returns the card's output tensor as float32."""
        x = np.ascontiguousarray(batch, self.inp.dtype)
        if x.shape != self.inp.shape:
            raise ValueError(f'engine takes {self.inp.shape}, got {x.shape}')
        self.cuda.h2d(self.device[self.inp.name], x, self.stream)
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError('TensorRT execution failed')
        out = self.host[self.out.name]
        self.cuda.d2h(out, self.device[self.out.name], self.stream)
        self.cuda.sync(self.stream)
        return out.astype(np.float32, copy=True)

    def __del__(self) -> None:
        for ptr in getattr(self, 'device', {}).values():
            self.cuda.free(ptr)
