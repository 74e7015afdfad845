"""Export a trained model to ONNX (static shape), verify it in ONNX Runtime, write its model card.

The exporter runs PyTorch and ONNX Runtime on the same real frames and refuses to write a model
whose output disagrees beyond a tolerance. The file appears only after the check passes.
"""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Iterable, Optional

import numpy as np
import torch

from vit_seg_node.core.errors import UserError
from vit_seg_optimize.onnx_io import load_onnx
from vit_seg_node.core.card import ModelCard, save_card
from vit_seg_node.core.processing import preprocess

FORBIDDEN_OPS = {'Loop', 'If', 'Scan', 'NonZero', 'Unique', 'ScatterElements', 'ScatterND'}


class ExportMismatch(UserError):
    """ONNX Runtime disagrees with PyTorch on the verification frames."""


def frames_to_batches(frames: Iterable[np.ndarray], card: ModelCard) -> list[np.ndarray]:
    """Pre-process RGB uint8 frames exactly as the runtime does (one batch of one each)."""
    return [preprocess(f, card)[0] for f in frames]


def card_batches(batches: list[np.ndarray], n: int) -> list[np.ndarray]:
    """Return batches of one (``frames_to_batches``) stacked into batches of ``n`` frames.

    The last batch, when the frames do not fill it, takes frames from the start again (the
    same frame over and over only when there is one): for a model whose card has a batch of n
    (verification, calibration).
    """
    if n == 1 or not batches:
        return list(batches)
    count = -(-len(batches) // n) * n
    frames = [batches[i % len(batches)] for i in range(count)]
    return [np.concatenate(frames[i:i + n]) for i in range(0, count, n)]


def graph_problems(model_path: str | os.PathLike) -> list[str]:
    """Return the reasons an ONNX graph is not a static-shape, control-flow-free graph."""
    m = load_onnx(model_path, weights=False)
    problems = []
    for node in m.graph.node:
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f'{node.op_type} node {node.name}')
    for vi in list(m.graph.input) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if any(not d.HasField('dim_value') for d in dims):
            problems.append(f'dynamic dimension in {vi.name}')
    return problems


class LabelsOutput(torch.nn.Module):
    """Wrap a segmenter so the graph ends in ArgMax: a uint8 N x H x W label map.

    The runtime then copies 1 byte per pixel out of the engine instead of K floats, and the
    argmax runs inside ONNX Runtime/TensorRT (5 ms of NumPy on this CPU otherwise).
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return the argmax labels."""
        return self.model(x).argmax(1).to(torch.uint8)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """Return ||a - b|| / ||b||."""
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))


def alone_mismatch(backend, batch: np.ndarray, got: np.ndarray) -> tuple[float, float]:
    """Return how frame 0's output differs when the batch's other places hold copies of it.

    (relative error of the output, fraction of pixels whose label differs): a model whose
    frames do not influence each other gives (0, 0); the runtime fills a batch not full so.
    """
    alone = backend.infer(np.repeat(batch[:1], len(batch), axis=0))[0]
    return relative_error(alone, got[0]), float(np.mean(alone.argmax(0) != got[0].argmax(0)))


