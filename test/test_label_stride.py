"""Labels at 1/stride of the input: the graph arg-maxes below full size, the host upsamples."""

import subprocess
import sys

import numpy as np
import onnx
from onnx import helper, numpy_helper, TensorProto
import pytest

from vit_seg_node.backends.base import BackendError
from vit_seg_node.core.card import card_path_for, check_card, load_card, ModelCardError, \
    save_card
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.processing import fit_geometry, gather_blocks, restore_labels
from vit_seg_node.pipeline import SegmentationPipeline
from vit_seg_node.ros.node import check_rungs
from vit_seg_optimize.fold_input import fold_input
from vit_seg_optimize.label_stride import label_stride


@pytest.fixture(scope='module')
def strided(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp('strided') / 'tiny_s2.onnx'
    label_stride(tiny_model, out, 2, command='pytest')
    return out


def test_the_card_says_the_stride_and_drops_the_old_scores(tiny_model, tmp_path):
    scored = tmp_path / 'scored.onnx'
    scored.write_bytes(tiny_model.read_bytes())
    card = load_card(tiny_model)
    card.metrics = {'miou': 0.5}
    save_card(card, scored)
    out = tmp_path / 'scored_s2.onnx'
    label_stride(scored, out, 2)
    new = load_card(out)
    assert new.output_stride == 2 and new.metrics == {}
    assert new.extra['stride_check']['label_agreement'] >= 0.95
    assert load_card(scored).output_stride == 1 and 'stride' not in \
        card_path_for(scored).read_text().split('output:')[1].split('classes:')[0]


@pytest.mark.parametrize('resize', ['stretch', 'letterbox', 'crop'])
def test_labels_come_back_at_the_frame_size_and_mostly_as_before(tiny_model, strided, frames,
                                                                 resize):
    a = SegmentationPipeline(tiny_model, threads=1, resize=resize)
    b = SegmentationPipeline(strided, threads=1, resize=resize)
    card = b.card
    for f in frames:
        la, lb = a(f).labels, b(f).labels
        assert lb.shape == la.shape == f.shape[:2]
        assert np.mean(la == lb) > 0.9
        raw = b(f, at_source=False).labels
        assert raw.shape == (card.input_height // 2, card.input_width // 2)


def test_a_strided_model_folds_and_a_folded_one_takes_a_stride(tiny_model, strided, frames,
                                                               tmp_path):
    both = tmp_path / 'u8_s2.onnx'
    fold_input(strided, both)
    card = load_card(both)
    assert (card.input_dtype, card.output_stride) == ('uint8', 2)
    other = tmp_path / 's2_u8.onnx'
    fold_input(tiny_model, tmp_path / 'u8.onnx')
    label_stride(tmp_path / 'u8.onnx', other, 2)
    labels = SegmentationPipeline(strided, threads=1)(frames[0]).labels
    for path in (both, other):
        got = SegmentationPipeline(path, threads=1)(frames[0]).labels
        np.testing.assert_array_equal(labels, got)


def test_restore_labels_from_a_smaller_map_places_each_block():
    small = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8)
    full = np.repeat(np.repeat(small, 4, 0), 4, 1)          # the same map at the input size
    for src, mode in (((30, 40), 'stretch'), ((20, 40), 'letterbox'), ((50, 20), 'letterbox'),
                      ((30, 80), 'crop')):
        geo = fit_geometry(*src, 24, 32, mode)
        got, ref = restore_labels(small, geo, 4), restore_labels(full, geo)
        assert got.shape == ref.shape == src
        np.testing.assert_array_equal(got, ref)


def test_a_letterbox_region_off_the_blocks_is_read_pixel_by_pixel():
    small = np.arange(6 * 8, dtype=np.uint8).reshape(6, 8)
    geo = fit_geometry(20, 40, 24, 32, 'letterbox')          # rows 4..19 of 24 hold the image
    assert geo.roi == (4, 0, 16, 32)
    got = gather_blocks(small, geo.roi, (20, 40), 4)         # the map's rows: input rows 0-23
    assert got.shape == (20, 40)
    assert sorted(set(got[:, 0])) == [8, 16, 24, 32]          # input rows 4-19: blocks 1-4
    np.testing.assert_array_equal(got[0], small[1].repeat(5))


def test_a_stride_that_does_not_divide_the_input_is_refused(tiny_model):
    doc = load_card(tiny_model).to_dict()
    doc['output']['stride'] = 5
    with pytest.raises(ModelCardError, match='output.stride'):
        check_card(doc)
    doc['output']['stride'] = 0
    with pytest.raises(ModelCardError, match='output.stride'):
        check_card(doc)


def test_a_ladder_of_two_strides_is_refused(tiny_model, strided):
    rungs = [SegmentationPipeline(tiny_model, threads=1), SegmentationPipeline(strided, threads=1)]
    with pytest.raises(UserError, match='output stride'):
        check_rungs(rungs)
    check_rungs(rungs[1:])


def test_a_card_claiming_a_stride_its_graph_lacks_fails_at_load(tiny_model, tmp_path):
    liar = tmp_path / 'liar.onnx'
    liar.write_bytes(tiny_model.read_bytes())
    card = load_card(tiny_model)
    card.output_stride = 2
    save_card(card, liar)
    with pytest.raises(BackendError, match='output.stride'):
        SegmentationPipeline(liar, threads=1)


def no_resize_model(path, card):
    """Write a graph that arg-maxes a 1x1 convolution at full size (no Resize before it)."""
    h, w, k = card.input_height, card.input_width, card.num_classes
    weight = numpy_helper.from_array(np.ones((k, 3, 1, 1), np.float32), 'w')
    graph = helper.make_graph(
        [helper.make_node('Conv', ['image', 'w'], ['logits']),
         helper.make_node('ArgMax', ['logits'], ['idx'], axis=1, keepdims=0),
         helper.make_node('Cast', ['idx'], ['labels'], to=TensorProto.UINT8)],
        'no_resize', [helper.make_tensor_value_info('image', TensorProto.FLOAT, [1, 3, h, w])],
        [helper.make_tensor_value_info('labels', TensorProto.UINT8, [1, h, w])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    card.output_name, card.output_kind = 'labels', 'labels'
    save_card(card, path)


def test_cli_bad_requests_get_one_line_and_exit_2(tiny_model, strided, tmp_path):
    plain = tmp_path / 'plain.onnx'
    no_resize_model(plain, load_card(tiny_model))
    card = load_card(tiny_model)
    cases = [
        (['--model', str(tiny_model), '--stride', '3'], 'divide the input'),
        (['--model', str(tiny_model), '--stride', '1'], 'stride'),
        (['--model', str(strided)], 'already gives labels'),
        (['--model', str(plain)], 'does not end in Resize'),
        (['--model', str(tiny_model), '--min-agreement', '1.5'], 'min-agreement'),
    ]
    assert card.input_height % 3 or card.input_width % 3
    for args, message in cases:
        out = tmp_path / 'out.onnx'
        r = subprocess.run([sys.executable, '-m', 'vit_seg_node.cli', 'label-stride', *args,
                            '--out', str(out)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, (args, r.stderr)
        assert message in r.stderr and 'Traceback' not in r.stderr
        assert len(r.stderr.strip().splitlines()) <= 2, r.stderr
        assert not out.exists()


def test_the_node_publishes_masks_of_a_strided_model_at_the_camera_size(strided, frames):
    """Over DDS: a stride-2 graph's masks come back at each frame's size, as the pipeline's."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from conftest import ros_domain
    from ros_utils import image_msg, mask_of, node_process, Probe, wait_for
    from vit_seg_node.eval.harness import reliable_overrides

    domain = ros_domain(53)
    reliable = QoSProfile(reliability=ReliabilityPolicy.RELIABLE,
                          history=HistoryPolicy.KEEP_LAST, depth=10)
    pipe = SegmentationPipeline(strided, threads=1)
    probe = Probe(domain)
    try:
        masks = probe.collect(Image, '/vit_seg_node/class_mask', reliable)
        pub = probe.publisher(Image, '/image', reliable)
        with node_process(probe, domain, {'model_path': strided, 'threads': 1,
                                          **reliable_overrides('/image')}):
            assert wait_for(lambda: pub.get_subscription_count() > 0, 20)
            for i, rgb in enumerate(frames[:2]):
                n = len(masks)
                msg = image_msg(rgb, stamp_ns=1_000_000_000 * (i + 1), frame_id='cam')
                for _ in range(5):       # best effort until discovery settles: resend
                    pub.publish(msg)
                    if wait_for(lambda: len(masks) > n, 3.0):
                        break
                out = masks[n][1]
                assert (out.height, out.width) == rgb.shape[:2]
                np.testing.assert_array_equal(mask_of(out), pipe(rgb).labels)
    finally:
        probe.close()


def test_a_batch_of_two_and_a_labels_graph_take_a_stride(tiny_model_b2, frames, tmp_path):
    from conftest import export_tiny

    labels = export_tiny(tmp_path / 'labels.onnx', output='labels')
    assert load_card(labels).output_kind == 'labels'
    for src in (tiny_model_b2, labels):
        out = tmp_path / f'{src.stem}_s2.onnx'
        label_stride(src, out, 2)
        a, b = SegmentationPipeline(src, threads=1), SegmentationPipeline(out, threads=1)
        assert b.card.output_stride == 2 and b.card.batch == a.card.batch
        got = b.segment(frames[:b.card.batch])
        for f, seg in zip(frames, got):
            assert seg.labels.shape == f.shape[:2]
            assert np.mean(seg.labels == a(f).labels) > 0.9


def test_a_stride_that_changes_too_many_labels_is_not_written(tiny_model, tmp_path):
    out = tmp_path / 'strict.onnx'
    with pytest.raises(UserError, match='not written'):
        label_stride(tiny_model, out, 8, min_agreement=1.0)
    assert not out.exists() and not card_path_for(out).exists()
    assert list(tmp_path.iterdir()) == []


def test_camera_info_of_a_mask_at_the_network_resolution_follows_the_stride():
    from sensor_msgs.msg import CameraInfo
    from std_msgs.msg import Header

    from vit_seg_node.ros.node import scaled_camera_info

    info = CameraInfo(width=480, height=360)
    info.k = [400.0, 0.0, 240.0, 0.0, 400.0, 180.0, 0.0, 0.0, 1.0]
    info.p = [400.0, 0.0, 240.0, 0.0, 0.0, 400.0, 180.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    geo = fit_geometry(360, 480, 352, 480, 'stretch')
    full = scaled_camera_info(info, geo, 352, 480, Header())
    half = scaled_camera_info(info, geo, 176, 240, Header(), stride=2)
    assert (half.width, half.height) == (240, 176)
    np.testing.assert_allclose([half.k[0], half.k[2], half.k[4], half.k[5]],
                               [full.k[0] / 2, full.k[2] / 2, full.k[4] / 2, full.k[5] / 2])
