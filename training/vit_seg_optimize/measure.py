"""Measurements on the machine of the run: what it is, how fast its kernels are, how fast a model.

Every timing is recorded with ``machine_info`` (the CPU changes between machines, and the plan
tuned on one does not hold on another). Sessions come from the one factory,
``vit_seg_node.backends.onnxruntime_backend.make_session``. The probes are plain functions so
that the benchmark can take others (tests inject cheap ones).
"""

from __future__ import annotations

import io
import os
from pathlib import Path
import time
from typing import Any, Optional

import numpy as np

from vit_seg_node.backends.onnxruntime_backend import make_session
from vit_seg_node.core.machine import machine_record
from vit_seg_node.core.stats import percentiles as _percentiles


def percentiles(times_ms: list[float]) -> dict[str, float]:
    """Return p50/p90/p99 of latencies in ms."""
    return _percentiles(times_ms, (50, 90, 99))


def session(path: str | os.PathLike | bytes, threads: int, spinning: bool = True):
    """Return a CPU ONNX Runtime session with a fixed thread count."""
    return make_session(path, threads, spinning=spinning)


def machine_info(threads: int) -> dict[str, Any]:
    """Return what the numbers depend on: ``core.machine.machine_record`` and torch's version."""
    import torch

    return {**machine_record(threads), 'torch': torch.__version__}


def time_session(sess, feed: dict[str, np.ndarray], warmup: int, runs: int) -> dict[str, float]:
    """Return latency percentiles (ms) of ``sess.run`` after ``warmup`` runs."""
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return percentiles(times)


def time_interleaved(sessions: list, feeds: list[dict], warmup: int, runs: int,
                     burst: int = 5) -> list[dict[str, float]]:
    """Time several sessions in rounds: each round runs every session ``burst`` times in turn.

    Timing variants one after another lets a shared machine's drift (we saw the same model at 64
    and 77 ms an hour apart) leak into their ratios; in rounds, every variant sees the same
    conditions. A burst keeps each model's own caches warm, as when it runs alone on a robot.
    Returns per session the percentiles (ms) of ``runs`` timed runs after ``warmup`` runs.
    """
    for sess, feed in zip(sessions, feeds):
        for _ in range(warmup):
            sess.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    rounds = -(-runs // burst)
    for i in range(rounds):
        order = list(range(len(sessions)))
        order = order[i % len(order):] + order[:i % len(order)]   # rotate who goes first
        for k in order:
            sessions[k].run(None, feeds[k])   # one untimed run after the previous model
            for _ in range(burst):
                t = time.perf_counter()
                sessions[k].run(None, feeds[k])
                times[k].append((time.perf_counter() - t) * 1e3)
    return [percentiles(t[:runs]) for t in times]


def memory_bandwidth(size_mb: int = 256, repeats: int = 5) -> float:
    """Return this moment's memory copy bandwidth in GB/s (read + write, best of ``repeats``).

    Recorded beside every timing as one reading of the shared machine's state: the FP32
    baseline swings far more than the reduced models between runs, and this says whether main
    memory was contended at the time (so far it was not what differed: 22-24 GB/s in runs whose
    baselines differed by 25 %).
    """
    src = np.ones(size_mb * (1 << 20) // 8)
    dst = np.empty_like(src)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2.0 * src.nbytes / best / 1e9


# (M, K, N) of the GEMMs the models run (ViT-Ti at 352x480: 660 tokens, 192 channels) and a
# large square one; the peak is the best rate among them
PEAK_SHAPES = ((660, 192, 576), (660, 192, 768), (660, 768, 192), (1024, 1024, 1024))


def _gemm_model(m: int, k: int, n: int, precision: str) -> tuple[bytes, dict]:
    """Return a one-MatMul ONNX model and its feed: FP32, or U8S8 (``MatMulInteger``)."""
    import onnx
    from onnx import helper, TensorProto

    rng = np.random.default_rng(0)
    if precision == 'int8':
        a = helper.make_tensor_value_info('a', TensorProto.UINT8, [m, k])
        w = rng.integers(-127, 127, (k, n), dtype=np.int8)
        node = helper.make_node('MatMulInteger', ['a', 'w'], ['y'])
        y = helper.make_tensor_value_info('y', TensorProto.INT32, [m, n])
        init = [helper.make_tensor('w', TensorProto.INT8, w.shape, w.tobytes(), raw=True)]
        feed = {'a': rng.integers(0, 255, (m, k), dtype=np.uint8)}
    else:
        a = helper.make_tensor_value_info('a', TensorProto.FLOAT, [m, k])
        w = rng.standard_normal((k, n)).astype(np.float32)
        node = helper.make_node('MatMul', ['a', 'w'], ['y'])
        y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [m, n])
        init = [helper.make_tensor('w', TensorProto.FLOAT, w.shape, w.tobytes(), raw=True)]
        feed = {'a': rng.standard_normal((m, k)).astype(np.float32)}
    model = helper.make_model(helper.make_graph([node], 'gemm', [a], [y], init),
                              opset_imports=[helper.make_opsetid('', 17)])
    buf = io.BytesIO()
    onnx.save(model, buf)
    return buf.getvalue(), feed


def gemm_peak(threads: int, precision: str, shapes=PEAK_SHAPES, runs: int = 20) -> float:
    """Return this machine's best GEMM rate in G(FL)OP/s through ONNX Runtime's own kernels.

    Each shape is timed ``runs`` times after warm-up and rated by its fastest run; the peak is
    the best rate over the shapes, so that a model's achieved rate (its FLOPs over its latency)
    stays below it.
    """
    best = 0.0
    for m, k, n in shapes:
        model, feed = _gemm_model(m, k, n, precision)
        sess = make_session(model, threads)
        for _ in range(3):
            sess.run(None, feed)
        fastest = np.inf
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, feed)
            fastest = min(fastest, time.perf_counter() - t)
        best = max(best, 2.0 * m * k * n / fastest / 1e9)
    return best


def paired_gain(sess_a, sess_b, feed: dict, pairs: int = 25) -> tuple[float, float]:
    """Return (median of t_b - t_a in ms, its ~2-sigma noise), runs interleaved A, B, A, B...

    Interleaving cancels the drift of a shared machine that separate timings of A and B suffer
    (we saw single-group "gains" of +-15 ms from that alone).
    """
    for s in (sess_a, sess_b, sess_a, sess_b):
        s.run(None, feed)
    d = []
    for _ in range(pairs):
        t0 = time.perf_counter()
        sess_a.run(None, feed)
        t1 = time.perf_counter()
        sess_b.run(None, feed)
        d.append(((time.perf_counter() - t1) - (t1 - t0)) * 1e3)
    d = np.asarray(d)
    mad = 1.4826 * np.median(np.abs(d - np.median(d)))
    return float(np.median(d)), float(2.0 * 1.2533 * mad / np.sqrt(len(d)))


def evaluate_onnx(path: Path, card, data: str, split: str, threads: int,
                  limit: Optional[int] = None) -> dict:
    """Score an ONNX model on a split through the runtime's pre/post-processing."""
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.core.evaluate import evaluate_predictor

    sess = session(path, threads)
    ds = SegmentationDataset(data, split, None, cache=False)
    pairs = (ds.load(i) for i in range(len(ds)))
    return evaluate_predictor(lambda x: sess.run([card.output_name], {card.input_name: x})[0],
                              pairs, card, limit=limit)
