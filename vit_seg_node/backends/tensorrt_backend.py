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
import os
from pathlib import Path
import re
import time
from typing import Callable, Optional, Sequence

import numpy as np

from vit_seg_node.backends.base import BackendError, check_output_size
from vit_seg_node.core.card import card_path_for, ModelCard
from vit_seg_node.core.io import atomic_write_bytes, copy_atomic, file_digest
from vit_seg_node.core.processing import blank_input


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
    h, w = card.input_height, card.input_width
    want = (card.batch, h, w, 3) if card.input_layout == 'NHWC' else (card.batch, 3, h, w)
    if inp.shape != want:
        raise BackendError(f'engine input shape {inp.shape} does not match the card '
                           f'({card.input_layout} {want})')
    dtypes = ('uint8',) if card.bytes_input else ('float32', 'float16')
    if inp.dtype not in dtypes:
        raise BackendError(f'engine input dtype {inp.dtype} is not what the card says '
                           f'({"/".join(dtypes)})')
    if card.output_kind == 'logits' and (len(out.shape) != 4 or out.shape[1] != card.num_classes):
        raise BackendError(f'engine output shape {out.shape} does not give '
                           f'{card.num_classes} class logits')
    if card.output_kind == 'labels' and out.dtype not in ('uint8', 'int32', 'int64'):
        raise BackendError(f'engine output {out.name} is {out.dtype}; the card says class '
                           f'labels (uint8)')
    if card.output_kind == 'logits' and out.dtype not in ('float32', 'float16'):
        raise BackendError(f'engine output {out.name} is {out.dtype}; the card says logits')
    check_output_size(tuple(out.shape[-2:]), card, f'engine output {out.name}')
    return inp, out


# operators of the ONNX Runtime CPU forms (``vit-seg quantize --format dynamic``), which
# TensorRT's parser rejects: build from the FP32 export or a --format qdq/qdq-fp16 model
CPU_ONLY_OPS = ('MatMulInteger', 'ConvInteger', 'DynamicQuantizeLinear', 'MatMulIntegerToFloat',
                'DynamicQuantizeMatMul', 'QLinearConv', 'QLinearMatMul', 'QLinearAdd',
                'QLinearMul', 'QAttention', 'QGemm')


def check_tensorrt_form(onnx_path: str | os.PathLike) -> None:
    """Raise BackendError when the ONNX file is a CPU-only form TensorRT cannot parse."""
    import onnx

    try:
        graph = onnx.load(str(onnx_path), load_external_data=False).graph
    except Exception as exc:   # protobuf's DecodeError and friends
        raise BackendError(f'cannot read {onnx_path}: {exc}') from None
    found = sorted({n.op_type for n in graph.node if n.op_type in CPU_ONLY_OPS
                    or n.domain == 'com.microsoft'})
    if found:
        raise BackendError(f'{onnx_path} is an ONNX Runtime CPU form ({", ".join(found)}), '
                           f'which TensorRT cannot build: use the FP32 export or '
                           f'vit-seg quantize --format qdq-fp16')


def sanitize(text: str) -> str:
    """Return ``text`` reduced to characters safe in a file name."""
    return re.sub(r'[^A-Za-z0-9._-]+', '-', text).strip('-').lower()


def engine_cache_key(onnx_digest: str, gpu_name: str, trt_version: str, precision: str,
                     compute_capability: str) -> str:
    """Return the cache key of an engine.

    An engine is valid only for its model, GPU (name and compute capability), TensorRT version
    and precision.
    """
    parts = (onnx_digest, gpu_name, 'sm' + compute_capability.replace('.', ''),
             'trt' + trt_version, precision)
    return '-'.join(sanitize(x) for x in parts)


def engine_cache_path(onnx_path: str | os.PathLike, cache_dir: str | os.PathLike, gpu_name: str,
                      trt_version: str, precision: str, compute_capability: str) -> Path:
    """Return where the engine built from ``onnx_path`` is cached."""
    key = engine_cache_key(file_digest(onnx_path), gpu_name, trt_version, precision,
                           compute_capability)
    return Path(cache_dir) / f'{Path(onnx_path).stem}-{key}.engine'


