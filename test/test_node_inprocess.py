"""The node class in this process: parameters, cache, a frame end to end, start-up, ladder."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import rclpy
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
import yaml

from conftest import ros_domain
from ros_utils import image_msg, mask_of, spun_in_process, wait_for
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.eval.harness import Probe
from vit_seg_node.pipeline import SegmentationPipeline
from vit_seg_node.ros.node import SegmentationNode
from vit_seg_node.ros.params import PARAMETERS
from vit_seg_node.ros.spin import spin, StartupError

DOMAIN = ros_domain(21)


@pytest.fixture()
def ros_context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    yield ctx
    ctx.try_shutdown()


def make_node(ctx, **params) -> SegmentationNode:
    return SegmentationNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])


def test_one_frame_end_to_end_and_parameter_cache(ros_context, tiny_model, camvid_mini):
    node = make_node(ros_context, model_path=str(tiny_model), threads=1)
    with spun_in_process(node, ros_context) as probe:
        got = []
        probe.create_subscription(Image, '/vit_seg_node/class_mask', got.append,
                                  qos_profile_sensor_data)
        pub = probe.create_publisher(Image, '/image', qos_profile_sensor_data)
        rgb = SegmentationDataset(camvid_mini, 'val', cache=False).load(0)[0]
        expected = SegmentationPipeline(tiny_model, threads=1)(rgb).labels

        def answer(stamp):
            n = len(got)
            for _ in range(50):
                pub.publish(image_msg(rgb, stamp, frame_id='cam'))
                if wait_for(lambda: len(got) > n, 0.5):
                    return got[n]
            raise AssertionError('no mask')
        m = answer(7 * 10 ** 9 + 5)
        assert (m.header.stamp.sec, m.header.stamp.nanosec, m.header.frame_id) == (7, 5, 'cam')
        assert np.array_equal(mask_of(m), expected)
        # a rejected value leaves the cache as it was; an accepted one reaches the frame path
        res = node.set_parameters([Parameter('overlay_alpha', value=1.5)])[0]
        assert not res.successful and 'overlay_alpha' in res.reason
        assert node.params['overlay_alpha'] == 0.5
        assert node.set_parameters([Parameter('output_resolution', value='network')])[0].successful
        assert node.params['output_resolution'] == 'network'
        m = answer(8 * 10 ** 9)
        assert (m.height, m.width) == (64, 96)
        # stamps of 7 s and 8 s after 1970 are not on the node's clock: no end-to-end latency
        assert node.cameras[0].counters['stamp_off_clock'] >= 2
        assert node.cameras[0].lat['end_to_end'].percentiles() is None
        answer(node.get_clock().now().nanoseconds)
        assert wait_for(lambda: node.cameras[0].lat['end_to_end'].percentiles() is not None, 5)
        assert 0 < node.cameras[0].lat['end_to_end'].percentiles()['p50'] < 60_000
        # the descriptors carry the ranges (what `ros2 param describe` shows)
        d = node.describe_parameters(['overlay_alpha', 'threads'])
        assert d[0].floating_point_range[0].to_value == 1.0
        assert d[1].integer_range[0].to_value == PARAMETERS['threads'].high


@pytest.mark.parametrize('params, message', [
    ({'max_fps': 5}, 'max_fps'),                 # an integer where a double is declared
    ({'enable': 'maybe'}, 'enable'),
    ({'threads': 1.5}, 'threads'),
    ({'overlay_alpha': 3.0}, 'overlay_alpha'),   # out of range
    ({'backend': 'nope'}, 'backend'),
    ({'model_path': 'm.xyz'}, 'model_path'),
])
def test_invalid_startup_parameters_are_one_clear_error(ros_context, params, message):
    with pytest.raises(StartupError, match=message):
        make_node(ros_context, **params)


# ------------------------------------------------------------------ the ladder
def ladder(tmp_path, tiny_model, *rungs: str, kinds: dict | None = None):
    """Write copies of the tiny model named ``rungs`` (card kinds changed) and their ladder."""
    for name in set(rungs):
        shutil.copy(tiny_model, tmp_path / f'{name}.onnx')
        doc = yaml.safe_load(tiny_model.with_suffix('.card.yaml').read_text())
        doc['output']['kind'] = (kinds or {}).get(name, doc['output']['kind'])
        (tmp_path / f'{name}.card.yaml').write_text(yaml.safe_dump(doc))
    path = tmp_path / 'x.ladder.yaml'
    path.write_text(yaml.safe_dump({'rungs': [f'{r}.onnx' for r in rungs]}))
    return path


def test_a_rung_whose_card_does_not_fit_its_model_is_refused_at_start(
        ros_context, tiny_model, tmp_path):
    path = ladder(tmp_path, tiny_model, 'good', 'bad', kinds={'bad': 'labels'})
    with pytest.raises(StartupError, match=r'bad\.onnx.*output\.kind'):
        make_node(ros_context, model_ladder=str(path), latency_budget_ms=0.001, threads=1)


def test_a_rung_that_fails_at_run_time_is_left_and_reported(ros_context, tiny_model, camvid_mini,
                                                            tmp_path):
    path = ladder(tmp_path, tiny_model, 'a', 'b', 'a')     # 'a' twice: loaded once
    node = make_node(ros_context, model_ladder=str(path), latency_budget_ms=10000.0, threads=1)
    assert len(node.rungs) == 2
    spinner = threading.Thread(target=spin, args=(node,), daemon=True)   # the node's own loop
    spinner.start()
    probe = Probe(DOMAIN, 'ladder_probe')

    def broken(batch):   # the fault injected: rung 1's model fails every frame
        raise RuntimeError('device lost ' + 'x' * 5000)
    try:
        node.rungs[1].backend.infer = broken
        with node._ladder_lock:
            node.ladder.rung = 1           # as if the budget had sent the node down
        got = probe.collect(Image, '/vit_seg_node/class_mask', qos_profile_sensor_data)
        pub = probe.publisher(Image, '/image', qos_profile_sensor_data)
        rgb = SegmentationDataset(camvid_mini, 'val', cache=False).load(0)[0]
        for k in range(100):
            pub.publish(image_msg(rgb, 10 ** 9 + k))
            if wait_for(lambda: got, 0.3):
                break
        assert got, 'no mask after the failing rung'
        assert node.ladder.rung == 0 and set(node.ladder.failed) == {1}
        values = {kv.key: kv.value for kv in node.diagnostic_statuses()[0].values}
        assert values['ladder_rungs_failed'] == '1'
        assert values['rung1_failed'].startswith('RuntimeError: ') and \
            len(values['rung1_failed']) < 200
        assert 'rung0_failed' not in values
        for k in range(20):                # a generous budget never goes back to rung 1
            pub.publish(image_msg(rgb, 2 * 10 ** 9 + k))
            wait_for(lambda: False, 0.05)
        assert node.ladder.rung == 0
    finally:
        probe.close()
        ros_context.try_shutdown()
        spinner.join(5)
        node.stop()
        node.destroy_node()
