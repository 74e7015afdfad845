"""ONNX Runtime backend: CPU everywhere, CUDA when the installed build provides it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vit_seg_node.backends.base import BackendError, check_output_size
from vit_seg_node.core.card import MAX_THREADS, ModelCard

CPU = ['CPUExecutionProvider']


def make_session(model: str | os.PathLike | bytes, threads: int = 0,
                 providers: list[str] | None = None, optimize: bool = True,
                 profile_prefix: str | None = None, spinning: bool = True,
                 spin_after_run: bool = True):
    """Return an ONNX Runtime session: the one place sessions are configured.

    ``model``: a path or serialized bytes; ``threads`` > 0 fixes the intra-op pool (inter-op 1);
    ``providers``: in order of preference, the available ones kept (default: CPU);
    ``optimize=False`` runs the graph as written (calibration of named tensors);
    ``profile_prefix``: write ONNX Runtime's per-operator profile there; ``spinning=False``:
    idle pool threads sleep instead of spinning (they then leave a busy core to other work);
    ``spin_after_run=False``: they spin during a run only and stop when it returns
    (``session.force_spinning_stop``), so the caller's work after a run has both cores.
    A model ONNX Runtime cannot load is one ``BackendError`` (a ``UserError``), for every caller.
    """
    import onnxruntime as ort

    if not 0 <= threads <= MAX_THREADS:
        raise BackendError(f'threads must be in 0..{MAX_THREADS}, got {threads}')
    opts = ort.SessionOptions()
    opts.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                     else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads > 0:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    if not spinning:
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    elif not spin_after_run:
        opts.add_session_config_entry('session.force_spinning_stop', '1')
    if profile_prefix:
        opts.enable_profiling, opts.profile_file_prefix = True, profile_prefix
    available = ort.get_available_providers()
    chosen = [p for p in (providers or CPU) if p in available] or CPU
    src = model if isinstance(model, bytes) else str(Path(model))
    try:
        return ort.InferenceSession(src, sess_options=opts, providers=chosen)
    except Exception as exc:  # onnxruntime raises its own non-exported exception types
        what = 'the serialized model' if isinstance(model, bytes) else src
        raise BackendError(f'ONNX Runtime cannot load {what}: {exc}') from None


def random_feed(session, seed: int = 0) -> dict[str, np.ndarray]:
    """Return seeded random values for every input of ``session``, of its shape and type.

    uint8 inputs (a graph that takes the frame's bytes) get bytes, the rest float32 noise: what
    timing runs feed whatever form the model has.
    """
    rng = np.random.default_rng(seed)
    feed = {}
    for i in session.get_inputs():
        shape = [int(d) if isinstance(d, int) else 1 for d in i.shape]
        feed[i.name] = rng.integers(0, 256, shape, dtype=np.uint8) if i.type == 'tensor(uint8)' \
            else rng.standard_normal(shape).astype(np.float32)
    return feed


def check_output(output, card: ModelCard, model: str | os.PathLike) -> None:
    """Raise BackendError unless the graph's output is what the card's ``output.kind`` says.

    ``logits``: floats, N x classes x H x W; ``labels``: integers, N x H x W (or N x 1 x H x W).
    """
    shape, kind = list(output.shape), card.output_kind
    floating = output.type in ('tensor(float)', 'tensor(float16)', 'tensor(bfloat16)')
    channels = shape[1] if len(shape) == 4 and isinstance(shape[1], int) else None  # None: free
    if kind == 'logits':
        ok = floating and len(shape) == 4 and channels in (None, card.num_classes)
    else:
        ok = not floating and (len(shape) == 3 or len(shape) == 4 and channels in (None, 1))
    if not ok:
        raise BackendError(f'{model}: output {output.name!r} is {output.type} {shape}, not what '
                           f'the card\'s output.kind {kind!r} says ({card.num_classes} classes)')
    check_output_size(shape[-2:], card, f'{model}: output {output.name!r}')


def input_shape(card: ModelCard) -> list[int]:
    """Return the graph input's shape that ``card`` describes (batch, then layout)."""
    h, w = card.input_height, card.input_width
    return [card.batch, h, w, 3] if card.input_layout == 'NHWC' else [card.batch, 3, h, w]


def check_input(inp, card: ModelCard) -> None:
    """Raise BackendError unless the graph's input has the card's shape and element type.

    A free (symbolic) dimension matches anything, so graphs exported with a dynamic batch run.
    """
    want = input_shape(card)
    shape = [d if isinstance(d, int) else None for d in inp.shape]
    dtype = {'tensor(float)': 'float32', 'tensor(uint8)': 'uint8'}.get(inp.type, inp.type)
    if len(shape) != 4 or any(d is not None and d != e for d, e in zip(shape, want)) or \
            dtype != card.input_dtype:
        raise BackendError(f'model input {inp.name!r} is {dtype} {inp.shape}, not what its card '
                           f'says ({card.input_dtype} {card.input_layout} {want})')


class OnnxRuntimeBackend:
    """Run an ONNX model with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        card: its model card (input/output names and shape).
        threads: intra-op threads (0: ONNX Runtime's default).
        spinning: whether idle pool threads spin during a run (fastest on an idle CPU) or sleep
            (faster when the CPU is shared: ``docs/benchmark.md``, regimes). Between runs they
            always stop: a backend serves frames, and what follows a run (post-processing,
            publishing, the subscriber waking up) needs the cores (``docs/node.md``).
        providers: execution providers in order of preference; default CUDA (if available), CPU.
    """

    name = 'onnxruntime'
    suffixes = ('.onnx',)

    def __init__(self, model_path: str | os.PathLike, card: ModelCard, threads: int = 0,
                 providers: list[str] | None = None, spinning: bool = True) -> None:
        self.card = card
        wanted = providers or ['CUDAExecutionProvider', 'CPUExecutionProvider']
        self.session = make_session(model_path, threads, wanted, spinning=spinning,
                                    spin_after_run=False)
        self.providers = self.session.get_providers()
        inputs = {i.name: i for i in self.session.get_inputs()}
        if card.input_name not in inputs:
            raise BackendError(f'model has no input {card.input_name!r} named in its card '
                               f'(inputs: {sorted(inputs)})')
        check_input(inputs[card.input_name], card)
        self.batch_size = card.batch
        self._dtype = np.dtype(card.input_dtype)
        outputs = {o.name: o for o in self.session.get_outputs()}
        if card.output_name not in outputs:
            raise BackendError(f'model has no output {card.output_name!r} (outputs: '
                               f'{sorted(outputs)})')
        check_output(outputs[card.output_name], card, model_path)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (the card's input: N x 3 x H x W float32 or N x H x W x 3 uint8)."""
        if batch.shape[0] != self.batch_size:
            raise ValueError(f'model takes batch {self.batch_size}, got {batch.shape[0]}')
        return self.session.run([self.card.output_name],
                                {self.card.input_name: np.ascontiguousarray(batch,
                                                                            self._dtype)})[0]
