"""``vit-seg param get|set``: a node's parameters without the ``ros2`` command.

The same parameter services ``ros2 param`` calls (``<node>/get_parameters``,
``<node>/set_parameters``), from a client node on ``$ROS_DOMAIN_ID``. A value is read as YAML
(``80`` an integer, ``80.0`` a double, ``true`` a bool, ``[a, b]`` a list), as ``ros2 param set``
reads it.
"""

from __future__ import annotations

import os
from typing import Any

import yaml
from rclpy.parameter import Parameter, parameter_value_to_python
from rcl_interfaces.srv import GetParameters, SetParameters

from vit_seg_node.core.errors import UserError
from vit_seg_node.eval.harness import Probe, wait_for


def _call(node: str, service_type, suffix: str, request, timeout: float) -> Any:
    """Call ``node``'s parameter service; return the response (UserError when none comes)."""
    domain = int(os.environ.get('ROS_DOMAIN_ID') or 0)
    probe = Probe(domain, 'vit_seg_param')
    try:
        client = probe.node.create_client(service_type, f'{node.rstrip("/")}/{suffix}')
        if not client.wait_for_service(timeout):
            raise UserError(f'no node {node} on ROS domain {domain} (its {suffix} service '
                            f'did not answer in {timeout:g} s)')
        future = client.call_async(request)
        if not wait_for(future.done, timeout) or future.result() is None:
            raise UserError(f'{node} did not answer {suffix} in {timeout:g} s')
        return future.result()
    finally:
        probe.close()


def get_parameter(node: str, name: str, timeout: float = 10.0) -> Any:
    """Return the value of ``name`` on ``node`` (UserError if it has none)."""
    r = _call(node, GetParameters, 'get_parameters', GetParameters.Request(names=[name]),
              timeout)
    if not r.values or r.values[0].type == 0:
        raise UserError(f'{node} has no parameter {name}')
    return parameter_value_to_python(r.values[0])


def set_parameter(node: str, name: str, text: str, timeout: float = 10.0) -> None:
    """Set ``name`` on ``node`` to ``text`` read as YAML; UserError with the node's reason."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    try:
        msg = Parameter(name, value=value).to_parameter_msg()
    except (TypeError, ValueError) as exc:
        raise UserError(f'cannot make a parameter of {text!r}: {exc}') from None
    r = _call(node, SetParameters, 'set_parameters', SetParameters.Request(parameters=[msg]),
              timeout)
    result = r.results[0]
    if not result.successful:
        raise UserError(f'{node} refused {name}={text}: {result.reason}')
