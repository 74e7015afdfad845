"""Benchmark: what the node adds over raw backend inference on the same frames.

Raw: ``backend.infer`` on the pre-processed frame, in this process, one call every ``gap_s``
seconds. Node: publish a 480x360 rgb8 frame to a running ``vit_seg_node`` (its own process, same
backend and threads) over Fast DDS every ``gap_s`` seconds and wait for ``~/class_mask``; one frame
in flight at a time, so nothing queues. Both sides see the same spacing between frames (a camera's
frame period), so the thread pool and caches are equally warm, and they alternate in blocks, so
the machine's drift slows both alike: the difference is what the node adds. The overhead is
``median(node) / median(raw) - 1``: conversion, pre/post-processing, worker hand-off, DDS
transport both ways. The node's own stage medians (from its ``/diagnostics``) split
that into time inside the node and time in transport, and the same frames through
``vit_seg_node.ros.relay`` (the node's topics and worker thread, no model) measure the floor that
any Python node pays for DDS, the executor and the hand-off on this machine: the overhead above
that floor is what segmentation adds.
"""

from __future__ import annotations

import threading
import time
from typing import Optional

import numpy as np

from vit_seg_node.core.io import write_json
from vit_seg_node.core.machine import machine_record
from vit_seg_node.core.stats import percentiles


def mask_stamp(msg) -> int:
    """Return the nanosec field of a mask's stamp (serialized or a message); -1 if unreadable."""
    from sensor_msgs.msg import Image

    from vit_seg_node.ros.convert import FrameError, from_serialized

    if isinstance(msg, bytes):
        try:
            msg = from_serialized(msg, Image)
        except FrameError:
            return -1
    return int(msg.header.stamp.nanosec)


class RawInference:
    """``backend.infer`` in this process, each call right after pre-processing its frame.

    The node pre-processes a frame and then runs the model, so its CPU is busy when inference
    starts; calling ``infer`` straight out of a sleep instead measured 27.7 against 24.2 ms on a
    2-core VM (``experiments/frame_path.py``). Only ``infer`` is timed.
    """

    def __init__(self, model: Optional[str], frames: list[np.ndarray], threads: int,
                 spinning: bool = True) -> None:
        from vit_seg_node.pipeline import SegmentationPipeline
        from vit_seg_node.core.processing import Preprocessor

        self.pipe = SegmentationPipeline(model, threads=threads, spinning=spinning)
        self.frames = frames
        self.prep = Preprocessor(self.pipe.card)
        for f in frames[:3]:
            self.pipe.backend.infer(self.prep(f)[0])
        self.calls = 0

    def time(self, runs: int, gap_s: float) -> list[float]:
        """Return ``runs`` latencies (ms), one call every ``gap_s`` seconds."""
        out = []
        for _ in range(runs):
            batch, _ = self.prep(self.frames[self.calls % len(self.frames)])
            t = time.perf_counter()
            self.pipe.backend.infer(batch)
            out.append((time.perf_counter() - t) * 1e3)
            self.calls += 1
            time.sleep(gap_s)
        return out


class NodeSession:
    """A node process (or the relay) on ``domain`` and a client that times frames through it.

    The client publishes frames serialized in advance and takes the mask serialized, timing its
    arrival in the subscription callback, so that a figure holds what the node and DDS add and
    not the client's own message conversions (``serialized_client=False``: rclpy messages both
    ways). One frame in flight. Each frame's stamp is its index in ``frames``, and a mask counts
    only if it carries the stamp of the frame in flight: the answer to a frame that timed out,
    arriving late, is counted in ``late`` and not taken for the next frame's. ``executor`` is the
    rclpy executor of the node and of the client; ``zero_copy`` the node's parameter. Use as a
    context manager.
    """

    def __init__(self, model: Optional[str], frames: list[np.ndarray], threads: int,
                 domain: int, module: str = 'vit_seg_node.ros.node', executor: str = 'single',
                 spinning: bool = True, zero_copy: bool = True,
                 serialized_client: bool = True) -> None:
        from rclpy.serialization import serialize_message
        from sensor_msgs.msg import Image

        from vit_seg_node.core.lifetime import terminate_on_sigterm, uninterrupted
        from vit_seg_node.eval.harness import NodeProcess, Probe, reliable, \
            reliable_overrides, wait_for
        from vit_seg_node.ros.convert import fill_image

        self.msgs = []
        for i, f in enumerate(frames):
            m = Image()
            fill_image(m, f, 'rgb8', m.header)
            m.header.frame_id = 'camera'
            m.header.stamp.nanosec = i      # which frame a mask answers
            self.msgs.append(serialize_message(m) if serialized_client else m)
        params = {'executor': executor, 'zero_copy': zero_copy,
                  **reliable_overrides('/camera/image_raw'),
                  **({} if module.endswith('relay') else {'threads': threads,
                                                          'cpu_spinning': spinning}),
                  **({'model_path': model} if model else {})}
        self._got = threading.Event()
        self._arrived = 0.0
        self._sent = 0
        self._in_flight = -1
        self.late = 0
        self.probe: Optional[Probe] = None
        self.runner: Optional[NodeProcess] = None
        terminate_on_sigterm()
        try:
            with uninterrupted():   # a signal here comes once both are assigned
                self.probe = Probe(domain, f'overhead_probe_{domain}', executor)  # name: session
                self.runner = NodeProcess(domain, params, ['-r', 'image:=/camera/image_raw'],
                                          module=module)
            self.runner.wait_ready(self.probe)
            self.probe.node.create_subscription(Image, '/vit_seg_node/class_mask',
                                                self._on_mask, reliable(5),
                                                raw=serialized_client)
            self.pub = self.probe.publisher(Image, '/camera/image_raw', reliable(5))
            wait_for(lambda: self.pub.get_subscription_count() and
                     self.probe.node.count_publishers('/vit_seg_node/class_mask'), 30)
            time.sleep(0.5)
            self.time(3, 0.05)      # warm-up
        except BaseException:
            self.close()
            raise

    def _on_mask(self, msg) -> None:
        arrived = time.perf_counter()
        if mask_stamp(msg) != self._in_flight:
            self.late += 1
            return
        self._arrived = arrived
        self._got.set()

    def time(self, runs: int, gap_s: float) -> list[float]:
        """Return publish-to-mask latencies (ms) of ``runs`` frames, ``gap_s`` apart."""
        out = []
        for _ in range(runs):
            self._got.clear()
            self._in_flight = self._sent % len(self.msgs)
            t = time.perf_counter()
            self.pub.publish(self.msgs[self._in_flight])
            self._sent += 1
            if self._got.wait(10):
                out.append((self._arrived - t) * 1e3)
            time.sleep(gap_s)
        return out

    def diagnostics(self) -> dict[str, str]:
        """Return the key/values of the node's next status on /diagnostics: its stage latencies."""
        from vit_seg_node.eval.harness import wait_for

        n = len(self.probe.diagnostics)
        wait_for(lambda: len(self.probe.diagnostics) > n, 5)
        return self.probe.last_diagnostics()

    def close(self) -> None:
        """Stop the client and the node process (a signal meanwhile comes afterwards)."""
        from vit_seg_node.core.lifetime import uninterrupted

        with uninterrupted():
            if self.probe is not None:
                self.probe.close()
            if self.runner is not None:
                self.runner.stop()

    def __enter__(self) -> 'NodeSession':
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def node_latencies(model: Optional[str], frames: list[np.ndarray], runs: int, threads: int,
                   domain: int, gap_s: float = 0.05, **session) -> tuple[list[float],
                                                                         dict[str, str]]:
    """Time ``runs`` frames through a node process; return the latencies (ms) and diagnostics.

    ``session``: ``NodeSession``'s options (``module``, ``executor``, ``zero_copy``, ...).
    """
    with NodeSession(model, frames, threads, domain, **session) as node:
        return node.time(runs, gap_s), node.diagnostics()


