"""The node's parameters: defaults, descriptions, ranges and choices, and their validation.

One table serves the node's declarations (descriptors with ``IntegerRange`` /
``FloatingPointRange``), its on-set validation, the README's parameter table and the relay.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from vit_seg_node.backends.base import registry, suffixes
from vit_seg_node.core.card import MAX_THREADS
from vit_seg_node.core.imagesize import DEFAULT_MAX_PIXELS
from vit_seg_node.core.ladder import LADDER_SUFFIX
from vit_seg_node.pipeline import shipped_models, shipped_name
from vit_seg_node.ros.cameras import check_camera_names


@dataclasses.dataclass(frozen=True)
class Param:
    """One node parameter: default, description, and its constraints."""

    default: Any
    description: str
    read_only: bool = False
    low: Optional[float] = None      # numeric range, inclusive (shown by `ros2 param describe`)
    high: Optional[float] = None
    choices: tuple = ()


PARAMETERS: dict[str, Param] = {
    'model_path': Param('', 'ONNX model or TensorRT engine with its .card.yaml beside it, or a '
                            'shipped model by name (fast, mid, default); empty: the shipped '
                            'default model', read_only=True),
    'backend': Param('auto', 'which backend runs the model (auto: by the file suffix)',
                     read_only=True, choices=('auto', 'onnxruntime', 'tensorrt', 'torch')),
    'threads': Param(0, 'CPU threads for the backend (0: a tuned card\'s setting, else the '
                        'backend default)', read_only=True, low=0, high=MAX_THREADS),
    'cpu_spinning': Param(True, 'ONNX Runtime pool threads spin between operators during '
                                'inference (never between frames): fastest on an idle CPU; '
                                'false lets them sleep, faster beside busy processes',
                          read_only=True),
    'cameras': Param([], 'names of the cameras one model serves (each: NAME/image in, '
                         '~/NAME/class_mask etc. out); empty: one camera, image in',
                     read_only=True),
    'input_transport': Param('raw', 'raw: subscribe image; compressed: image/compressed',
                             read_only=True, choices=('raw', 'compressed')),
    'resize': Param('card', 'how frames of another aspect ratio than the model input fit it: '
                            'card (the model card\'s choice), stretch, letterbox (padded), crop '
                            '(the centre; mask 255 outside it); masks keep the camera size',
                    read_only=True, choices=('card', 'stretch', 'letterbox', 'crop')),
    'output_resolution': Param('input', 'input: masks at the camera resolution; network: at '
                                        'the model\'s output size (its input size, or 1/stride '
                                        'of it: card output.stride)',
                               choices=('input', 'network')),
    'max_fps': Param(0.0, 'accept at most this many frames per second (0: no limit)',
                     low=0.0, high=1000.0),
    'overlay_alpha': Param(0.5, 'weight of the colour mask in ~/overlay', low=0.0, high=1.0),
    'enable': Param(True, 'false: ignore incoming frames (diagnostics keep running)'),
    'expected_fps': Param(0.0, 'diagnostics WARN when the output rate falls below this (0: off)',
                          low=0.0, high=1000.0),
    'stale_timeout': Param(5.0, 'diagnostics ERROR when no frame arrived for this many seconds',
                           low=0.1, high=3600.0),
    'latency_budget_ms': Param(0.0, 'hold this receive-to-publish latency by switching along the '
                                    'model ladder (0: off, the most accurate rung)',
                               low=0.0, high=10000.0),
    'model_ladder': Param('', 'ladder file (models, most accurate first); shipped: the shipped '
                              'CPU ladder; empty: model_path alone (the shipped ladder when a '
                              'budget is set and model_path is empty)', read_only=True),
    'executor': Param('single', 'rclpy executor: single (SingleThreadedExecutor) or events '
                                '(rclpy.experimental.EventsExecutor, Jazzy and later: less Python '
                                'per message)', read_only=True, choices=('single', 'events')),
    'zero_copy': Param(True, 'take images serialized and read their pixels in place, publish '
                             'the class mask serialized (no rclpy message copies); false: '
                             'rclpy message objects', read_only=True),
    'max_input_pixels': Param(DEFAULT_MAX_PIXELS, 'frames with more pixels are rejected before '
                                                  'any decoding (compressed: from the header)',
                              low=1, high=1 << 31),
}


def parameter_table() -> str:
    """Return the parameters as the README's Markdown table (a test keeps the README equal)."""
    rows = ['| parameter | default | range / choices | restart | what |', '|---|---|---|---|---|']
    for name, p in PARAMETERS.items():
        if p.choices:
            allowed = ' \\| '.join(p.choices)
        elif p.low is not None:
            fmt = (lambda v: str(int(v))) if isinstance(p.default, int) else \
                (lambda v: f'{v:g}')
            allowed = f'{fmt(p.low)} .. {fmt(p.high)}'
        elif isinstance(p.default, list):
            allowed = 'list of names'
        else:
            allowed = 'true \\| false' if isinstance(p.default, bool) else 'path'
        default = repr(p.default) if p.default == '' else str(p.default).lower() \
            if isinstance(p.default, bool) else str(p.default) \
            if isinstance(p.default, list) else str(p.default)
        rows.append(f'| `{name}` | `{default}` | {allowed} | {"yes" if p.read_only else ""} | '
                    f'{p.description} |')
    return '\n'.join(rows) + '\n'


