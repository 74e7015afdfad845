"""Helpers for tests that talk to a real vit_seg_node process over Fast DDS."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator, Optional

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

NODE_EXE = str(Path(sys.executable).parent / 'vit_seg_node')


@contextlib.contextmanager
def node_process(domain: int, params: dict, args: Optional[list[str]] = None,
                 log: Optional[Path] = None, ready_timeout: float = 90.0) -> Iterator:
    """Start vit_seg_node in its own process on ``domain``; stop it (SIGINT, then kill) after."""
    cmd = [NODE_EXE, '--ros-args']
    for k, v in params.items():
        cmd += ['-p', f'{k}:={v}']
    cmd += args or []
    env = {**os.environ, 'ROS_DOMAIN_ID': str(domain), 'PYTHONUNBUFFERED': '1',
           'RCUTILS_LOGGING_BUFFERED_STREAM': '0'}
    lines: list[str] = []
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)

    def reader() -> None:
        for line in proc.stdout:
            lines.append(line)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    proc.lines = lines
    try:
        deadline = time.time() + ready_timeout
        while time.time() < deadline and proc.poll() is None:
            if any('ready:' in ln for ln in lines):
                break
            time.sleep(0.05)
        else:
            raise RuntimeError('node did not start:\n' + ''.join(lines))
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        t.join(2)
        if log is not None:
            log.write_text(''.join(lines))


class Probe:
    """A test-side rclpy node in its own context, spun on a background thread."""

    def __init__(self, domain: int, name: str = 'probe') -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down under us
                return

    def collect(self, msg_type, topic: str, qos=qos_profile_sensor_data) -> list:
        """Subscribe and return the list that received messages are appended to."""
        received: list = []

        def cb(msg) -> None:
            received.append((time.time(), msg))
        self.node.create_subscription(msg_type, topic, cb, qos)
        return received

    def publisher(self, msg_type, topic: str, qos=qos_profile_sensor_data):
        """Create a publisher."""
        return self.node.create_publisher(msg_type, topic, qos)

    def close(self) -> None:
        """Shut the context down and join the spinner."""
        self.executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        self.context.try_shutdown()
        self._thread.join(2)


def wait_for(pred: Callable[[], bool], timeout: float = 30.0, step: float = 0.02) -> bool:
    """Poll ``pred`` until true or ``timeout``; return its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(step)
    return pred()


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
