"""Benchmark: what the node adds over raw backend inference on the same frames.

Raw: ``backend.infer`` on the pre-processed frame, in this process. Node: publish a 480x360 rgb8
frame to a running ``vit_seg_node`` (its own process, same backend and threads) over Fast DDS and
wait for ``~/class_mask``; one frame in flight at a time, so nothing queues. The overhead is
``median(node) / median(raw) - 1``: conversion, pre/post-processing, DDS transport both ways.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Optional

import numpy as np

from vit_seg_node.core.io import write_json
from vit_seg_node.core.stats import percentiles


def raw_latencies(model: Optional[str], frames: list[np.ndarray], runs: int,
                  threads: int) -> list[float]:
    """Return ``runs`` latencies (ms) of ``backend.infer`` on pre-processed frames (warmed up)."""
    from vit_seg_node.pipeline import SegmentationPipeline
    from vit_seg_node.core.processing import preprocess

    pipe = SegmentationPipeline(model, threads=threads)
    batches = [preprocess(f, pipe.card)[0] for f in frames]
    for b in batches[:3]:
        pipe.backend.infer(b)
    raw = []
    for i in range(runs):
        t = time.perf_counter()
        pipe.backend.infer(batches[i % len(batches)])
        raw.append((time.perf_counter() - t) * 1e3)
    return raw


def node_latencies(model: Optional[str], frames: list[np.ndarray], runs: int, threads: int,
                   domain: int) -> list[float]:
    """Return publish-to-mask latencies (ms) through a node process, one frame in flight."""
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
    probe = Probe(domain, 'overhead_probe')
    params = {'threads': threads, **reliable_overrides('/camera/image_raw'),
              **({'model_path': model} if model else {})}
    runner = NodeProcess(domain, params, ['-r', 'image:=/camera/image_raw'])
    e2e = []
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
            time.sleep(0.05)
    finally:
        probe.close()
        runner.stop()
    return e2e


def measure(model: Optional[str], frames: list[np.ndarray], runs: int = 40, threads: int = 2,
            domain: int = 58, out_json: Optional[str] = None) -> dict:
    """Return raw and end-to-end latency percentiles and the overhead ratio."""
    raw = raw_latencies(model, frames, runs, threads)
    e2e = node_latencies(model, frames, runs, threads, domain)
    qs = (50, 95)
    report = {'raw_infer_ms': percentiles(raw, qs),
              'node_end_to_end_ms': percentiles(e2e, qs) if e2e else None,
              'overhead': (float(np.median(e2e)) / float(np.median(raw)) - 1.0) if e2e else None,
              'frames': len(frames), 'runs': runs, 'answered': len(e2e), 'threads': threads,
              'resolution': f'{frames[0].shape[1]}x{frames[0].shape[0]}',
              'cpu_count': os.cpu_count()}
    if out_json:
        write_json(out_json, report)
    return report
