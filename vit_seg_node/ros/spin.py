"""Spinning a node: the executor its ``executor`` parameter names, start-up failures, shutdown."""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from vit_seg_node.core.lifetime import tie_to_parent
from vit_seg_node.ros.transport import use_own_profile


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


def wants_help(argv: list[str]) -> bool:
    """Return whether ``-h``/``--help`` comes before any ``--ros-args``."""
    own = argv[1:argv.index('--ros-args')] if '--ros-args' in argv else argv[1:]
    return '-h' in own or '--help' in own


def run_node(factory: Callable[[], Any], args: Optional[list[str]] = None,
             usage: str = '') -> int:
    """Spin ``factory()``'s node until shutdown, then stop and destroy it.

    ``--help`` prints ``usage`` and returns 0 without starting anything. Fast DDS gets the
    node's own profile unless the user configured it (``ros.transport``). Exit code 1 with one
    fatal line if it cannot start (``StartupError``). Shared by the node and the relay.
    """
    if usage and wants_help(sys.argv if args is None else args):
        print(usage)
        return 0
    tie_to_parent()      # started by replay, demo or bench-node: end with that process
    use_own_profile()
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
