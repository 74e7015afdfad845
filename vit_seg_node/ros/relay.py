"""A node with ``vit_seg_node``'s topics and threading but no model: the floor of its overhead.

It subscribes to ``image`` (sensor-data QoS, overridable), hands each frame to a worker thread as
the real node does, and publishes an all-zero ``mono8`` mask of the frame's size on
``~/class_mask``; ``/diagnostics`` once a second. ``vit-seg bench-node`` times it beside the real
node, so the report separates what any Python node pays for DDS transport, the executor and the
hand-off from what segmentation adds (conversion, pre/post-processing, inference).

    python -m vit_seg_node.ros.relay --ros-args -r image:=/camera/image_raw
"""

from __future__ import annotations

import array
import sys
from typing import Any, Optional

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import Image

from vit_seg_node.core.handoff import LatestFrameWorker
from vit_seg_node.ros.params import descriptor, PARAMETERS
from vit_seg_node.ros.spin import run_node

NODE_NAME = 'vit_seg_node'   # the real node's name: the same ~/ topics and diagnostics prefix


class RelayNode(Node):
    """Answer every frame with an empty mask of its size, from a worker thread."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        self.declare_parameter('executor', PARAMETERS['executor'].default,
                               descriptor('executor', PARAMETERS['executor']))
        overrides = QoSOverridingOptions.with_default_policies()
        self.pub_mask = self.create_publisher(Image, '~/class_mask', qos_profile_sensor_data,
                                              qos_overriding_options=overrides)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.create_subscription(Image, 'image', self._on_frame, qos_profile_sensor_data,
                                 qos_overriding_options=overrides)
        self.create_timer(1.0, self._diagnostics)
        self._worker = LatestFrameWorker(self._answer, 'relay_worker').start()

    def _on_frame(self, msg: Image) -> None:
        self._worker.offer(msg)

    def _answer(self, msg: Image) -> None:
        out = Image(header=msg.header, height=msg.height, width=msg.width,
                    encoding='mono8', step=msg.width)
        # rclpy's own uint8[] type: no per-element check in the setter (convert.byte_payload)
        out.data = array.array('B', bytes(int(msg.width) * int(msg.height)))
        self.pub_mask.publish(out)

    def _diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [DiagnosticStatus(name=f'{NODE_NAME}: relay', message='relay')]
        self.pub_diag.publish(arr)

    def stop(self) -> None:
        """End the worker thread."""
        self._worker.stop()


def main(args: Optional[list[str]] = None) -> int:
    """Spin the relay until shutdown."""
    return run_node(RelayNode, args)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
