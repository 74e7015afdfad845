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

from vit_seg_node.runtime.card import atomic_write_text


def measure(model: Optional[str], frames: list[np.ndarray], runs: int = 40, threads: int = 2,
            domain: int = 58, out_json: Optional[str] = None) -> dict:
    """Return raw and end-to-end latency percentiles and the overhead ratio."""
    import json

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from vit_seg_node.bags.replay import NodeRunner
    from vit_seg_node.runtime.pipeline import SegmentationPipeline
    from vit_seg_node.runtime.processing import preprocess

    pipe = SegmentationPipeline(model, threads=threads)
    batches = [preprocess(f, pipe.card)[0] for f in frames]
    for b in batches[:3]:
        pipe.backend.infer(b)
    raw = []
    for i in range(runs):
        t = time.perf_counter()
        pipe.backend.infer(batches[i % len(batches)])
        raw.append((time.perf_counter() - t) * 1e3)
    del pipe
    runner = NodeRunner(model, '/camera/image_raw', False, 'reliable', domain, threads)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node('overhead_probe', context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    qos = QoSProfile(reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST,
                     depth=5)
    got = threading.Event()
    node.create_subscription(Image, '/vit_seg_node/class_mask', lambda m: got.set(), qos)
    pub = node.create_publisher(Image, '/camera/image_raw', qos)
    stop = False

    def spin() -> None:
        while not stop and ctx.ok():
            ex.spin_once(timeout_sec=0.02)
    th = threading.Thread(target=spin, daemon=True)
    th.start()
    msgs = []
    for f in frames:
        m = Image(height=f.shape[0], width=f.shape[1], encoding='rgb8', step=f.shape[1] * 3)
        m.data = np.ascontiguousarray(f).tobytes()
        m.header.frame_id = 'camera'
        msgs.append(m)
    e2e = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not (pub.get_subscription_count() and
                                              node.count_publishers('/vit_seg_node/class_mask')):
            time.sleep(0.05)
        time.sleep(0.5)
        for i in range(runs + 3):
            got.clear()
            t = time.perf_counter()
            pub.publish(msgs[i % len(msgs)])
            if not got.wait(10):
                continue
            if i >= 3:
                e2e.append((time.perf_counter() - t) * 1e3)
            time.sleep(0.05)
    finally:
        stop = True
        th.join(2)
        node.destroy_node()
        ctx.try_shutdown()
        runner.stop()
    pct = (lambda a: {'p50': float(np.median(a)), 'p95': float(np.percentile(a, 95))})
    report = {'raw_infer_ms': pct(raw), 'node_end_to_end_ms': pct(e2e) if e2e else None,
              'overhead': (float(np.median(e2e)) / float(np.median(raw)) - 1.0) if e2e else None,
              'frames': len(frames), 'runs': runs, 'answered': len(e2e), 'threads': threads,
              'resolution': f'{frames[0].shape[1]}x{frames[0].shape[0]}',
              'cpu_count': os.cpu_count()}
    if out_json:
        atomic_write_text(out_json, json.dumps(report, indent=2) + '\n')
    return report
