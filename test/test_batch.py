"""A static batch of N frames: export, quantize and the pipeline that fills it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vit_seg_node.core.card import load_card
from vit_seg_node.pipeline import SegmentationPipeline
from vit_seg_optimize.export import card_batches, export_onnx, ExportMismatch, graph_problems


def graph_batch(path) -> int:
    """Return the static batch dimension of the graph's input."""
    from vit_seg_optimize.onnx_io import load_onnx

    return load_onnx(path, weights=False).graph.input[0].type.tensor_type.shape.dim[0].dim_value


def test_card_batches_stack_frames_and_fill_the_last_batch_from_the_start():
    ones = [np.full((1, 3, 2, 2), i, np.float32) for i in range(3)]
    out = card_batches(ones, 2)
    assert [b.shape for b in out] == [(2, 3, 2, 2)] * 2
    assert [b[:, 0, 0, 0].tolist() for b in out] == [[0, 1], [2, 0]]
    assert card_batches(ones, 1) == ones


def test_neighbour_merge_exports_with_a_static_batch_of_two(tiny_neighbor, frames, tmp_path):
    model, card = tiny_neighbor
    out = tmp_path / 'nb2.onnx'
    rep = export_onnx(model, card.__class__(**vars(card)), out, frames[:3], batch=2)
    assert graph_problems(out) == [] and graph_batch(out) == 2
    assert load_card(out).batch == 2 and load_card(out).reduction['policy'] == 'neighbor'
    assert rep['batch'] == 2 and rep['max_relative_error'] < 1e-4
    assert rep['alone_max_relative_error'] < 1e-4


class MixesFrames(torch.nn.Module):
    """A segmenter whose frames influence each other (each frame sees the batch's mean)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x + x.mean(0, keepdim=True))


def test_export_refuses_a_batch_whose_frames_mix_with_one_line(tiny_neighbor, frames,
                                                               tmp_path):
    model, card = tiny_neighbor
    out = tmp_path / 'mix.onnx'
    with pytest.raises(ExportMismatch) as err:
        export_onnx(MixesFrames(model).eval(), card.__class__(**vars(card)), out, frames[:2],
                    batch=2)
    assert 'depends on the other frames' in str(err.value) and '\n' not in str(err.value)
    assert not out.exists()
    export_onnx(MixesFrames(model).eval(), card.__class__(**vars(card)), out, frames[:1],
                batch=1)           # alone in its batch, the same model exports
    assert out.exists()


@pytest.mark.parametrize('form', ['dynamic', 'qdq'])
def test_quantize_keeps_the_batch(tiny_model_b2, camvid_mini, tmp_path, form):
    from vit_seg_node.cli import main

    out = tmp_path / f'{form}.onnx'
    args = ['quantize', '--model', str(tiny_model_b2), '--out', str(out), '--format', form]
    if form == 'qdq':
        args += ['--calib', str(camvid_mini), '--split', 'train', '--num-calib', '3']
    assert main(args) == 0
    assert load_card(out).batch == 2 and graph_batch(out) == 2
    pipe = SegmentationPipeline(out, threads=1)
    assert pipe.backend.infer(pipe._preprocess.batch(1)).shape[0] == 2


def test_a_frame_has_the_same_labels_alone_in_the_batch_or_beside_another(
        tiny_model_b2, frames):
    pipe = SegmentationPipeline(tiny_model_b2, threads=1)
    small = frames[1][:200, :300].copy()        # another size: its own geometry
    alone = [pipe(f) for f in (frames[0], small)]
    both = pipe.segment([frames[0], small])
    swapped = pipe.segment([small, frames[0]])
    assert len(both) == 2 and both[1].labels.shape == small.shape[:2]
    assert np.array_equal(both[0].labels, alone[0].labels)
    assert np.array_equal(both[1].labels, alone[1].labels)
    assert np.array_equal(swapped[1].labels, alone[0].labels)
    assert not np.array_equal(alone[0].labels[:200, :300], alone[1].labels)  # not a blank test
    assert both[0].infer_ms == both[1].infer_ms and min(s.pre_ms for s in both) > 0
    with pytest.raises(ValueError, match='3 images for a model with a batch of 2'):
        pipe.segment([frames[0]] * 3)


def test_batch_of_one_models_segment_through_the_same_method(tiny_model, frames):
    pipe = SegmentationPipeline(tiny_model, threads=1)
    (seg,) = pipe.segment([frames[0]])
    assert np.array_equal(seg.labels, pipe(frames[0]).labels)
