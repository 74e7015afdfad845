"""The normalisation folded into the graph: uint8 frames in, the same labels out, on every path."""

import subprocess
import sys

import numpy as np
import pytest

from vit_seg_node.backends.base import BackendError, create_backend
from vit_seg_node.backends.tensorrt_backend import check_io, TensorSpec
from vit_seg_node.core.card import card_path_for, check_card, load_card, ModelCardError, \
    save_card
from vit_seg_node.core.processing import blank_input, Preprocessor, resize_to_input
from vit_seg_node.pipeline import SegmentationPipeline
from vit_seg_optimize.fold_input import fold_input


@pytest.fixture(scope='module')
def folded(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp('folded') / 'tiny_u8.onnx'
    fold_input(tiny_model, out, command='pytest')
    return out


@pytest.mark.parametrize('resize', ['stretch', 'letterbox', 'crop'])
def test_folded_model_labels_real_frames_as_the_original(tiny_model, folded, frames, resize):
    card = load_card(folded)
    assert (card.input_dtype, card.input_layout, card.batch) == ('uint8', 'NHWC', 1)
    assert card.extra['fold_check']['max_label_mismatch'] == 0.0
    a = SegmentationPipeline(tiny_model, threads=1, resize=resize)
    b = SegmentationPipeline(folded, threads=1, resize=resize)
    for f in frames:
        la, lb = a(f).labels, b(f).labels
        assert la.shape == f.shape[:2]
        np.testing.assert_array_equal(la, lb)


def test_preprocessing_of_a_folded_model_is_the_resize_alone(folded, frames):
    card = load_card(folded)
    batch, geo = Preprocessor(card)(frames[0])
    assert batch.dtype == np.uint8 and batch.shape == (1, card.input_height, card.input_width, 3)
    np.testing.assert_array_equal(batch[0], resize_to_input(frames[0], card)[0])
    x = blank_input(card)
    assert x.dtype == np.uint8 and x.shape == batch.shape


def test_every_precision_form_folds(tiny_model, camvid_mini, tmp_path, frames):
    from vit_seg_node.core.datasets import spread_frames
    from vit_seg_optimize.export import frames_to_batches
    from vit_seg_optimize.quant import write_quantized

    card = load_card(tiny_model)
    calib = frames_to_batches(spread_frames(camvid_mini, 'val', 2), card)
    for form in ('dynamic', 'fp16', 'qdq'):
        q = tmp_path / f'{form}.onnx'
        write_quantized(tiny_model, q, form, {'default': 'int8'}, calib, 'val')
        out = tmp_path / f'{form}_u8.onnx'
        fold_input(q, out)
        assert load_card(out).precision == load_card(q).precision
        # the same arithmetic up to float reassociation; INT8 kernels without VNNI (AVX2) round
        # the reordered sums differently, which flips a few near-tie pixels of a tiny model
        agree = np.mean(SegmentationPipeline(q, threads=1)(frames[0]).labels
                        == SegmentationPipeline(out, threads=1)(frames[0]).labels)
        assert agree >= 0.99, (form, agree)


def test_a_card_that_does_not_say_what_the_graph_takes_is_refused(tiny_model, folded, tmp_path):
    # the folded graph under the float card, and the float graph under the folded card
    for graph, card_of in ((folded, tiny_model), (tiny_model, folded)):
        target = tmp_path / graph.name
        target.write_bytes(graph.read_bytes())
        save_card(load_card(card_of), target)
        with pytest.raises(BackendError, match='not what its card says'):
            create_backend(target, load_card(target))


@pytest.mark.parametrize('change, message', [
    ({'layout': 'NHWC', 'dtype': 'float32'}, 'not a format'),
    ({'layout': 'NCHW', 'dtype': 'uint8'}, 'not a format'),
    ({'dtype': 'int8'}, 'input.dtype'),
    ({'batch': 0}, 'input.batch'),
    ({'batch': 17}, 'input.batch'),
    ({'batch': 'two'}, 'input.batch'),
])
def test_input_format_and_batch_are_checked(tiny_model, change, message):
    doc = load_card(tiny_model).to_dict()
    doc['input'].update(change)
    with pytest.raises(ModelCardError, match=message):
        check_card(doc)


def test_tensorrt_engine_io_follows_the_card_format(folded):
    card = load_card(folded)
    ok = [TensorSpec('image', True, (1, 64, 96, 3), 'uint8'),
          TensorSpec(card.output_name, False, (1, 11, 64, 96), 'float32')]
    assert check_io(ok, card)[0].dtype == 'uint8'
    planes = [TensorSpec('image', True, (1, 3, 64, 96), 'uint8'), ok[1]]
    with pytest.raises(BackendError, match='does not match the card'):
        check_io(planes, card)
    floats = [TensorSpec('image', True, (1, 64, 96, 3), 'float32'), ok[1]]
    with pytest.raises(BackendError, match='dtype float32'):
        check_io(floats, card)


def test_cli_folds_once_and_refuses_with_one_line(tiny_model, folded, tmp_path):
    cli = [sys.executable, '-m', 'vit_seg_node.cli', 'fold-input']
    out = tmp_path / 'm.onnx'
    r = subprocess.run(cli + ['--model', str(tiny_model), '--out', str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.is_file() and card_path_for(out).is_file() and 'uint8 NHWC' in r.stdout
    for args in (['--model', str(folded), '--out', str(tmp_path / 'again.onnx')],
                 ['--model', str(tiny_model), '--out', str(tiny_model)],
                 ['--model', str(tmp_path / 'none.onnx'), '--out', str(tmp_path / 'x.onnx')]):
        r = subprocess.run(cli + args, capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and 'Traceback' not in r.stderr
    assert not (tmp_path / 'again.onnx').exists() and not (tmp_path / 'x.onnx').exists()


def test_node_serves_a_folded_model_over_dds(tiny_model, folded, camvid_mini):
    """A running node takes the folded model and answers a frame as the float model labels it."""
    import rclpy
    from rclpy.parameter import Parameter
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from conftest import ros_domain
    from ros_utils import image_msg, mask_of, spun_in_process, wait_for
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.ros.node import SegmentationNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=ros_domain(37))
    node = SegmentationNode(context=ctx, parameter_overrides=[
        Parameter('model_path', value=str(folded)), Parameter('threads', value=1)])
    try:
        with spun_in_process(node, ctx) as probe:
            got = []
            probe.create_subscription(Image, '/vit_seg_node/class_mask', got.append,
                                      qos_profile_sensor_data)
            pub = probe.create_publisher(Image, '/image', qos_profile_sensor_data)
            rgb = SegmentationDataset(camvid_mini, 'val', cache=False).load(1)[0]
            for _ in range(50):
                pub.publish(image_msg(rgb, 3 * 10 ** 9, frame_id='cam'))
                if wait_for(lambda: got, 0.5):
                    break
            assert got, 'no mask'
            expected = SegmentationPipeline(tiny_model, threads=1)(rgb).labels
            np.testing.assert_array_equal(mask_of(got[0]), expected)
            assert node.card.bytes_input
    finally:
        ctx.try_shutdown()


def test_timing_and_agreement_tools_take_every_input_form(tiny_model, tiny_model_b2, folded,
                                                          camvid_mini):
    """regimes, profile, agreement and sensitivity run on uint8 and batch-2 models alike."""
    from vit_seg_optimize.agreement import agreement
    from vit_seg_optimize.profile import profile
    from vit_seg_optimize.regimes import run_regimes
    from vit_seg_optimize.sensitivity import sensitivity

    doc = run_regimes([tiny_model, folded, tiny_model_b2], regimes=('hot',), threads=('1',),
                      warmup=1, runs=2)
    assert all(doc['models'][str(m)]['hot/1']['p50'] > 0
               for m in (tiny_model, folded, tiny_model_b2))
    assert profile(str(folded), runs=2, threads=1, warmup=1)['wall_ms'] > 0
    same = agreement(str(tiny_model), [str(folded), str(tiny_model_b2)], str(camvid_mini),
                     limit=2)
    assert same[str(folded)] == 1.0 and same[str(tiny_model_b2)] > 0.99
    from vit_seg_node.core.datasets import spread_frames
    from vit_seg_optimize.export import frames_to_batches

    card = load_card(folded)
    calib = frames_to_batches(spread_frames(camvid_mini, 'val', 1), card)
    assert calib[0].dtype == np.uint8
    sens = sensitivity(folded, card, str(camvid_mini), 'val', limit=1, threads=1, pairs=1,
                       calibration=calib)
    assert sens['groups'] and all(s['noise_ms'] >= 0 for s in sens['groups'].values())
