"""The ``vit_seg_node`` ROS 2 node: camera images in, class masks out, diagnostics at 1 Hz.

Subscribes ``image`` (sensor_msgs/Image) or ``image/compressed`` (sensor_msgs/CompressedImage)
and ``camera_info``; publishes ``~/class_mask`` (mono8), ``~/color_mask`` and ``~/overlay``
(rgb8, computed only when subscribed) and ``~/camera_info`` scaled to the mask. With the
``cameras`` parameter set, each named camera has these topics under its name
(``ros.cameras``), and one model (or ladder) and one worker thread serve them all. Every
output carries the input header unchanged. Inference runs on a worker thread with a
latest-frame slot per camera, served round-robin: the executor never blocks, and a frame
replaced while waiting is counted as dropped.

``SegmentationCore`` is the frame path; ``SegmentationNode`` runs it from start to shutdown, and
``ros.lifecycle.LifecycleSegmentationNode`` through managed transitions.

QoS: ``qos_profile_sensor_data`` (best effort, keep last 5) on the image topics and the masks,
changeable per topic through rclpy's QoS overrides (``qos_overrides.<topic>.subscription.
reliability``, ``...publisher.depth``, etc., set at start-up).
"""

from __future__ import annotations

import collections
import sys
import threading
import time
from typing import Any, Callable, Optional

import cv2
import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import InvalidParameterTypeException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rcl_interfaces.msg import SetParametersResult
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.handoff import LatestFrameWorker
from vit_seg_node.core.ladder import LadderController, load_ladder
from vit_seg_node.core.processing import blank_input, colorize, overlay, to_labels
from vit_seg_node.core.schema import shorten
from vit_seg_node.core.stats import CpuMeter
from vit_seg_node.pipeline import default_model_path, SegmentationPipeline, SHIPPED_LADDER
from vit_seg_node.ros.arrival import ArrivalWatch, silent_level
from vit_seg_node.ros.cameras import Camera, remapped_single_inputs
from vit_seg_node.ros.convert import compressed_to_rgb, fill_image, FrameError, from_serialized, \
    image_to_rgb, mask_message, ros_header
from vit_seg_node.ros.labels import declare_label_parameters, label_info_publisher
from vit_seg_node.ros.params import descriptor, PARAMETERS, usage_text, validate_parameter
from vit_seg_node.ros.spin import run_node, StartupError
from vit_seg_node.ros.transport import camera_hint, profile_in_use


# end-to-end latency (header stamp to publish) is reported only for stamps this close to the
# node's clock: a bag recorded long ago, or a camera on its own clock, has no meaningful one
PLAUSIBLE_STAMP_AGE_S = 60.0
STATUS_TASK = 'segmentation'     # status name: '<fully qualified node name>: segmentation'


