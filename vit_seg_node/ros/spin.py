"""Spinning a node: the executor its ``executor`` parameter names, start-up failures, shutdown."""

from __future__ import annotations

from typing import Any, Callable, Optional

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node


class StartupError(Exception):
    """The node cannot start (missing or invalid model, bad parameters)."""


def make_executor(kind: str, context=None):
    """Return the rclpy executor named by the ``executor`` parameter."""
    if kind == 'events':
        try:
            from rclpy.experimental import EventsExecutor
        except ImportError:
            raise StartupError('executor events needs rclpy.experimental.EventsExecutor '
                               '(ROS 2 Jazzy or later)') from None
        return EventsExecutor(context=context)
    return SingleThreadedExecutor(context=context)


def spin(node: Node) -> None:
    """Spin ``node`` until shutdown on the executor its ``executor`` parameter names.

    ``spin_once`` in a loop: the EventsExecutor's own ``spin()`` of Jazzy's PyPI rclpy runs no
    callbacks in this setting, its ``spin_once`` does.
    """
    kind = node.get_parameter('executor').value if node.has_parameter('executor') else 'single'
    executor = make_executor(kind, node.context)
    executor.add_node(node)
    try:
        while node.context.ok():
            executor.spin_once(timeout_sec=0.5)
    finally:
        executor.shutdown()


def run_node(factory: Callable[[], Any], args: Optional[list[str]] = None) -> int:
    """Spin ``factory()``'s node until shutdown, then stop and destroy it.

    Exit code 1 with one fatal line if it cannot start (``StartupError``). Shared by the node
    and the relay.
    """
    rclpy.init(args=args)
    node = None
    code = 0
    try:
        node = factory()
        spin(node)
    except StartupError as exc:
        rclpy.logging.get_logger('vit_seg_node').fatal(str(exc))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.stop()
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code
