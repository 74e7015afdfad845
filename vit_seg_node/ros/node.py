"""The ``vit_seg_node`` ROS 2 node: camera images in, class masks out, diagnostics at 1 Hz.

Subscribes ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage)
and ``camera_info``; publishes ``~/class_mask`` (mono8), ``~/color_mask`` and ``~/overlay``
(rgb8, computed only when subscribed) and ``~/camera_info`` scaled to the mask. Every output
carries the input header unchanged. Inference runs on a worker thread with a latest-frame slot:
the executor never blocks, and a frame replaced while waiting is counted as dropped.

QoS: ``qos_profile_sensor_data`` (best effort, keep last 5) on the image topics and the masks,
changeable per topic through rclpy's QoS overrides (``qos_overrides.<topic>.subscription.
reliability``, ``...publisher.depth``, etc., set at start-up).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any, Optional

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rclpy.qos_overriding_options import QoSOverridingOptions
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.handoff import LatestFrameWorker
from vit_seg_node.core.ladder import LadderController, load_ladder
from vit_seg_node.core.processing import colorize, overlay
from vit_seg_node.core.stats import CpuMeter, LatencyWindow, RateMeter
from vit_seg_node.pipeline import default_model_path, SegmentationPipeline, SHIPPED_LADDER
from vit_seg_node.ros.convert import compressed_to_rgb, fill_image, FrameError, from_serialized, \
    image_to_rgb, mask_message, ros_header
from vit_seg_node.ros.params import descriptor, PARAMETERS, validate_parameter
from vit_seg_node.ros.spin import run_node, StartupError


# end-to-end latency (header stamp to publish) is reported only for stamps this close to the
# node's clock: a bag recorded long ago, or a camera on its own clock, has no meaningful one
PLAUSIBLE_STAMP_AGE_S = 60.0


def check_rungs(rungs: list) -> None:
    """Raise UserError unless every rung gives masks of one size and one class list."""
    first = rungs[0].card
    for r in rungs[1:]:
        c = r.card
        if (c.input_height, c.input_width, c.classes, c.resize) != \
                (first.input_height, first.input_width, first.classes, first.resize):
            raise UserError(f'ladder rung {r.model_path} differs from {rungs[0].model_path} in '
                            f'input size, resize mode or classes')


def reference_latencies_ms(rungs: list, warmup: int = 3, rounds: int = 5) -> list[float]:
    """Return each rung's median inference latency on this machine, and warm them all up.

    Timed in interleaved rounds, so that whatever else the machine does at start-up slows every
    rung alike: the controller uses their ratios.
    """
    c = rungs[0].card
    x = np.zeros((1, 3, c.input_height, c.input_width), np.float32)
    times: list[list[float]] = [[] for _ in rungs]
    for k in range(warmup + rounds):
        for r, t_list in zip(rungs, times):
            t = time.perf_counter()
            r.backend.infer(x)
            if k >= warmup:
                t_list.append((time.perf_counter() - t) * 1e3)
    return [float(np.median(t)) for t in times]


def stamp_to_s(stamp) -> float:
    """Return a builtin_interfaces/Time as float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def scaled_camera_info(info: CameraInfo, geo, out_h: int, out_w: int, header) -> CameraInfo:
    """Return ``info`` rescaled to the mask resolution (identity when it equals the input)."""
    out = CameraInfo()
    out.header = header
    out.height, out.width = out_h, out_w
    out.distortion_model, out.d, out.r = info.distortion_model, info.d, info.r
    y0, x0, h, w = geo.roi
    if (out_h, out_w) == (geo.src_height, geo.src_width):
        sx = sy = 1.0
        ox = oy = 0.0
    else:
        sx, sy = w / geo.src_width, h / geo.src_height
        ox, oy = float(x0), float(y0)
    k = list(info.k)
    k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx + ox, k[4] * sy, k[5] * sy + oy
    p = list(info.p)
    p[0], p[2], p[3], p[5], p[6] = p[0] * sx, p[2] * sx + ox, p[3] * sx, p[5] * sy, p[6] * sy + oy
    out.k, out.p = k, p
    out.binning_x, out.binning_y, out.roi = info.binning_x, info.binning_y, info.roi
    return out