def descriptor(name: str, p: Param) -> ParameterDescriptor:
    """Return the ROS parameter descriptor of ``p`` (ranges as Integer/FloatingPointRange)."""
    d = ParameterDescriptor(name=name, description=p.description, read_only=p.read_only)
    if p.choices:
        d.additional_constraints = 'one of: ' + ', '.join(p.choices)
    if p.low is not None and isinstance(p.default, bool) is False:
        if isinstance(p.default, int):
            d.integer_range = [IntegerRange(from_value=int(p.low), to_value=int(p.high), step=1)]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(p.low),
                                                         to_value=float(p.high), step=0.0)]
    return d


def validate_parameter(name: str, value: Any) -> Optional[str]:
    """Return why ``value`` is invalid for ``name``, or None if it is fine.

    The ranges are also in the descriptors (rclpy enforces them); this check gives the same
    answer with a readable reason, and covers choices and the model file suffix.
    """
    p = PARAMETERS[name]
    if p.choices and value not in p.choices:
        return f'{name} must be one of {list(p.choices)}, got {value!r}'
    if p.low is not None and not p.low <= value <= p.high:
        return f'{name} must be in [{p.low:g}, {p.high:g}], got {value}'
    if name == 'cameras':
        return check_camera_names(value)
    if name == 'backend' and value != 'auto' and value not in registry():
        return f'backend {value!r} is not installed here (installed: {sorted(registry())})'
    if name == 'model_ladder' and value and value != 'shipped' and \
            not str(value).endswith(LADDER_SUFFIX):
        return f'model_ladder must be shipped or a *{LADDER_SUFFIX} file, got {value!r}'
    if name == 'model_path' and value and Path(value).suffix.lower() not in suffixes() \
            and shipped_name(value) is None:
        return (f'model_path {value!r} is neither a shipped model ({", ".join(shipped_models())})'
                f' nor a file of a known suffix ({", ".join(sorted(suffixes()))})')
    return None


def usage_text() -> str:
    """Return ``vit_seg_node --help``: how to start it, its topics and parameters."""
    lines = ['usage: vit_seg_node [--ros-args [-r image:=TOPIC] [-p NAME:=VALUE]... '
             '[--params-file FILE]]', '',
             'Camera images in (image or image/compressed, camera_info), class masks out '
             '(~/class_mask mono8; ~/color_mask, ~/overlay rgb8 while subscribed; '
             '~/camera_info), /diagnostics at 1 Hz.',
             'Example: vit_seg_node --ros-args -r image:=/camera/image_raw -p model_path:=fast',
             '', 'parameters (restart: read-only once started):']
    for name, p in PARAMETERS.items():
        default = repr(p.default) if isinstance(p.default, str) else str(p.default).lower() \
            if isinstance(p.default, bool) else str(p.default)
        lines.append(f'  {name} (default {default}{", restart" if p.read_only else ""}): '
                     f'{p.description}')
    return '\n'.join(lines)
