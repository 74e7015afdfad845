"""Benchmark: what the node adds over raw backend inference on the same frames.

Raw: ``backend.infer`` on the pre-processed frame, in this process, one call every ``gap_s``
seconds. Node: publish a 480x360 rgb8 frame to a running ``vit_seg_node`` (its own process, same
backend and threads) over Fast DDS every ``gap_s`` seconds and wait for ``~/class_mask``; one frame
in flight at a time, so nothing queues. Both sides see the same spacing between frames (a camera's
frame period), so the thread pool and caches are equally warm and the difference is what the node
adds. The overhead is ``median(node) / median(raw) - 1``: conversion, pre/post-processing, worker
hand-off, DDS transport both ways. The node's own stage medians (from its ``/diagnostics``) split
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


def raw_latencies(model: Optional[str], frames: list[np.ndarray], runs: int, threads: int,
                  gap_s: float = 0.0, spinning: bool = True) -> list[float]:
    """Return ``runs`` latencies (ms) of ``backend.infer``, one call every ``gap_s`` seconds.

    Pre-processed frames, warmed up first.
    """
    from vit_seg_node.pipeline import SegmentationPipeline
    from vit_seg_node.core.processing import preprocess

    pipe = SegmentationPipeline(model, threads=threads, spinning=spinning)
    batches = [preprocess(f, pipe.card)[0] for f in frames]
    for b in batches[:3]:
        pipe.backend.infer(b)
    raw = []
    for i in range(runs):
        t = time.perf_counter()
        pipe.backend.infer(batches[i % len(batches)])
        raw.append((time.perf_counter() - t) * 1e3)
        time.sleep(gap_s)
    return raw


def node_latencies(model: Optional[str], frames: list[np.ndarray], runs: int, threads: int,
                   domain: int, gap_s: float = 0.05, module: str = 'vit_seg_node.ros.node',
                   executor: str = 'single',
                   spinning: bool = True) -> tuple[list[float], dict[str, str]]:
    """Return publish-to-mask latencies (ms) through a node process and its last diagnostics.

    One frame in flight; the diagnostics hold the node's own stage latencies. ``module`` picks
    the node (the relay measures the floor); ``executor`` is the rclpy executor of the node and
    of the client that times it.
    """
    from sensor_msgs.msg import Image

    from vit_seg_node.eval.harness import NodeProcess, Probe, reliable, reliable_overrides, \
        terminate_on_sigterm, wait_for
    from vit_seg_node.ros.convert import fill_image

    msgs = []
    for f in frames:
        m = Image()
        fill_image(m, f, 'rgb8', m.header)
        m.header.frame_id = 'camera'
        msgs.append(m)
    terminate_on_sigterm()
    probe = Probe(domain, 'overhead_probe', executor)
    params = {'threads': threads, 'executor': executor, **reliable_overrides('/camera/image_raw'),
              'cpu_spinning': spinning, **({'model_path': model} if model else {})}
    runner = NodeProcess(domain, params, ['-r', 'image:=/camera/image_raw'], module=module)
    e2e: list[float] = []
    diagnostics: dict[str, str] = {}
    try:
        runner.wait_ready(probe)
        got = threading.Event()
        probe.node.create_subscription(Image, '/vit_seg_node/class_mask',
                                       lambda m: got.set(), reliable(5))
        pub = probe.publisher(Image, '/camera/image_raw', reliable(5))
        wait_for(lambda: pub.get_subscription_count() and
                 probe.node.count_publishers('/vit_seg_node/class_mask'), 30)
        time.sleep(0.5)
        for i in range(runs + 3):
            got.clear()
            t = time.perf_counter()
            pub.publish(msgs[i % len(msgs)])
            if got.wait(10) and i >= 3:
                e2e.append((time.perf_counter() - t) * 1e3)
            time.sleep(gap_s)
        n = len(probe.diagnostics)
        wait_for(lambda: len(probe.diagnostics) > n, 5)
        diagnostics = probe.last_diagnostics()
    finally:
        probe.close()
        runner.stop()
    return e2e, diagnostics


def node_stages(diagnostics: dict[str, str]) -> dict[str, float]:
    """Return the node's median stage latencies (ms) from its diagnostics key/values."""
    stages = {}
    for stage in ('pre', 'infer', 'post', 'receive_to_publish'):
        v = diagnostics.get(f'latency_{stage}_p50_ms')
        if v is not None:
            stages[stage] = float(v)
    return stages


def measure(model: Optional[str], frames: list[np.ndarray], runs: int = 40, threads: int = 2,
            domain: int = 58, out_json: Optional[str] = None, gap_s: float = 0.05,
            executor: str = 'single', spinning: bool = True) -> dict:
    """Return raw and end-to-end latency percentiles, the node's stages and the overhead."""
    raw = raw_latencies(model, frames, runs, threads, gap_s, spinning)
    e2e, diagnostics = node_latencies(model, frames, runs, threads, domain, gap_s,
                                      executor=executor, spinning=spinning)
    floor, _ = node_latencies(None, frames, runs, threads, domain, gap_s,
                              module='vit_seg_node.ros.relay', executor=executor)
    qs = (50, 95)
    stages = node_stages(diagnostics)
    raw_p50 = float(np.median(raw))
    e2e_p50 = float(np.median(e2e)) if e2e else None
    floor_p50 = float(np.median(floor)) if floor else None
    report = {'raw_infer_ms': percentiles(raw, qs),
              'node_end_to_end_ms': percentiles(e2e, qs) if e2e else None,
              'overhead': e2e_p50 / raw_p50 - 1.0 if e2e else None,
              'relay_floor_ms': percentiles(floor, qs) if floor else None,
              'overhead_above_floor': (e2e_p50 - floor_p50) / raw_p50 - 1.0
              if e2e and floor else None,
              'node_stages_p50_ms': stages,
              'transport_ms': e2e_p50 - stages['receive_to_publish']
              if e2e and 'receive_to_publish' in stages else None,
              'executor': executor, 'cpu_spinning': spinning, 'gap_s': gap_s,
              'frames': len(frames), 'runs': runs, 'answered': len(e2e), 'threads': threads,
              'resolution': f'{frames[0].shape[1]}x{frames[0].shape[0]}',
              'machine': machine_record(threads)}
    if out_json:
        write_json(out_json, report)
    return report
