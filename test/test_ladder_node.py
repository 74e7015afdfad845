"""The node's ladder: rungs checked against their models at start, a failing rung left.

The node class in this process on an isolated domain, real ONNX Runtime models, frames over DDS.
"""

from __future__ import annotations

import shutil
import threading

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
import yaml

from conftest import ros_domain
from ros_utils import image_msg, wait_for
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.ros.node import SegmentationNode
from vit_seg_node.ros.spin import StartupError

DOMAIN = ros_domain(47)


@pytest.fixture()
def ros_context():
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=DOMAIN)
    yield ctx
    ctx.try_shutdown()


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


def make_node(ctx, **params) -> SegmentationNode:
    return SegmentationNode(context=ctx, parameter_overrides=[
        Parameter(k, value=v) for k, v in params.items()])


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
    probe = rclpy.create_node('ladder_probe', context=ros_context)
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

    def broken(batch):   # the fault injected: rung 1's model fails every frame
        raise RuntimeError('device lost ' + 'x' * 5000)
    try:
        node.rungs[1].backend.infer = broken
        with node._ladder_lock:
            node.ladder.rung = 1           # as if the budget had sent the node down
        got = []
        probe.create_subscription(Image, '/vit_seg_node/class_mask', got.append,
                                  qos_profile_sensor_data)
        pub = probe.create_publisher(Image, '/image', qos_profile_sensor_data)
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
        spinning.clear()
        th.join(2)
        node.stop()
        node.destroy_node()
        probe.destroy_node()