def check_rungs(rungs: list) -> None:
    """Raise UserError unless every rung gives masks of one size and one class list.

    Every rung must also take the same number of frames per call (``input.batch``): the worker
    takes that many cameras' frames at once whichever rung runs them.

    Each rung's model also runs once on a blank frame, and what it returns must be the label
    map its card promises (a card that says ``logits`` for a model that returns labels fails
    here, at start, and not on every frame).
    """
    first = rungs[0].card
    for r in rungs:
        c = r.card
        if (c.input_height, c.input_width, c.classes, c.resize, c.output_stride) != \
                (first.input_height, first.input_width, first.classes, first.resize,
                 first.output_stride):
            raise UserError(f'ladder rung {r.model_path} differs from {rungs[0].model_path} in '
                            f'input size, resize mode, classes or output stride')
        if c.batch != first.batch:
            raise UserError(f'ladder rung {r.model_path} takes a batch of {c.batch} frames, '
                            f'{rungs[0].model_path} of {first.batch}: every rung must take '
                            f'the same batch (vit-seg export --batch)')
        try:
            labels = to_labels(r.backend.infer(blank_input(c)), c.output_kind)[:1]
        except Exception as exc:  # any backend's error types
            raise UserError(f'model {r.model_path} fails on a blank frame: '
                            f'{type(exc).__name__}: {shorten(str(exc))}') from None
        want = (1, c.input_height // c.output_stride, c.input_width // c.output_stride)
        if labels.shape != want:
            raise UserError(f'model {r.model_path} returns labels of shape {labels.shape}, not '
                            f'{want} as its card says')


def reference_latencies_ms(rungs: list, warmup: int = 3, rounds: int = 5) -> list[float]:
    """Return each rung's median inference latency on this machine, and warm them all up.

    Timed in interleaved rounds, so that whatever else the machine does at start-up slows every
    rung alike: the controller uses their ratios.
    """
    blanks = [blank_input(r.card) for r in rungs]
    times: list[list[float]] = [[] for _ in rungs]
    for k in range(warmup + rounds):
        for r, x, t_list in zip(rungs, blanks, times):
            t = time.perf_counter()
            r.backend.infer(x)
            if k >= warmup:
                t_list.append((time.perf_counter() - t) * 1e3)
    return [float(np.median(t)) for t in times]


def stamp_to_s(stamp) -> float:
    """Return a builtin_interfaces/Time as float seconds."""
    return stamp.sec + stamp.nanosec * 1e-9


def scaled_camera_info(info: CameraInfo, geo, out_h: int, out_w: int, header,
                       stride: int = 1) -> CameraInfo:
    """Return ``info`` rescaled to the mask resolution (identity when it equals the input).

    A mask at the network's resolution is at 1/``stride`` of its input (the card's
    ``output.stride``).
    """
    out = CameraInfo()
    out.header = header
    out.height, out.width = out_h, out_w
    out.distortion_model, out.d, out.r = info.distortion_model, info.d, info.r
    y0, x0, h, w = geo.roi
    cy, cx, ch, cw = geo.crop or (0, 0, geo.src_height, geo.src_width)
    if (out_h, out_w) == (geo.src_height, geo.src_width):
        sx = sy = 1.0
        ox = oy = 0.0
    else:
        sx, sy = w / cw / stride, h / ch / stride
        ox, oy = x0 / stride - cx * sx, y0 / stride - cy * sy
    k = list(info.k)
    k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx + ox, k[4] * sy, k[5] * sy + oy
    p = list(info.p)
    p[0], p[2], p[3], p[5], p[6] = p[0] * sx, p[2] * sx + ox, p[3] * sx, p[5] * sy, p[6] * sy + oy
    out.k, out.p = k, p
    out.binning_x, out.binning_y, out.roi = info.binning_x, info.binning_y, info.roi
    return out


class SegmentationCore:
    """The frame path of the plain and the managed node, for a ``rclpy`` Node subclass.

    Parameters, the model ladder, the cameras, the worker thread and ``/diagnostics``; the
    node classes decide when each part starts and stops (``SegmentationNode``: all at start;
    the lifecycle node: on its transitions).
    """

    rungs: list = []
    ladder: Optional[LadderController] = None
    cameras: list[Camera] = []
    _worker: Optional[LatestFrameWorker] = None
    _accepting = False
    _label_pub = None      # ~/label_info, where vision_msgs is installed
    _calls: collections.Counter = collections.Counter()   # per node: set by _open_cameras

    # ------------------------------------------------------------------ set-up, tear-down
    def _declare_parameters(self) -> None:
        """Declare every parameter with its descriptor; StartupError on an invalid value."""
        self.params: dict[str, Any] = {}
        for name, spec in PARAMETERS.items():
            default = Parameter.Type.STRING_ARRAY if isinstance(spec.default, list) \
                else spec.default
            try:
                value = self.declare_parameter(name, default, descriptor(name, spec)).value
            except (InvalidParameterTypeException, ParameterException) as exc:
                raise StartupError(f'invalid parameter {name}: {exc} (expected '
                                   f'{type(spec.default).__name__})') from None
            value = list(value or []) if isinstance(spec.default, list) else value
            reason = validate_parameter(name, value)
            if reason:
                raise StartupError(f'invalid parameter: {reason}')
            self.params[name] = value
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._ladder_lock = threading.Lock()   # worker, diagnostics timer, parameter service
        self.cpu = CpuMeter()
        self._arrivals: dict[str, ArrivalWatch] = {}   # per camera name
        self.pub_diag = self.create_publisher(DiagnosticArray, '/diagnostics', 10)

    def _load_models(self) -> None:
        """Load and warm up every rung of the ladder; UserError when a model cannot load."""
        p = self.params
        rungs = [SegmentationPipeline(m, backend=p['backend'], threads=p['threads'],
                                      spinning=p['cpu_spinning'], resize=p['resize'])
                 for m in self._model_paths()]
        check_rungs(rungs)
        declare_label_parameters(self, rungs[0].card)
        if self._label_pub is None:
            self._label_pub = label_info_publisher(self, rungs[0].card, self.create_publisher)
        self.ladder = LadderController(reference_latencies_ms(rungs), p['latency_budget_ms'],
                                       now=time.monotonic())
        self.rungs = rungs

    def _free_models(self) -> None:
        """Drop the backends (their sessions and buffers go with the last reference)."""
        self.rungs, self.ladder = [], None

    def _open_cameras(self, make_publisher: Callable) -> None:
        """Create the cameras' publishers and start the worker (no frame is taken yet)."""
        names = self.params['cameras']
        if names:
            remapped = remapped_single_inputs(self)
            if remapped:
                self.get_logger().warn(
                    f'cameras is set: the remaps of {remapped} are not used; remap '
                    f'NAME/image and NAME/camera_info of each camera instead')
        self.image_type = Image if self.params['input_transport'] == 'raw' else CompressedImage
        self.cameras = [Camera(self, n, make_publisher) for n in names or ['']]
        batch = self.rungs[0].card.batch if self.rungs else 1
        self._calls = collections.Counter()     # model calls of a batch > 1, and their frames
        self._worker = LatestFrameWorker(self._handle_frames if batch > 1 else self._handle_frame,
                                         'vit_seg_worker', batch).start()

    def _close_cameras(self, destroy_publisher: Callable) -> None:
        """Stop taking frames, stop the worker and destroy the cameras' publishers."""
        self._stop_input()
        if self._worker is not None:
            self._worker.stop()
            self._worker = None
        for cam in self.cameras:
            for pub in cam.publishers:
                destroy_publisher(pub)
        self.cameras = []

    def _start_input(self) -> None:
        """Subscribe every camera and take frames."""
        for cam in self.cameras:
            cam.open_input(self.image_type, self.params['zero_copy'], self._on_frame)
        self._accepting = True

    def _stop_input(self) -> None:
        """Stop taking frames: unsubscribe, drop the frames waiting, finish the one in work."""
        self._accepting = False
        for cam in self.cameras:
            cam.close_input()
        if self._worker is not None:
            self._worker.drain()

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
                                                else ladder, self.get_logger().warn)]
        return [p['model_path'] or str(default_model_path())]

    def _ready_line(self) -> str:
        """Return the one line logged once the models are loaded and the cameras exist."""
        topics = ', '.join(c.name or 'image' for c in self.cameras)
        return (f'model {self.pipeline.model_path} ({self.card.name}), backend '
                f'{self.backend_name}, input {self.card.input_width}x{self.card.input_height}, '
                f'cameras: {topics}'
                + (f'; ladder of {len(self.rungs)} rungs, reference latencies '
                   f'{[round(r, 1) for r in self.ladder.reference]} ms' if len(self.rungs) > 1
                   else ''))

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

    # ------------------------------------------------------------------ parameters
    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate a change; accepted values go into the cache the frame path reads."""
        for prm in params:
            if prm.name in PARAMETERS:
                reason = validate_parameter(prm.name, prm.value)
                if reason:
                    return SetParametersResult(successful=False, reason=reason)
        self.params.update({prm.name: prm.value for prm in params if prm.name in PARAMETERS})
        if any(prm.name == 'latency_budget_ms' for prm in params) and self.ladder is not None:
            with self._ladder_lock:
                self.ladder.set_budget(self.params['latency_budget_ms'], time.monotonic())
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ callbacks
    def _on_frame(self, cam: Camera, msg: Any) -> None:
        """Keep only the latest frame of each camera; never block the executor."""
        now = time.monotonic()
        if not self._accepting or not cam.accept(now, self.params['enable'],
                                                 self.params['max_fps']):
            return
        if self._worker.offer((cam, msg, now), cam.name):   # the one waiting was replaced
            cam.counters['dropped'] += 1

    # ------------------------------------------------------------------ worker
    def _handle_frame(self, item: tuple[Camera, Any, float]) -> None:
        cam, msg, received = item
        try:
            self._process(cam, msg, received)
        except Exception as exc:  # keep the node alive whatever one frame does
            self._frame_failed(cam, exc)

    def _frame_failed(self, cam: Camera, exc: Exception) -> None:
        """Count and report (throttled) a frame that was not answered."""
        if isinstance(exc, FrameError):
            cam.rejects[exc.reason] += 1
            self.get_logger().warn(f'{cam.label}: frame skipped: {exc}',
                                   throttle_duration_sec=5.0)
        else:
            cam.rejects['error'] += 1
            self.get_logger().error(f'{cam.label}: frame failed: {type(exc).__name__}: {exc}',
                                    throttle_duration_sec=5.0)

    def _handle_frames(self, items: list[tuple[Camera, Any, float]]) -> None:
        """Answer the frames of several cameras, taken together, with one model call.

        The worker of a model with a batch of N > 1 hands over up to N frames (one per camera);
        a frame that cannot be converted is left out, and a failing call fails them all.
        """
        waits = [(time.monotonic() - received) * 1e3 for _, _, received in items]
        ready = []
        for (cam, msg, received), waited_ms in zip(items, waits):
            try:
                ready.append((cam, received, waited_ms, *self._convert(cam, msg)))
            except Exception as exc:
                self._frame_failed(cam, exc)
        if not ready:
            return
        rung = self.ladder.rung
        try:
            segs = self.rungs[rung].segment([r[4] for r in ready],
                                            self.params['output_resolution'] == 'input')
        except Exception as exc:
            self._rung_failed(rung, exc)
            for r in ready:
                self._frame_failed(r[0], exc)
            return
        self._calls['calls'] += 1
        self._calls['frames'] += len(ready)
        self._calls['batched'] += len(ready) > 1
        for (cam, received, waited_ms, msg, rgb, t_conv), seg in zip(ready, segs):
            try:
                self._deliver(cam, msg, rgb, seg, received, waited_ms, t_conv)
            except Exception as exc:
                self._frame_failed(cam, exc)

    def _convert(self, cam: Camera, msg: Any) -> tuple[Any, np.ndarray, float]:
        """Return the message, its RGB frame and the time the conversion took (ms)."""
        t0 = time.perf_counter()
        if isinstance(msg, bytes):      # zero_copy: the frame as DDS delivered it
            msg = from_serialized(msg, self.image_type)
        cap = self.params['max_input_pixels']
        rgb = compressed_to_rgb(msg, cap, self._decoder_warning) \
            if self.image_type is CompressedImage else image_to_rgb(msg, cap)
        self._check_size(cam, rgb.shape[:2])
        return msg, rgb, (time.perf_counter() - t0) * 1e3

    def _process(self, cam: Camera, msg: Any, received: float) -> None:
        waited_ms = (time.monotonic() - received) * 1e3     # the hand-off to this thread
        msg, rgb, t_conv = self._convert(cam, msg)
        at_source = self.params['output_resolution'] == 'input'
        rung = self.ladder.rung      # the rung chosen after the previous frame
        try:
            seg = self.rungs[rung](rgb, at_source=at_source)
        except Exception as exc:
            self._rung_failed(rung, exc)
            raise
        self._deliver(cam, msg, rgb, seg, received, waited_ms, t_conv)

    def _deliver(self, cam: Camera, msg: Any, rgb: np.ndarray, seg, received: float,
                 waited_ms: float, t_conv: float) -> None:
        """Publish one frame's outputs and record its counters and stage latencies."""
        t2 = time.perf_counter()
        self._publish(cam, msg.header, seg.labels, rgb, seg.geometry)
        done = time.monotonic()      # the mask is out: what follows is bookkeeping
        publish_ms = (time.perf_counter() - t2) * 1e3
        cam.counters['published'] += 1
        cam.rate_out.tick()
        cam.lat['wait'].add(waited_ms)
        cam.lat['pre'].add(t_conv + seg.pre_ms)
        cam.lat['infer'].add(seg.infer_ms)
        cam.lat['post'].add(seg.post_ms)
        cam.lat['publish'].add(publish_ms)
        total_ms = (done - received) * 1e3
        cam.lat['receive_to_publish'].add(total_ms)
        cam.lat['own'].add(total_ms - seg.infer_ms)
        with self._ladder_lock:
            self.ladder.observe(total_ms, done, seg.infer_ms)
        age = self.get_clock().now().nanoseconds * 1e-9 - stamp_to_s(msg.header.stamp)
        if 0.0 <= age <= PLAUSIBLE_STAMP_AGE_S:
            cam.lat['end_to_end'].add(age * 1e3)
        else:
            cam.counters['stamp_off_clock'] += 1

    def _check_size(self, cam: Camera, size: tuple[int, int]) -> None:
        """Count and report (throttled) a camera whose frames change size; they are served."""
        if cam.size is not None and cam.size != size:
            cam.counters['size_changes'] += 1
            self.get_logger().warn(
                f'{cam.label}: frame size changed from {cam.size[1]}x{cam.size[0]} to '
                f'{size[1]}x{size[0]}; masks follow the frames', throttle_duration_sec=5.0)
        cam.size = size

    def _rung_failed(self, rung: int, exc: Exception) -> None:
        """Count a model failure; a ladder rung that keeps failing is left for good."""
        reason = f'{type(exc).__name__}: {shorten(str(exc))}'
        with self._ladder_lock:
            left = self.ladder.fail(rung, reason, time.monotonic())
        if left:
            self.get_logger().error(
                f'ladder rung {rung} ({self.rungs[rung].model_path}) failed '
                f'{self.ladder.policy.max_failures} frames in a row and is left: {reason}; now '
                f'on rung {self.ladder.rung}')

    def _decoder_warning(self, text: str) -> None:
        self.get_logger().warn(text, throttle_duration_sec=5.0)

    def _publish(self, cam: Camera, header, labels, rgb, geo) -> None:
        """Publish the class mask, and colour mask / overlay / camera info where wanted."""
        cam.pub_mask.publish(mask_message(labels, header, self.params['zero_copy']))
        want_color = cam.pub_color.get_subscription_count() > 0
        want_overlay = cam.pub_overlay.get_subscription_count() > 0
        info = self._camera_info_for(cam, geo)
        if want_color or want_overlay or info is not None:
            header = ros_header(header)
        if want_color or want_overlay:
            color = colorize(labels, self.rungs[0].card)
            if want_color:
                m = Image()
                fill_image(m, color, 'rgb8', header)
                cam.pub_color.publish(m)
            if want_overlay:
                shown = rgb if rgb.shape[:2] == labels.shape else \
                    cv2.resize(rgb, (labels.shape[1], labels.shape[0]))
                m = Image()
                fill_image(m, overlay(shown, color, self.params['overlay_alpha']), 'rgb8',
                           header)
                cam.pub_overlay.publish(m)
        if info is not None:
            cam.pub_info.publish(scaled_camera_info(info, geo, labels.shape[0], labels.shape[1],
                                                    header, self.rungs[0].card.output_stride))

    def _camera_info_for(self, cam: Camera, geo) -> Optional[CameraInfo]:
        """Return the camera's info if it describes frames of this size (else warn, None)."""
        info = cam.info
        if info is None or (info.width, info.height) in ((0, 0), (geo.src_width,
                                                                  geo.src_height)):
            return info
        cam.counters['camera_info_mismatch'] += 1
        self.get_logger().warn(
            f'{cam.label}: camera_info is {info.width}x{info.height}, the frame '
            f'{geo.src_width}x{geo.src_height}: its camera_info is not republished',
            throttle_duration_sec=5.0)
        return None

    # ------------------------------------------------------------------ diagnostics
    def lifecycle_state(self) -> Optional[str]:
        """Return the managed node's state label (None: not a managed node)."""
        return None

    def _model_values(self) -> dict[str, Any]:
        """Return the diagnostic key/values of the loaded models ({} when none are)."""
        if not self.rungs:
            return {}
        values: dict[str, Any] = {
            'backend': self.backend_name, 'model': str(self.pipeline.model_path),
            'precision': self.card.precision.get('default', 'fp32'),
            'token_budget': self.card.reduction.get('keep', self.card.reduction.get('policy')),
            'reduction_policy': self.card.reduction.get('policy', 'none'),
            'active_model': self.card.name, 'active_rung': self.ladder.rung,
            'ladder_rungs': len(self.rungs),
            'latency_budget_ms': self.params['latency_budget_ms'],
            'ladder_switches': self.ladder.switches,
            'ladder_rungs_failed': len(self.ladder.failed),
        }
        if self.card.batch > 1:     # frames of several cameras per model call
            calls = self._calls
            values.update({'model_batch': self.card.batch, 'model_calls': calls['calls'],
                           'batched_calls': calls['batched'],
                           'frames_per_call': f'{calls["frames"] / max(calls["calls"], 1):.2f}'})
        with self._ladder_lock:
            spent = self.ladder.time_on_rungs(time.monotonic())
        for k, (r, secs) in enumerate(zip(self.rungs, spent)):
            values[f'rung{k}_model'] = r.card.name
            values[f'rung{k}_seconds'] = f'{secs:.1f}'
            values[f'rung{k}_reference_ms'] = f'{self.ladder.reference[k]:.1f}'
            if k in self.ladder.failed:
                values[f'rung{k}_failed'] = self.ladder.failed[k]
        return values

    def diagnostic_statuses(self) -> list[DiagnosticStatus]:
        """Return the node's status, then one per named camera.

        One camera without a name: one status with everything (its level is the camera's).
        Named cameras: the node's status takes the worst camera's level and names the cameras
        not OK; each camera has its own status with its rates, drops and latencies. A managed
        node that is not active reports its lifecycle state, level OK.
        """
        now = time.monotonic()
        fqn = self.get_fully_qualified_name()
        st = DiagnosticStatus(name=f'{fqn}: {STATUS_TASK}', hardware_id=fqn)
        values = {'cpu_cores_used': f'{self.cpu.cores():.2f}', **self._model_values(),
                  'dds_profile': str(profile_in_use() or 'none'),
                  'publishers_matched': sum(self._arrival(c).publishers for c in self.cameras)}
        state = self.lifecycle_state()
        if state is not None:
            values['lifecycle_state'] = state
        if self.rungs:
            st.hardware_id = f'{fqn}:{self.backend_name}:{self.card.name}'
        statuses = [st]
        p = self.params
        levels = [(c, *(silent_level(self._arrival(c), c.sub_image, camera_hint(profile_in_use()),
                                     now) or c.level(now, p['stale_timeout'], p['expected_fps'])))
                  for c in self.cameras]
        if len(self.cameras) == 1 and not self.cameras[0].name:
            values.update(self.cameras[0].values(now))
            st.level, st.message = levels[0][1:]
        elif levels:
            for cam, level, message in levels:
                cs = DiagnosticStatus(name=f'{st.name}: camera {cam.name}', level=level,
                                      message=message,
                                      hardware_id=st.hardware_id.replace(
                                          fqn, f'{fqn}/{cam.name}', 1))
                cs.values = [KeyValue(key=k, value=str(v)) for k, v in cam.values(now).items()]
                statuses.append(cs)
            st.level = max(level for _, level, _ in levels)
            bad = [f'{c.name}: {m}' for c, level, m in levels if level != DiagnosticStatus.OK]
            st.message = '; '.join(bad) or f'{len(self.cameras)} cameras OK'
        if state is not None and state != 'active':
            st.level, st.message = DiagnosticStatus.OK, f'lifecycle state {state}'
            statuses = [st]
        st.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        return statuses

    def _arrival(self, cam: Camera) -> ArrivalWatch:
        """Return the camera's watch for frames that never arrive."""
        return self._arrivals.setdefault(cam.name, ArrivalWatch())

    def _watch_arrivals(self) -> None:
        """Say once per camera, with the fix, when a matched publisher's frames never arrive."""
        now = time.monotonic()
        for cam in self.cameras:
            watch, sub = self._arrival(cam), cam.sub_image
            count = 0 if sub is None else sub.get_publisher_count() \
                if hasattr(sub, 'get_publisher_count') else self.count_publishers(sub.topic_name)
            watch.update(count, cam.counters['received'], now)      # Humble: count_publishers
            if watch.first_report(now):
                self.get_logger().warn(
                    f'{count} publisher(s) matched on {sub.topic_name} for '
                    f'{watch.after_s:.0f} s and no frame arrived: '
                    f'{camera_hint(profile_in_use())}')

    def publish_diagnostics(self) -> None:
        """Publish one DiagnosticArray on /diagnostics."""
        self._watch_arrivals()
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = self.diagnostic_statuses()
        self.pub_diag.publish(arr)

    def stop(self) -> None:
        """Stop the worker thread."""
        if self._worker is not None:
            self._worker.stop()


class SegmentationNode(SegmentationCore, Node):
    """Camera(s) in, masks out, from start to shutdown; see the module docstring."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__('vit_seg_node', **kwargs)
        self._declare_parameters()
        try:
            self._load_models()
        except UserError as exc:
            raise StartupError(f'cannot load model: {exc}') from None
        self._open_cameras(self.create_publisher)
        self._start_input()
        self.diag_timer = self.create_timer(1.0, self.publish_diagnostics)
        self.get_logger().info(f'ready: {self._ready_line()}')


def main(args: Optional[list[str]] = None) -> int:
    """Run the node until shutdown; exit code 1 with one fatal line if it cannot start."""
    return run_node(SegmentationNode, args, usage_text())


if __name__ == '__main__':
    sys.exit(main(sys.argv))