def export_onnx(model: torch.nn.Module, card: ModelCard, out_path: str | os.PathLike,
                frames: Iterable[np.ndarray], opset: int = 17, rtol: float = 1e-4,
                max_label_mismatch: float = 1e-3, output: str = 'logits',
                batch: Optional[int] = None) -> dict:
    """Export ``model`` for ``card``'s static input, verify with ONNX Runtime, write model + card.

    ``batch`` (default: the card's) is the graph's static batch, written to the card; with
    more than one frame, each frame's output must also be the same with the other places of
    the batch holding copies of it (a model whose frames mix, e.g. a token reduction over the
    whole batch, is refused).

    Returns the verification report (relative error, label agreement). Raises ExportMismatch and
    writes nothing if ONNX Runtime disagrees with PyTorch beyond ``rtol`` (relative L2 error of
    the logits, median over frames) or ``max_label_mismatch`` (fraction of pixels whose argmax
    differs, any frame). ``output='labels'`` writes a graph ending in ArgMax (uint8 labels) after
    the logits graph passed the check; its labels are checked against PyTorch's too.
    """
    if output not in ('logits', 'labels'):
        raise UserError(f'output must be logits or labels, got {output!r}')
    from vit_seg_node.backends.onnxruntime_backend import OnnxRuntimeBackend

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval().float()
    if batch is not None:
        card.batch = batch
    card.validate()
    batches = card_batches(frames_to_batches(frames, card), card.batch)
    if not batches:
        raise UserError('export needs at least one real frame to verify against')
    dummy = torch.from_numpy(batches[0])
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        tmp_model = Path(tmp) / out_path.name
        with torch.no_grad():
            torch.onnx.export(model, (dummy,), str(tmp_model), input_names=[card.input_name],
                              output_names=[card.output_name], opset_version=opset,
                              dynamo=False, do_constant_folding=True)
        problems = graph_problems(tmp_model)
        if problems:
            raise UserError(f'exported graph is not static: {problems[:5]}')
        save_card(card, tmp_model)
        backend = OnnxRuntimeBackend(tmp_model, card, threads=0, providers=['CPUExecutionProvider'])
        errs, mismatch, alone = [], [], []
        with torch.no_grad():
            for b in batches:
                ref = model(torch.from_numpy(b)).numpy()
                got = backend.infer(b)
                errs.append(relative_error(got, ref))
                mismatch.append(float(np.mean(got.argmax(1) != ref.argmax(1))))
                if card.batch > 1:
                    alone.append(alone_mismatch(backend, b, got))
        report = {'max_relative_error': max(errs),
                  'median_relative_error': float(np.median(errs)),
                  'max_label_mismatch': max(mismatch), 'frames': len(batches) * card.batch,
                  'batch': card.batch, 'opset': opset}
        if alone:
            check_frames_apart(alone, rtol, max_label_mismatch, card)
            report['alone_max_relative_error'] = max(e for e, _ in alone)
        # Token selection is discrete: on rare frames a score tie within float noise can pick
        # another token in one runtime. Such a frame still agrees on >= 99.9% of its labels;
        # the logits must agree to rtol on the typical (median) frame.
        if float(np.median(errs)) > rtol or max(mismatch) > max_label_mismatch:
            raise ExportMismatch(f'ONNX Runtime disagrees with PyTorch: relative error '
                                 f'{float(np.median(errs)):.2e} median / {max(errs):.2e} max '
                                 f'(limit {rtol:.0e}), label mismatch {max(mismatch):.2e}; '
                                 f'nothing written')
        if output == 'labels':
            card.output_name, card.output_kind = 'labels', 'labels'
            with torch.no_grad():
                # a fresh wrapper is in training mode, and the exporter restores that mode on
                # the whole tree afterwards: keep it (and so the model) in eval mode
                torch.onnx.export(LabelsOutput(model).eval(), (dummy,), str(tmp_model),
                                  input_names=[card.input_name], output_names=['labels'],
                                  opset_version=opset, dynamo=False, do_constant_folding=True)
            model.eval()
            save_card(card, tmp_model)
            backend = OnnxRuntimeBackend(tmp_model, card, providers=['CPUExecutionProvider'])
            with torch.no_grad():
                lab = [float(np.mean(backend.infer(b) != model(torch.from_numpy(b)).argmax(1)
                                     .numpy())) for b in batches]
            report['labels_output_mismatch'] = max(lab)
            if max(lab) > max_label_mismatch:
                raise ExportMismatch(f'labels graph disagrees with PyTorch on {max(lab):.2e} '
                                     f'of the pixels; nothing written')
        card.extra = {**card.extra, 'export_check': report}
        os.replace(tmp_model, out_path)
        save_card(card, out_path)
    return report


def check_frames_apart(alone: list[tuple[float, float]], rtol: float, max_label_mismatch: float,
                       card: ModelCard) -> None:
    """Raise ExportMismatch if a frame's output depends on the other frames of its batch."""
    err, lab = max(e for e, _ in alone), max(m for _, m in alone)
    if err > rtol or lab > max_label_mismatch:
        raise ExportMismatch(f'with a batch of {card.batch} a frame\'s output depends on the '
                             f'other frames (relative error {err:.2e}, label mismatch '
                             f'{lab:.2e}; reduction {card.reduction.get("policy", "none")}): '
                             f'export it with --batch 1; nothing written')


def export_checkpoint(checkpoint: str | os.PathLike, out_path: str | os.PathLike,
                      frames: Iterable[np.ndarray], command: str = '', name: Optional[str] = None,
                      opset: int = 17, metrics: Optional[dict] = None,
                      output: str = 'labels', reduction: Optional[dict] = None,
                      img_size: Optional[tuple[int, int]] = None, batch: int = 1) -> dict:
    """Export a training checkpoint (config.yaml beside it) with its model card.

    ``reduction`` (``{'policy': ..., **budget}``) replaces the checkpoint's own reduction;
    ``img_size`` exports for another input size (position embeddings resampled); ``batch``:
    the graph's static batch (frames of several cameras in one call).
    """
    from vit_seg_train.checkpoint import load_model
    from vit_seg_train.config import card_from_config
    from vit_seg_train.reduction.wiring import attach_reduction

    model, cfg = load_model(checkpoint, img_size=img_size)
    if reduction is not None:
        attach_reduction(model, reduction, tuple(cfg['model']['img_size']))
    card = card_from_config(cfg, name or Path(out_path).stem, command=command)
    card.reduction = getattr(model, 'reduction_card', {'policy': 'none'})
    if metrics:
        card.metrics = metrics
    return export_onnx(model, card, out_path, frames, opset=opset, output=output, batch=batch)
