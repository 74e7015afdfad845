"""Time one activation-activation MatMul in each numeric form ONNX Runtime's CPU kernels offer.

Why ``vit_seg_optimize.static_int8`` exists: an attention product (3 heads, 660 tokens, 64
channels per
head at 352x480) as FP32 ``MatMul`` and as ``MatMulInteger`` with uint8 x uint8 (what dynamic
quantization produces), int8 x int8 (static QDQ with int8 activations) and uint8 x int8 (the
form ``static_int8`` writes), both operands inputs of the graph, timed in interleaved rounds.

    python -m experiments.matmul_kinds --out docs/results/quant/matmul_kinds.json
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vit_seg_node.backends.onnxruntime_backend import make_session

KINDS = {   # name: (A type, B type, op)
    'fp32': ('float32', 'float32', 'MatMul'),
    'u8u8': ('uint8', 'uint8', 'MatMulInteger'),
    's8s8': ('int8', 'int8', 'MatMulInteger'),
    'u8s8': ('uint8', 'int8', 'MatMulInteger'),
}


def _session(kind: str, a_shape: list[int], b_shape: list[int], threads: int):
    import onnx
    from onnx import helper

    ta, tb, op = KINDS[kind]
    elem = {n: helper.np_dtype_to_tensor_dtype(np.dtype(n)) for n in (ta, tb)}
    out = onnx.TensorProto.FLOAT if op == 'MatMul' else onnx.TensorProto.INT32
    graph = helper.make_graph(
        [helper.make_node(op, ['A', 'B'], ['C'])], kind,
        [helper.make_tensor_value_info('A', elem[ta], a_shape),
         helper.make_tensor_value_info('B', elem[tb], b_shape)],
        [helper.make_tensor_value_info('C', out, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    model.ir_version = 9
    return make_session(model.SerializeToString(), threads)


def measure(heads: int = 3, tokens: int = 660, channels: int = 64, threads: int = 2,
            rounds: int = 20, burst: int = 10) -> dict:
    """Return the median ms and GOP/s of QK^T-shaped products in each form."""
    a_shape, b_shape = [heads, tokens, channels], [heads, channels, tokens]
    rng = np.random.default_rng(0)
    sessions, feeds = {}, {}
    for kind, (ta, tb, _) in KINDS.items():
        sessions[kind] = _session(kind, a_shape, b_shape, threads)
        feeds[kind] = {'A': (rng.random(a_shape) * 100).astype(ta),
                       'B': (rng.random(b_shape) * 100).astype(tb)}
        for _ in range(3):
            sessions[kind].run(None, feeds[kind])
    times: dict[str, list[float]] = {k: [] for k in KINDS}
    for _ in range(rounds):
        for kind in KINDS:
            for _ in range(burst):
                t = time.perf_counter()
                sessions[kind].run(None, feeds[kind])
                times[kind].append((time.perf_counter() - t) * 1e3)
    ops = 2.0 * heads * tokens * tokens * channels
    return {'shape': {'A': a_shape, 'B': b_shape}, 'threads': threads,
            'kinds': {k: {'ms': float(np.median(v)),
                          'gops': ops / (float(np.median(v)) * 1e-3) / 1e9}
                      for k, v in times.items()}}


def main() -> None:
    """Run the measurement and print / write it."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--tokens', type=int, default=660)
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--out', help='write the JSON report here')
    a = ap.parse_args()
    rep = measure(tokens=a.tokens, threads=a.threads)
    for k, v in rep['kinds'].items():
        print(f'{k}: {v["ms"]:.3f} ms ({v["gops"]:.0f} GOP/s)')
    if a.out:
        from vit_seg_node.core.io import write_json

        write_json(a.out, rep)


if __name__ == '__main__':
    main()
