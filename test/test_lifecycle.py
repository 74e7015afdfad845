"""The managed node (vit_seg_lifecycle_node) in its own process, driven over Fast DDS.

The standard lifecycle services are called as a lifecycle manager calls them: ``change_state``
by transition label, ``get_state``, ``get_available_transitions``.
"""

from __future__ import annotations

import time

import pytest
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetAvailableTransitions, GetState
from sensor_msgs.msg import Image

from conftest import ros_domain
from ros_utils import image_msg, mask_of, Probe, wait_for
from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.eval.harness import NodeProcess, reliable, reliable_overrides
from vit_seg_node.pipeline import SegmentationPipeline

DOMAIN = ros_domain(41)
MODULE = 'vit_seg_node.ros.lifecycle'


@pytest.fixture()
def probe():
    p = Probe(DOMAIN, 'lifecycle_probe')
    yield p
    p.close()


class Manager:
    """The client side of a lifecycle manager for /vit_seg_node."""

    def __init__(self, probe: Probe) -> None:
        node = probe.node
        self.change = node.create_client(ChangeState, '/vit_seg_node/change_state')
        self.get = node.create_client(GetState, '/vit_seg_node/get_state')
        self.available = node.create_client(GetAvailableTransitions,
                                            '/vit_seg_node/get_available_transitions')
        for c in (self.change, self.get, self.available):
            assert c.wait_for_service(20), c.srv_name

    @staticmethod
    def _call(client, request, timeout: float = 60.0):
        fut = client.call_async(request)
        assert wait_for(fut.done, timeout), f'{client.srv_name} did not answer'
        return fut.result()

    def transition(self, label: str) -> bool:
        req = ChangeState.Request(transition=Transition(label=label))
        return self._call(self.change, req).success

    def state(self) -> str:
        return self._call(self.get, GetState.Request()).current_state.label

    def transitions(self) -> set[str]:
        res = self._call(self.available, GetAvailableTransitions.Request())
        return {t.transition.label for t in res.available_transitions}


def lifecycle_node(probe: Probe, params: dict) -> NodeProcess:
    node = NodeProcess(DOMAIN, params, module=MODULE)
    node.wait_ready(probe, timeout=90)      # diagnostics come in every state
    return node


def answered(pub, masks, msg, timeout: float) -> bool:
    """Publish ``msg`` a few times; return whether a mask arrived within ``timeout``."""
    n = len(masks)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish(msg)
        if wait_for(lambda: len(masks) > n, 1.0):
            return True
    return False


@pytest.mark.parametrize('executor', ['single', 'events'])
def test_transitions_over_dds_take_load_stop_and_free(tiny_model, camvid_mini, probe, executor):
    """Every transition, as a lifecycle manager calls it, under both executors."""
    rgb = SegmentationDataset(camvid_mini, 'val', cache=False).load(0)[0]
    expected = SegmentationPipeline(tiny_model, threads=1)(rgb).labels
    masks = probe.collect(Image, '/vit_seg_node/class_mask', reliable())
    pub = probe.publisher(Image, '/image', reliable())
    node = lifecycle_node(probe, {'model_path': tiny_model, 'threads': 1, 'executor': executor,
                                  **reliable_overrides('/image')})
    try:
        m = Manager(probe)
        assert m.state() == 'unconfigured'
        assert m.transitions() == {'configure', 'shutdown'}
        assert probe.last_diagnostics()['lifecycle_state'] == 'unconfigured'
        assert 'model' not in probe.last_diagnostics()
        # a transition the state does not have: refused, one line, the node keeps serving
        assert m.transition('activate') is False
        assert m.state() == 'unconfigured' and node.alive()
        assert sum('transition activate refused in state unconfigured' in s
                   for s in node.lines) == 1

        assert m.transition('configure') is True
        assert m.state() == 'inactive'
        assert m.transitions() == {'activate', 'cleanup', 'shutdown'}
        # inactive: the model is loaded, but no frame is taken
        assert wait_for(lambda: probe.last_diagnostics().get('lifecycle_state') == 'inactive')
        assert probe.last_diagnostics()['model'] == str(tiny_model)
        assert pub.get_subscription_count() == 0
        assert not answered(pub, masks, image_msg(rgb, 1), 2.0)

        assert m.transition('activate') is True and m.state() == 'active'
        assert wait_for(lambda: pub.get_subscription_count() > 0, 20)
        assert answered(pub, masks, image_msg(rgb, 2 * 10 ** 9 + 7, frame_id='cam'), 30)
        out = masks[-1][1]
        assert (out.header.stamp.sec, out.header.stamp.nanosec, out.header.frame_id) == \
            (2, 7, 'cam')
        assert (mask_of(out) == expected).all()
        assert wait_for(lambda: probe.last_diagnostics().get('lifecycle_state') == 'active')

        # deactivate: stops taking frames and publishing; the model stays loaded
        assert m.transition('deactivate') is True and m.state() == 'inactive'
        assert wait_for(lambda: pub.get_subscription_count() == 0, 10)
        assert not answered(pub, masks, image_msg(rgb, 3), 2.0)
        assert wait_for(lambda: probe.last_diagnostics().get('lifecycle_state') == 'inactive')
        assert probe.last_diagnostics()['model'] == str(tiny_model)
        # activate again: immediate, nothing to load
        t = time.monotonic()
        assert m.transition('activate') is True
        assert time.monotonic() - t < 5.0
        assert wait_for(lambda: pub.get_subscription_count() > 0, 20)
        assert answered(pub, masks, image_msg(rgb, 4), 30)

        # cleanup frees the model; configure loads it again
        assert m.transition('deactivate') and m.transition('cleanup')
        assert m.state() == 'unconfigured'
        assert wait_for(lambda: probe.last_diagnostics().get('lifecycle_state') ==
                        'unconfigured')
        assert 'model' not in probe.last_diagnostics()
        assert m.transition('configure') and m.transition('activate')
        assert answered(pub, masks, image_msg(rgb, 5), 30)

        # shutdown from active: finalized, nothing published any more
        assert m.transition('shutdown') is True
        assert m.state() == 'finalized'
        assert not answered(pub, masks, image_msg(rgb, 6), 2.0)
        assert node.alive()
        assert not any('Traceback' in s for s in node.lines)
    finally:
        node.stop()


def test_a_model_that_fails_in_configure_is_one_line_and_leaves_it_unconfigured(
        tmp_path, probe):
    bad = tmp_path / 'broken.onnx'
    bad.write_bytes(b'not an onnx model')
    node = lifecycle_node(probe, {'model_path': bad, 'threads': 1})
    try:
        m = Manager(probe)
        assert m.transition('configure') is False
        assert m.state() == 'unconfigured'
        failed = [s for s in node.lines if 'configure failed' in s]
        assert len(failed) == 1 and 'broken' in failed[0], node.lines
        assert not any('Traceback' in s for s in node.lines)
        assert m.transition('configure') is False        # again: the same, still serving
        assert m.state() == 'unconfigured' and node.alive()
        assert m.transition('shutdown') is True and m.state() == 'finalized'
    finally:
        node.stop()
