"""ONNX Runtime backend: CPU everywhere, CUDA when the installed build provides it."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vit_seg_node.runtime.backends import BackendError
from vit_seg_node.runtime.card import ModelCard


class OnnxRuntimeBackend:
    """Run an ONNX model with ONNX Runtime.

    Args:
        model_path: the ``.onnx`` file.
        card: its model card (input/output names and shape).
        threads: intra-op threads (0: ONNX Runtime's default).
        providers: execution providers in order of preference; default CUDA (if available), CPU.
    """

    name = 'onnxruntime'

    def __init__(self, model_path: str | os.PathLike, card: ModelCard, threads: int = 0,
                 providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.card = card
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads > 0:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        available = ort.get_available_providers()
        wanted = providers or ['CUDAExecutionProvider', 'CPUExecutionProvider']
        chosen = [p for p in wanted if p in available] or ['CPUExecutionProvider']
        try:
            self.session = ort.InferenceSession(str(Path(model_path)), sess_options=opts,
                                                providers=chosen)
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise BackendError(f'ONNX Runtime cannot load {model_path}: {exc}') from None
        self.providers = self.session.get_providers()
        inputs = {i.name: i for i in self.session.get_inputs()}
        if card.input_name not in inputs:
            raise BackendError(f'model has no input {card.input_name!r} named in its card '
                               f'(inputs: {sorted(inputs)})')
        shape = inputs[card.input_name].shape
        expected = [3, card.input_height, card.input_width]
        if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != expected:
            raise BackendError(f'model input shape {shape} does not match the card '
                               f'(N, {", ".join(map(str, expected))})')
        self.batch_size = shape[0] if isinstance(shape[0], int) else None
        outputs = [o.name for o in self.session.get_outputs()]
        if card.output_name not in outputs:
            raise BackendError(f'model has no output {card.output_name!r} (outputs: {outputs})')

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (N x 3 x H x W float32) and return the card's output."""
        if self.batch_size is not None and batch.shape[0] != self.batch_size:
            raise ValueError(f'model takes batch {self.batch_size}, got {batch.shape[0]}')
        return self.session.run([self.card.output_name],
                                {self.card.input_name: np.ascontiguousarray(batch, np.float32)})[0]