def node_stages(diagnostics: dict[str, str]) -> dict[str, float]:
    """Return the node's median stage latencies (ms) from its diagnostics key/values.

    ``own``: receive-to-publish minus inference, frame by frame (the node's own work; the
    difference of the two medians would carry the inference's spread).
    """
    stages = {}
    for stage in ('wait', 'pre', 'infer', 'post', 'publish', 'receive_to_publish', 'own'):
        v = diagnostics.get(f'latency_{stage}_p50_ms')
        if v is not None:
            stages[stage] = float(v)
    return stages


def measure(model: Optional[str], frames: list[np.ndarray], runs: int = 40, threads: int = 2,
            domain: int = 58, out_json: Optional[str] = None, gap_s: float = 0.05,
            executor: str = 'single', spinning: bool = True, zero_copy: bool = True,
            blocks: int = 4) -> dict:
    """Return raw and end-to-end latency percentiles, the node's stages and the overhead.

    Raw inference and the node are timed in ``blocks`` alternating blocks of ``runs / blocks``
    frames (the node process stays up between them), so that a machine whose speed drifts over
    minutes slows both alike; then the relay's floor.
    """
    options = dict(executor=executor, spinning=spinning, zero_copy=zero_copy)
    blocks = max(1, min(blocks, runs))
    sizes = [runs // blocks + (k < runs % blocks) for k in range(blocks)]
    raw_timer = RawInference(model, frames, threads, spinning)
    raw: list[float] = []
    e2e: list[float] = []
    with NodeSession(model, frames, threads, domain, **options) as node:
        for n in sizes:
            raw += raw_timer.time(n, gap_s)
            e2e += node.time(n, gap_s)
        diagnostics = node.diagnostics()
        late = node.late
    del raw_timer
    floor, _ = node_latencies(None, frames, runs, threads, domain, gap_s,
                              module='vit_seg_node.ros.relay', **options)
    qs = (50, 95)
    stages = node_stages(diagnostics)
    raw_p50 = float(np.median(raw))
    e2e_p50 = float(np.median(e2e)) if e2e else None
    floor_p50 = float(np.median(floor)) if floor else None
    report = {'raw_infer_ms': percentiles(raw, qs),
              'node_end_to_end_ms': percentiles(e2e, qs) if e2e else None,
              'overhead': e2e_p50 / raw_p50 - 1.0 if e2e else None,
              # against the node's own inference median: free of any difference between this
              # process's inference and the node's (they measured up to 2 ms apart)
              'overhead_vs_node_infer': e2e_p50 / stages['infer'] - 1.0
              if e2e and stages.get('infer') else None,
              'relay_floor_ms': percentiles(floor, qs) if floor else None,
              'overhead_above_floor': (e2e_p50 - floor_p50) / raw_p50 - 1.0
              if e2e and floor else None,
              'node_stages_p50_ms': stages,
              'transport_ms': e2e_p50 - stages['receive_to_publish']
              if e2e and 'receive_to_publish' in stages else None,
              'executor': executor, 'cpu_spinning': spinning, 'zero_copy': zero_copy,
              'gap_s': gap_s, 'blocks': blocks,
              'frames': len(frames), 'runs': runs, 'answered': len(e2e), 'late_masks': late,
              'threads': threads,
              'resolution': f'{frames[0].shape[1]}x{frames[0].shape[0]}',
              'machine': machine_record(threads)}
    if out_json:
        write_json(out_json, report)
    return report