def timing_cache_path(cache_dir: str | os.PathLike, compute_capability: str,
                      trt_version: str) -> Path:
    """Return the timing cache of one GPU architecture and TensorRT version.

    Timing caches do not carry over between architectures or TensorRT versions.
    """
    return Path(cache_dir) / (f'timing-sm{sanitize(compute_capability.replace(".", ""))}-'
                              f'trt{sanitize(trt_version)}.cache')


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

    def compute_capability(self, device: int = 0) -> str:
        """Return the GPU's compute capability, e.g. '8.7' for an Orin."""
        prop = self.check(self.rt.cudaGetDeviceProperties(device))
        return f'{prop.major}.{prop.minor}'

    def malloc(self, nbytes: int) -> int:
        """Allocate device memory."""
        return int(self.check(self.rt.cudaMalloc(nbytes)))

    def free(self, ptr: int) -> None:
        """Free device memory (errors raised)."""
        self.check(self.rt.cudaFree(ptr))

    def host_array(self, shape: tuple[int, ...], dtype: str) -> tuple[int, np.ndarray]:
        """Return (pointer, array) of page-locked host memory: asynchronous, faster copies."""
        import ctypes

        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        ptr = int(self.check(self.rt.cudaMallocHost(nbytes)))
        raw = (ctypes.c_uint8 * nbytes).from_address(ptr)
        return ptr, np.frombuffer(raw, dtype=dtype).reshape(shape)

    def free_host(self, ptr: int) -> None:
        """Free page-locked host memory (errors raised)."""
        self.check(self.rt.cudaFreeHost(ptr))

    def stream(self):
        """Create a CUDA stream."""
        return self.check(self.rt.cudaStreamCreate())

    def stream_destroy(self, stream) -> None:
        """Destroy a CUDA stream (errors raised)."""
        self.check(self.rt.cudaStreamDestroy(stream))

    def capture(self, stream, enqueue: Callable[[], None]):
        """Record what ``enqueue`` puts on ``stream`` as a CUDA graph; return (graph, exec)."""
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        self.check(self.rt.cudaStreamBeginCapture(stream, mode))
        try:
            enqueue()
        finally:
            graph = self.check(self.rt.cudaStreamEndCapture(stream))
        return graph, self.check(self.rt.cudaGraphInstantiate(graph, 0))

    def launch(self, graph_exec, stream) -> None:
        """Launch an instantiated CUDA graph."""
        self.check(self.rt.cudaGraphLaunch(graph_exec, stream))

    def graph_destroy(self, graph, graph_exec) -> None:
        """Destroy a CUDA graph and its executable (errors raised)."""
        self.check(self.rt.cudaGraphExecDestroy(graph_exec))
        self.check(self.rt.cudaGraphDestroy(graph))

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


def load_timing_cache(config, path: Optional[str | os.PathLike], log: Callable[[str], None]):
    """Attach a timing cache to ``config``: the file's when it loads, else an empty one."""
    data = b''
    if path and Path(path).is_file():
        data = Path(path).read_bytes()
    cache = config.create_timing_cache(data) if data else None
    if data and (cache is None or not config.set_timing_cache(cache, ignore_mismatch=False)):
        log(f'build-engine: timing cache {path} does not fit this GPU/TensorRT, starting fresh')
        cache = None
    if cache is None:
        cache = config.create_timing_cache(b'')
        config.set_timing_cache(cache, ignore_mismatch=False)
    return cache


def build_engine(onnx_path: str | os.PathLike, out_path: str | os.PathLike,
                 timing_cache: Optional[str | os.PathLike] = None, workspace_gb: float = 2.0,
                 log: Callable[[str], None] = print) -> Path:
    """Build a strongly typed TensorRT engine from an ONNX file (precision from the graph)."""
    check_tensorrt_form(onnx_path)
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
    load_timing_cache(config, timing_cache, log)

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
    check_tensorrt_form(onnx_path)
    trt = _import_trt()
    cuda = _Cuda()
    gpu, cc = cuda.device_name(), cuda.compute_capability()
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    path = engine_cache_path(onnx_path, cache_dir, gpu, trt.__version__, card_precision(card), cc)
    if path.is_file() and not force:
        log(f'build-engine: reusing {path}')
    else:
        build_engine(onnx_path, path, timing_cache=timing_cache_path(cache_dir, cc,
                                                                     trt.__version__), log=log)
    if not card_path_for(path).is_file():
        copy_atomic(card_path_for(onnx_path), card_path_for(path))
    return path


