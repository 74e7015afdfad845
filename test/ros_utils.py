"""Test helpers over the package's own rclpy harness (``vit_seg_node.eval.harness``)."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import numpy as np
from sensor_msgs.msg import Image

from vit_seg_node.eval.harness import node_executable, NodeProcess, Probe, wait_for  # noqa: F401

NODE_EXE = node_executable()


@contextlib.contextmanager
def node_process(probe: Probe, domain: int, params: dict,
                 args: Optional[list[str]] = None) -> Iterator[NodeProcess]:
    """Start vit_seg_node on ``domain``, ready once ``probe`` sees its diagnostics; stop after."""
    node = NodeProcess(domain, params, args)
    try:
        node.wait_ready(probe, timeout=90)
        yield node
    finally:
        node.stop()


def image_msg(rgb: np.ndarray, stamp_ns: int, frame_id: str = 'camera',
              encoding: str = 'rgb8') -> Image:
    """Build a sensor_msgs/Image from an RGB array in the given encoding."""
    import cv2

    conv = {'rgb8': None, 'bgr8': cv2.COLOR_RGB2BGR, 'rgba8': cv2.COLOR_RGB2RGBA,
            'bgra8': cv2.COLOR_RGB2BGRA, 'mono8': cv2.COLOR_RGB2GRAY}[encoding]
    arr = rgb if conv is None else cv2.cvtColor(rgb, conv)
    arr = np.ascontiguousarray(arr)
    m = Image()
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(int(stamp_ns), 10 ** 9)
    m.header.frame_id = frame_id
    m.height, m.width = arr.shape[:2]
    m.encoding = encoding
    m.step = int(arr.strides[0])
    m.data = arr.tobytes()
    return m


def mask_of(msg: Image) -> np.ndarray:
    """Return a mono8 Image as an HxW array."""
    return np.frombuffer(memoryview(msg.data), np.uint8).reshape(msg.height, msg.step)[
        :, :msg.width]


@contextlib.contextmanager
def spun_in_process(node, context) -> Iterator:
    """Spin ``node`` and a probe node on one executor thread; yield the probe; stop all after.

    The node's worker is stopped and both nodes destroyed on exit.
    """
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    probe = rclpy.create_node('probe', context=context)
    ex = SingleThreadedExecutor(context=context)
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
        yield probe
    finally:
        spinning.clear()
        th.join(2)
        node.stop()
        node.destroy_node()
        probe.destroy_node()