class SegmentationNode(Node):
    """Camera in, masks out; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('vit_seg_node', **kwargs)
        self.params: dict[str, Any] = {}
        for name, spec in PARAMETERS.items():
            try:
                value = self.declare_parameter(name, spec.default,
                                               descriptor(name, spec)).value
            except (InvalidParameterTypeException, ParameterException) as exc:
                raise StartupError(f'invalid parameter {name}: {exc} (expected '
                                   f'{type(spec.default).__name__})') from None
            reason = validate_parameter(name, value)
            if reason:
                raise StartupError(f'invalid parameter: {reason}')
            self.params[name] = value
        self.add_on_set_parameters_callback(self._on_set_parameters)
        p = self.params
        try:
            self.rungs = [SegmentationPipeline(m, backend=p['backend'], threads=p['threads'],
                                               spinning=p['cpu_spinning'])
                          for m in self._model_paths()]
            check_rungs(self.rungs)
        except UserError as exc:
            raise StartupError(f'cannot load model: {exc}') from None
        self.ladder = LadderController(reference_latencies_ms(self.rungs),
                                       p['latency_budget_ms'], now=time.monotonic())
        self._ladder_lock = threading.Lock()   # worker, diagnostics timer, parameter service
        self._init_state()
        self._init_topics(p['input_transport'])
        self.diag_timer = self.create_timer(1.0, self.publish_diagnostics)
        self._worker = LatestFrameWorker(self._handle_frame, 'vit_seg_worker').start()
        self.get_logger().info(
            f'ready: model {self.pipeline.model_path} ({self.card.name}), backend '
            f'{self.backend_name}, input {self.card.input_width}x{self.card.input_height}, '
            f'subscribing {self.sub_image.topic_name}'
            + (f'; ladder of {len(self.rungs)} rungs, reference latencies '
               f'{[round(r, 1) for r in self.ladder.reference]} ms' if len(self.rungs) > 1
               else ''))

    def _model_paths(self) -> list[str]:
        """Return the rungs' model files: the ladder's, or model_path alone."""
        p = self.params
        ladder = p['model_ladder']
        if not ladder and p['latency_budget_ms'] > 0 and not p['model_path']:
            ladder = 'shipped'
        if ladder:
            if p['model_path']:
                self.get_logger().warn('model_ladder is set: model_path is not used')
            return [str(m) for m in load_ladder(SHIPPED_LADDER if ladder == 'shipped'
                                                else ladder)]
        return [p['model_path'] or str(default_model_path())]

    @property
    def pipeline(self) -> SegmentationPipeline:
        """Return the pipeline of the active rung."""
        return self.rungs[self.ladder.rung]

    @property
    def card(self):
        """Return the active model's card."""
        return self.pipeline.card

    @property
    def backend_name(self) -> str:
        """Return the active backend's name."""
        return self.pipeline.backend.name

    def _init_state(self) -> None:
        self._camera_info: Optional[CameraInfo] = None
        self._last_accept = 0.0
        self.counters: collections.Counter[str] = collections.Counter()
        self.rejects: collections.Counter[str] = collections.Counter()
        self.rate_in, self.rate_out = RateMeter(), RateMeter()
        self.cpu = CpuMeter()
        self.lat = {k: LatencyWindow() for k in ('pre', 'infer', 'post', 'end_to_end',
                                                 'receive_to_publish')}

    def _init_topics(self, transport: str) -> None:
        qos = qos_profile_sensor_data
        overridable = QoSOverridingOptions.with_default_policies()
        self.pub_mask = self.create_publisher(Image, '~/class_mask', qos,
                                              qos_overriding_options=overridable)
        self.pub_color = self.create_publisher(Image, '~/color_mask', qos,
                                               qos_overriding_options=overridable)
        self.pub_overlay = self.create_publisher(Image, '~/overlay', qos,
                                                 qos_overriding_options=overridable)
        self.pub_info = self.create_publisher(CameraInfo, '~/camera_info', qos,
                                              qos_overriding_options=overridable)
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)
        self.image_type, topic = (Image, 'image') if transport == 'raw' else \
            (CompressedImage, 'image/compressed')
        self.sub_image = self.create_subscription(self.image_type, topic, self._on_frame, qos,
                                                  qos_overriding_options=overridable,
                                                  raw=self.params['zero_copy'])
        self.sub_info = self.create_subscription(CameraInfo, 'camera_info', self._on_info, qos,
                                                 qos_overriding_options=overridable)

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a change; accepted values go into the cache the frame path reads."""
        for prm in params:
            if prm.name in PARAMETERS:
                reason = validate_parameter(prm.name, prm.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        self.params.update({prm.name: prm.value for prm in params if prm.name in PARAMETERS})
        if any(prm.name == 'latency_budget_ms' for prm in params) and hasattr(self, 'ladder'):
            with self._ladder_lock:
                self.ladder.set_budget(self.params['latency_budget_ms'], time.monotonic())
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks
    def _on_info(self, msg: CameraInfo) -> None:
        self._camera_info = msg

    def _on_frame(self, msg: Any) -> None:
        """Keep only the latest frame; never block the executor."""
        now = time.monotonic()
        self.rate_in.tick(now)
        self.counters['received'] += 1
        if not self.params['enable']:
            self.counters['disabled'] += 1
            return
        max_fps = self.params['max_fps']
        if max_fps > 0 and now - self._last_accept < 1.0 / max_fps:
            self.counters['throttled'] += 1
            return
        self._last_accept = now
        if self._worker.offer((msg, now)):   # the frame waiting was replaced: dropped
            self.counters['dropped'] += 1

    # ------------------------------------------------------------------ worker
    def _handle_frame(self, item: tuple[Any, float]) -> None:
        msg, received = item
        try:
            self._process(msg, received)
        except FrameError as exc:
            self.rejects[exc.reason] += 1
            self.get_logger().warn(f'frame skipped: {exc}', throttle_duration_sec=5.0)
        except Exception as exc:  # keep the node alive whatever one frame does
            self.rejects['error'] += 1
            self.get_logger().error(f'frame failed: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=5.0)

    def _process(self, msg: Any, received: float) -> None:
        t0 = time.perf_counter()
        if isinstance(msg, bytes):      # zero_copy: the frame as DDS delivered it
            msg = from_serialized(msg, self.image_type)
        cap = self.params['max_input_pixels']
        rgb = compressed_to_rgb(msg, cap, self._decoder_warning) \
            if self.image_type is CompressedImage else image_to_rgb(msg, cap)
        t_conv = (time.perf_counter() - t0) * 1e3
        at_source = self.params['output_resolution'] == 'input'
        pipeline = self.pipeline     # the rung chosen after the previous frame
        seg = pipeline(rgb, at_source=at_source)
        t2 = time.perf_counter()
        self._publish(msg.header, seg.labels, rgb, seg.geometry)
        self.counters['published'] += 1
        self.rate_out.tick()
        self.lat['pre'].add(t_conv + seg.pre_ms)
        self.lat['infer'].add(seg.infer_ms)
        self.lat['post'].add(seg.post_ms + (time.perf_counter() - t2) * 1e3)
        done = time.monotonic()
        self.lat['receive_to_publish'].add((done - received) * 1e3)
        with self._ladder_lock:
            self.ladder.observe((done - received) * 1e3, done, seg.infer_ms)
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp_to_s(msg.header.stamp)
        if 0.0 <= age <= PLAUSIBLE_STAMP_AGE_S:
            self.lat['end_to_end'].add(age * 1e3)
        else:
            self.counters['stamp_off_clock'] += 1

    def _decoder_warning(self, text: str) -> None:
        self.get_logger().warn(text, throttle_duration_sec=5.0)

    def _publish(self, header, labels, rgb, geo) -> None:
        """Publish the class mask, and colour mask / overlay / camera info where wanted."""
        self.pub_mask.publish(mask_message(labels, header, self.params['zero_copy']))
        want_color = self.pub_color.get_subscription_count() > 0
        want_overlay = self.pub_overlay.get_subscription_count() > 0
        if want_color or want_overlay or self._camera_info is not None:
            header = ros_header(header)
        if want_color or want_overlay:
            color = colorize(labels, self.rungs[0].card)
            if want_color:
                m = Image()
                fill_image(m, color, 'rgb8', header)
                self.pub_color.publish(m)
            if want_overlay:
                shown = rgb if rgb.shape[:2] == labels.shape else \
                    cv2.resize(rgb, (labels.shape[1], labels.shape[0]))
                m = Image()
                fill_image(m, overlay(shown, color, self.params['overlay_alpha']), 'rgb8',
                           header)
                self.pub_overlay.publish(m)
        if self._camera_info is not None:
            self.pub_info.publish(scaled_camera_info(self._camera_info, geo, labels.shape[0],
                                                     labels.shape[1], header))

    # ------------------------------------------------------------------ diagnostics
    def diagnostic_status(self) -> DiagnosticStatus:
        """Return the node's status in the spirit of diagnostic_updater's frequency checks."""
        st = DiagnosticStatus()
        st.name = 'vit_seg_node: segmentation'
        st.hardware_id = f'{self.backend_name}:{self.card.name}'
        now = time.monotonic()
        out_rate = self.rate_out.rate(now)
        values: dict[str, Any] = {
            'backend': self.backend_name, 'model': str(self.pipeline.model_path),
            'precision': self.card.precision.get('default', 'fp32'),
            'token_budget': self.card.reduction.get('keep', self.card.reduction.get('policy')),
            'reduction_policy': self.card.reduction.get('policy', 'none'),
            'input_rate_hz': f'{self.rate_in.rate(now):.2f}', 'output_rate_hz': f'{out_rate:.2f}',
            'cpu_cores_used': f'{self.cpu.cores():.2f}',
            'frames_received': self.counters['received'],
            'frames_published': self.counters['published'],
            'frames_dropped': self.counters['dropped'],
            'frames_throttled': self.counters['throttled'],
            'frames_rejected': sum(self.rejects.values()),
            'stamps_off_clock': self.counters['stamp_off_clock'],
            'active_model': self.card.name, 'active_rung': self.ladder.rung,
            'ladder_rungs': len(self.rungs),
            'latency_budget_ms': self.params['latency_budget_ms'],
            'ladder_switches': self.ladder.switches,
        }
        with self._ladder_lock:
            spent = self.ladder.time_on_rungs(now)
        for k, (r, secs) in enumerate(zip(self.rungs, spent)):
            values[f'rung{k}_model'] = r.card.name
            values[f'rung{k}_seconds'] = f'{secs:.1f}'
            values[f'rung{k}_reference_ms'] = f'{self.ladder.reference[k]:.1f}'
        for reason, n in sorted(self.rejects.items()):
            values[f'rejected_{reason}'] = n
        for stage, win in self.lat.items():
            pct = win.percentiles()
            for q, v in (pct or {}).items():
                values[f'latency_{stage}_{q}_ms'] = f'{v:.2f}'
        last = self.rate_in.last
        expected = self.params['expected_fps']
        if last is None:
            st.level, st.message = DiagnosticStatus.STALE, 'no frame received yet'
        elif now - last > self.params['stale_timeout']:
            st.level, st.message = DiagnosticStatus.ERROR, f'no frame for {now - last:.1f} s'
        elif expected > 0 and out_rate < expected:
            st.level = DiagnosticStatus.WARN
            st.message = f'output rate {out_rate:.1f} Hz below expected {expected:.1f} Hz'
        elif self.rejects and self.counters['published'] == 0:
            st.level, st.message = DiagnosticStatus.WARN, 'all frames rejected so far'
        else:
            st.level, st.message = DiagnosticStatus.OK, f'{out_rate:.1f} Hz'
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return st

    def publish_diagnostics(self) -> None:
        """Publish one DiagnosticArray on /diagnostics."""
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [self.diagnostic_status()]
        self.pub_diag.publish(arr)

    def stop(self) -> None:
        """Stop the worker thread."""
        self._worker.stop()


def main(args: Optional[list[str]] = None) -> int:
    """Run the node until shutdown; exit code 1 with one fatal line if it cannot start."""
    return run_node(SegmentationNode, args)


if __name__ == '__main__':
    sys.exit(main(sys.argv))