class TensorRTBackend:
    """Run a TensorRT engine (or an ONNX file, built once into the engine cache).

    Page-locked host buffers for the copies, a warm-up at start, an optional CUDA graph around
    ``execute_async_v3`` (``cuda_graph=True``: one launch per frame instead of the enqueue),
    the output returned in its own type (uint8 labels stay uint8), and ``close()`` releasing
    every CUDA resource with its errors checked. ``threads`` and ``spinning`` (CPU thread-pool
    options of the other backends) have no effect here.
    """

    name = 'tensorrt'
    suffixes = ('.engine', '.plan')

    def __init__(self, model_path: str | os.PathLike, card: ModelCard, threads: int = 0,
                 cache_dir: Optional[str] = None, cuda_graph: bool = False,
                 warmup: int = 3, spinning: bool = True) -> None:
        trt = _import_trt()
        self.card = card
        self.cuda = _Cuda()
        self.host: dict[str, tuple[int, np.ndarray]] = {}
        self.device: dict[str, int] = {}
        self.stream = self.graph = None
        path = Path(model_path)
        if path.suffix == '.onnx':
            path = build_or_reuse(path, card, cache_dir)
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise BackendError(f'cannot deserialize {path}: built for another GPU or '
                               f'TensorRT version? Rebuild with vit-seg build-engine')
        self.inp, self.out = check_io(engine_specs(self.engine, trt), card)
        try:
            self._allocate([self.inp, self.out])
            for _ in range(warmup):
                self.infer(blank_input(card))
            if cuda_graph:
                self.graph = self.cuda.capture(self.stream, self._enqueue)
        except Exception:
            self.close()
            raise

    def _allocate(self, specs: list[TensorSpec]) -> None:
        self.context = self.engine.create_execution_context()
        self.stream = self.cuda.stream()
        for s in specs:
            self.host[s.name] = self.cuda.host_array(s.shape, s.dtype)
            self.device[s.name] = self.cuda.malloc(self.host[s.name][1].nbytes)
            self.context.set_tensor_address(s.name, self.device[s.name])

    def _enqueue(self) -> None:
        if not self.context.execute_async_v3(self.stream):
            raise BackendError('TensorRT execution failed')

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch; return the card's output (labels uint8, logits float) as a copy."""
        if batch.shape != self.inp.shape:
            raise ValueError(f'engine takes {self.inp.shape}, got {batch.shape}')
        inp = self.host[self.inp.name][1]
        inp[...] = batch          # into page-locked memory, converted to the engine's type
        self.cuda.h2d(self.device[self.inp.name], inp, self.stream)
        if self.graph is not None:
            self.cuda.launch(self.graph[1], self.stream)
        else:
            self._enqueue()
        out = self.host[self.out.name][1]
        self.cuda.d2h(out, self.device[self.out.name], self.stream)
        self.cuda.sync(self.stream)
        return out.copy()

    def close(self) -> None:
        """Release the CUDA graph, buffers and stream; raise the first CUDA error, if any."""
        errors = []
        steps = []
        if self.graph is not None:
            steps.append(lambda g=self.graph: self.cuda.graph_destroy(*g))
        steps += [lambda p=p: self.cuda.free(p) for p in self.device.values()]
        steps += [lambda p=p: self.cuda.free_host(p) for p, _ in self.host.values()]
        if self.stream is not None:
            steps.append(lambda s=self.stream: self.cuda.stream_destroy(s))
        for step in steps:
            try:
                step()
            except BackendError as exc:
                errors.append(exc)
        self.graph, self.device, self.host, self.stream = None, {}, {}, None
        if errors:
            raise errors[0]

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:   # interpreter shutdown: nothing left to report to
            pass


def engine_specs(engine, trt) -> list[TensorSpec]:
    """Return the engine's I/O tensors."""
    specs = []
    for i in range(engine.num_io_tensors):
        n = engine.get_tensor_name(i)
        specs.append(TensorSpec(n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                                tuple(engine.get_tensor_shape(n)),
                                np.dtype(trt.nptype(engine.get_tensor_dtype(n))).name))
    return specs
