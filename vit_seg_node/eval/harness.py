"""The one rclpy harness of replay, the node-overhead benchmark and the node tests.

``Probe``: a client node in its own rclpy context on a chosen ROS domain, spun on a background
thread. ``NodeProcess``: ``vit_seg_node`` started in its own process on that domain and stopped
afterwards (SIGINT, then kill; also on SIGTERM of the caller, see ``terminate_on_sigterm``).
Readiness is seen over ROS: the node's first ``/diagnostics`` status, which it publishes only once
its model is loaded.
"""

from __future__ import annotations

import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Optional

import rclpy
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

from vit_seg_node.core.cpuload import CpuLoad  # noqa: F401  (part of the harness)
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.lifetime import child_env, terminate_on_sigterm  # noqa: F401

NODE_NAME = 'vit_seg_node'


def reliable(depth: int = 10) -> QoSProfile:
    """Return a reliable keep-last QoS (replay must not lose frames)."""
    return QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                      depth=depth)


def reliable_overrides(image_topic: str, outputs: tuple[str, ...] = ('class_mask',)
                       ) -> dict[str, str]:
    """Return node parameters that make its image subscription and outputs reliable.

    Through rclpy's QoS overrides (the node's topics accept them): ``image_topic`` is the resolved
    name the node subscribes (after remapping), ``outputs`` its ``~/`` publishers.
    """
    params = {f'qos_overrides.{image_topic}.subscription.reliability': 'reliable'}
    for name in outputs:
        params[f'qos_overrides./{NODE_NAME}/{name}.publisher.reliability'] = 'reliable'
    return params


def wait_for(pred: Callable[[], Any], timeout: float = 30.0, step: float = 0.02) -> bool:
    """Poll ``pred`` until it is true or ``timeout`` passes; return its last value as bool."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return bool(pred())


def node_executable() -> str:
    """Return the ``vit_seg_node`` console script beside this interpreter, else the one on PATH."""
    exe = Path(sys.executable).parent / 'vit_seg_node'
    return str(exe) if exe.exists() else 'vit_seg_node'


def node_command(module: str = 'vit_seg_node.ros.node') -> list[str]:
    """Return how to start the node: this interpreter and this installation's code.

    Independent of where the console scripts went (a venv's bin, colcon's lib/<package>,
    ``pip install --target``). ``module``: ``vit_seg_node.ros.relay`` starts the model-free relay.
    """
    return [sys.executable, '-m', module]


class Probe:
    """A client node in its own context on ``domain``, spun on a background thread."""

    def __init__(self, domain: int, name: str = 'vit_seg_probe', executor: str = 'single',
                 node_fqn: str = '/' + NODE_NAME) -> None:
        from vit_seg_node.ros.spin import make_executor

        self.node_fqn = node_fqn    # whose diagnostics to keep: status '<fqn>: <task>'
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain)
        self.node = rclpy.create_node(name, context=self.context)
        self.executor = make_executor(executor, self.context)
        self.executor.add_node(self.node)
        self.diagnostics: list[dict[str, str]] = []
        self.diagnostics_at: list[float] = []   # monotonic receive time of each
        from diagnostic_msgs.msg import DiagnosticArray

        self.node.create_subscription(DiagnosticArray, '/diagnostics', self._on_diag, 10)
        self._running = True
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._running and self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # the context was shut down under us
                return

    def _on_diag(self, msg) -> None:
        for st in msg.status:
            if st.name.split(': ', 1)[0] == self.node_fqn:
                self.diagnostics.append({kv.key: kv.value for kv in st.values})
                self.diagnostics_at.append(time.monotonic())

    def last_diagnostics(self) -> dict[str, str]:
        """Return the key/values of the node's latest diagnostics status ({} before any)."""
        return self.diagnostics[-1] if self.diagnostics else {}

    def collect(self, msg_type, topic: str, qos) -> list:
        """Subscribe; return the list that ``(monotonic time, message)`` pairs are appended to."""
        received: list = []
        self.node.create_subscription(msg_type, topic,
                                      lambda m: received.append((time.monotonic(), m)), qos)
        return received

    def publisher(self, msg_type, topic: str, qos):
        """Create a publisher on this probe."""
        return self.node.create_publisher(msg_type, topic, qos)

    def close(self) -> None:
        """Stop spinning and shut the context down."""
        self._running = False
        self._thread.join(2)
        self.node.destroy_node()
        self.context.try_shutdown()


class NodeProcess:
    """``vit_seg_node`` in its own process on ``domain``; ``stop()`` always ends it."""

    def __init__(self, domain: int, params: dict[str, Any],
                 args: Optional[list[str]] = None, env: Optional[dict[str, str]] = None,
                 module: str = 'vit_seg_node.ros.node') -> None:
        cmd = node_command(module) + ['--ros-args']
        for k, v in params.items():
            cmd += ['-p', f'{k}:={v}']
        cmd += args or []
        env = {**os.environ, **(env or {}), 'ROS_DOMAIN_ID': str(domain),
               'PYTHONUNBUFFERED': '1', 'RCUTILS_LOGGING_BUFFERED_STREAM': '0',
               **child_env(signal.SIGTERM)}   # it ends with this process, however it ends
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_ready(self, probe: Probe, timeout: float = 120.0) -> None:
        """Return once the node's diagnostics reach ``probe``; UserError if it exits or hangs."""
        n = len(probe.diagnostics)
        ok = wait_for(lambda: len(probe.diagnostics) > n or not self.alive(), timeout, 0.05)
        if ok and self.alive():
            return
        self.stop()
        last = self.lines[-1].strip() if self.lines else 'no output'
        raise UserError(f'the node did not start: {last}')

    def alive(self) -> bool:
        """Return whether the node process still runs."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGINT, then kill after 10 s; join the output reader."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._reader.join(2)
