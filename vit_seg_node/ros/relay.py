"""A node with ``vit_seg_node``'s topics and threading but no model: the floor of its overhead.

It subscribes to ``image`` (sensor-data QoS, overridable), hands each frame to a worker thread as
the real node does, and publishes an all-zero ``mono8`` mask of the frame's size on
``~/class_mask``; ``/diagnostics`` once a second. ``vit-seg bench-node`` times it beside the real
node, so the report separates what any Python node pays for DDS transport, the executor and the
hand-off from what segmentation adds (conversion, pre/post-processing, inference).

    python -m vit_seg_node.ros.relay --ros-args -r image:=/camera/image_raw
"""

from __future__ import annotations

import sys
from typing import Any, Optional

import numpy as np

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image

from vit_seg_node.core.handoff import LatestFrameWorker
from vit_seg_node.ros.convert import FrameError, from_serialized, mask_message
from vit_seg_node.ros.params import descriptor, PARAMETERS
from vit_seg_node.ros.spin import run_node

NODE_NAME = 'vit_seg_node'   # the real node's name: the same ~/ topics and diagnostics prefix


class RelayNode(Node):
    """Answer every frame with an empty mask of its size, from a worker thread."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        for name in ('executor', 'zero_copy'):
            self.declare_parameter(name, PARAMETERS[name].default,
                                   descriptor(name, PARAMETERS[name]))
        self._zero_copy = self.get_parameter('zero_copy').value
        overrides = QoSOverridingOptions.with_default_policies()
        self.pub_mask = self.create_publisher(Image, '~/class_mask', qos_profile_sensor_data,
                                              qos_overriding_options=overrides)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(Image, 'image', self._on_frame, qos_profile_sensor_data,
                                 qos_overriding_options=overrides, raw=self._zero_copy)
        self.create_timer(1.0, self._diagnostics)
        self._worker = LatestFrameWorker(self._answer, 'relay_worker').start()

    def _on_frame(self, msg: Any) -> None:
        self._worker.offer(msg)

    def _answer(self, msg: Any) -> None:
        """Publish the empty mask the node would, through the node's own conversions."""
        if isinstance(msg, bytes):
            try:
                msg = from_serialized(msg, Image)
            except FrameError:
                return
        labels = np.zeros((int(msg.height), int(msg.width)), np.uint8)
        self.pub_mask.publish(mask_message(labels, msg.header, self._zero_copy))

    def _diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [DiagnosticStatus(name=f'{self.get_fully_qualified_name()}: relay',
                                       message='relay')]
        self.pub_diag.publish(arr)

    def stop(self) -> None:
        """End the worker thread."""
        self._worker.stop()


def main(args: Optional[list[str]] = None) -> int:
    """Spin the relay until shutdown."""
    return run_node(RelayNode, args)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
