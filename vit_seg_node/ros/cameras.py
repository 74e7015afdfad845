"""The cameras one node serves: their names, topics, statistics and diagnostics.

With the ``cameras`` parameter empty the node has one camera without a name and today's topics:
``image`` (or ``image/compressed``) and ``camera_info`` in, ``~/class_mask``, ``~/color_mask``,
``~/overlay`` and ``~/camera_info`` out. A camera named ``front`` has ``front/image`` (or
``front/image/compressed``) and ``front/camera_info`` in and ``~/front/class_mask``,
``~/front/color_mask``, ``~/front/overlay`` and ``~/front/camera_info`` out. Every camera keeps
its own counters, rates and latency windows; the node reports each in ``/diagnostics``.
"""

from __future__ import annotations

import collections
import functools
import re
from typing import Any, Callable, Optional

from diagnostic_msgs.msg import DiagnosticStatus
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image

from vit_seg_node.core.stats import LatencyWindow, RateMeter

# a camera name is one ROS name token: it becomes a namespace of the camera's topics
NAME = re.compile(r'[A-Za-z][A-Za-z0-9_]*')
# own: receive-to-publish minus inference, frame by frame (the node's own work)
STAGES = ('wait', 'pre', 'infer', 'post', 'publish', 'end_to_end', 'receive_to_publish', 'own')
# the single camera's input topics: remapping them means nothing once cameras are named
SINGLE_INPUTS = ('image', 'image/compressed', 'camera_info')


def check_camera_names(names: Any) -> Optional[str]:
    """Return why ``names`` is not a valid ``cameras`` list, or None if it is."""
    names = list(names or [])
    bad = [n for n in names if not isinstance(n, str) or not NAME.fullmatch(n)]
    if bad:
        return (f'cameras: {bad} are not valid names (a letter, then letters, digits or _; '
                f'each becomes the namespace of the camera\'s topics)')
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        return f'cameras: {dup} named more than once'
    return None


def topic_prefix(name: str) -> str:
    """Return the relative topic prefix of camera ``name`` ('' for the unnamed single camera)."""
    return f'{name}/' if name else ''


class Camera:
    """One camera's subscriptions, publishers, latest camera info and statistics.

    ``make_publisher(type, topic, qos, **kw)`` creates its publishers (a plain or a lifecycle
    node's); subscriptions are made by ``open_input`` and destroyed by ``close_input``.
    """

    def __init__(self, node, name: str, make_publisher: Callable) -> None:
        self.node, self.name = node, name
        self.label = name or 'camera'
        out = '~/' + topic_prefix(name)
        qos, kw = qos_profile_sensor_data, \
            {'qos_overriding_options': QoSOverridingOptions.with_default_policies()}
        self.pub_mask = make_publisher(Image, out + 'class_mask', qos, **kw)
        self.pub_color = make_publisher(Image, out + 'color_mask', qos, **kw)
        self.pub_overlay = make_publisher(Image, out + 'overlay', qos, **kw)
        self.pub_info = make_publisher(CameraInfo, out + 'camera_info', qos, **kw)
        self.sub_image = self.sub_info = None
        self.info: Optional[CameraInfo] = None
        self.size: Optional[tuple[int, int]] = None   # (height, width) of the last frame
        self.last_accept = 0.0
        self.counters: collections.Counter[str] = collections.Counter()
        self.rejects: collections.Counter[str] = collections.Counter()
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.lat = {k: LatencyWindow() for k in STAGES}

    @property
    def publishers(self) -> list:
        """Return the camera's four publishers."""
        return [self.pub_mask, self.pub_color, self.pub_overlay, self.pub_info]

    def open_input(self, image_type: type, raw: bool, on_frame: Callable[[Any, Any], None]
                   ) -> None:
        """Subscribe the camera's image (raw or compressed) and camera info.

        ``on_frame(camera, msg)`` gets each frame (``on_frame(camera, msg, info)``: with rclpy's
        message info).
        """
        prefix = topic_prefix(self.name)
        topic = prefix + ('image' if image_type is Image else 'image/compressed')
        kw = {'qos_overriding_options': QoSOverridingOptions.with_default_policies()}
        self.sub_image = self.node.create_subscription(
            image_type, topic, functools.partial(on_frame, self), qos_profile_sensor_data,
            raw=raw, **kw)
        self.sub_info = self.node.create_subscription(
            CameraInfo, prefix + 'camera_info', self._on_info, qos_profile_sensor_data, **kw)

    def close_input(self) -> None:
        """Destroy the camera's subscriptions (no frame is taken afterwards)."""
        for sub in (self.sub_image, self.sub_info):
            if sub is not None:
                self.node.destroy_subscription(sub)
        self.sub_image = self.sub_info = None

    def _on_info(self, msg: CameraInfo) -> None:
        self.info = msg

    def accept(self, now: float, enable: bool, max_fps: float) -> bool:
        """Count a received frame; return whether to hand it to the worker."""
        self.rate_in.tick(now)
        self.counters['received'] += 1
        if not enable:
            self.counters['disabled'] += 1
            return False
        if max_fps > 0 and now - self.last_accept < 1.0 / max_fps:
            self.counters['throttled'] += 1
            return False
        self.last_accept = now
        return True

    def values(self, now: float) -> dict[str, Any]:
        """Return the camera's diagnostic key/values: rates, frame counts, stage latencies."""
        values: dict[str, Any] = {
            'input_rate_hz': f'{self.rate_in.rate(now):.2f}',
            'output_rate_hz': f'{self.rate_out.rate(now):.2f}',
            'frames_received': self.counters['received'],
            'frames_published': self.counters['published'],
            'frames_dropped': self.counters['dropped'],
            'frames_throttled': self.counters['throttled'],
            'frames_rejected': sum(self.rejects.values()),
            'stamps_off_clock': self.counters['stamp_off_clock'],
        }
        for reason, n in sorted(self.rejects.items()):
            values[f'rejected_{reason}'] = n
        for stage, win in self.lat.items():
            for q, v in (win.percentiles() or {}).items():
                values[f'latency_{stage}_{q}_ms'] = f'{v:.2f}'
        return values

    def level(self, now: float, stale_timeout: float, expected_fps: float) -> tuple[int, str]:
        """Return the camera's diagnostic level and message (diagnostic_updater's spirit)."""
        last, out_rate = self.rate_in.last, self.rate_out.rate(now)
        if last is None:
            return DiagnosticStatus.STALE, 'no frame received yet'
        if now - last > stale_timeout:
            return DiagnosticStatus.ERROR, f'no frame for {now - last:.1f} s'
        if expected_fps > 0 and out_rate < expected_fps:
            return DiagnosticStatus.WARN, \
                f'output rate {out_rate:.1f} Hz below expected {expected_fps:.1f} Hz'
        if self.rejects and self.counters['published'] == 0:
            return DiagnosticStatus.WARN, 'all frames rejected so far'
        return DiagnosticStatus.OK, f'{out_rate:.1f} Hz'


def remapped_single_inputs(node) -> list[str]:
    """Return the single camera's input topics that a remap rule changes on ``node``."""
    return [t for t in SINGLE_INPUTS
            if node.resolve_topic_name(t) != node.resolve_topic_name(t, only_expand=True)]
