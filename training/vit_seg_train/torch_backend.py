"""PyTorch backend for research: runs a training checkpoint directly (no export step).

Registered as ``torch`` through the ``vit_seg.backends`` entry points. The checkpoint is rebuilt
from the resolved ``config.yaml`` saved beside it and loaded without running code from the file
(safetensors or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vit_seg_node.backends.base import BackendError
from vit_seg_node.core.card import MAX_THREADS, ModelCard


class TorchBackend:
    """Run a training checkpoint with PyTorch (CUDA when available, else CPU).

    ``fake_quant_frames`` > 0 scores the model under INT8 fake quantization (min-max),
    calibrated on that many frames of the ``fit`` split of ``calibration_data``.
    """

    name = 'torch'
    suffixes = ('.safetensors', '.pt', '.pth')

    def __init__(self, model_path: str | os.PathLike, card: ModelCard, threads: int = 0,
                 device: str = '', fake_quant_frames: int = 0,
                 calibration_data: str = '', spinning: bool = True) -> None:
        import torch

        from vit_seg_train.checkpoint import load_model

        if not 0 <= threads <= MAX_THREADS:
            raise BackendError(f'threads must be in 0..{MAX_THREADS}, got {threads}')
        if threads > 0:
            torch.set_num_threads(int(threads))
        self.card = card
        self.device = device or ('cuda' if torch.cuda.is_available() else 'cpu')
        model, _ = load_model(model_path)
        if fake_quant_frames:
            from vit_seg_train.fakequant import calibrate_on_split, quantize_model

            quantize_model(model, calibrator='minmax')
            calibrate_on_split(model, calibration_data, 'fit', card, fake_quant_frames)
        self.model = model.to(self.device).eval()
        self._torch = torch

    @staticmethod
    def card_for(checkpoint: str | os.PathLike) -> ModelCard:
        """Return the model card of a training checkpoint, built from its resolved config."""
        from vit_seg_train.checkpoint import config_path_for
        from vit_seg_train.config import card_from_config, load_config

        cfg = load_config(config_path_for(checkpoint))
        return card_from_config(cfg, name=Path(checkpoint).parent.name or 'checkpoint')

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Return logits N x K x H x W for an N x 3 x H x W float32 batch."""
        with self._torch.inference_mode():
            x = self._torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self.device)
            return self.model(x).float().cpu().numpy()
