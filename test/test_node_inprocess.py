"""The node class in this process: parameters, cache, one frame end to end, startup errors."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from conftest import ros_domain
from ros_utils import image_msg, mask_of, wait_for
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.pipeline import SegmentationPipeline
from vit_seg_node.ros.node import SegmentationNode
from vit_seg_node.ros.params import PARAMETERS
from vit_seg_node.ros.spin import StartupError

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
    probe = rclpy.create_node('probe', context=ros_context)
    ex = SingleThreadedExecutor(context=ros_context)
    ex.add_node(node)
    ex.add_node(probe)
    spinning = threading.Event()
    spinning.set()

    def spin():
        while spinning.is_set():
            ex.spin_once(timeout_sec=0.02)
    th = threading.Thread(target=spin, daemon=True)
    th.start()
    try:
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
    finally:
        spinning.clear()
        th.join(2)
        node.stop()
        node.destroy_node()
        probe.destroy_node()


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
