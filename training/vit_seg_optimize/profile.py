"""Where an ONNX model spends its time in ONNX Runtime: per operator type and per scope.

``python -m vit_seg_optimize.profile M.onnx [--runs 30] [--threads 2]``: runs ONNX Runtime's
profiler over ``runs`` timed runs and prints kernel time per operator type, per top-level scope
(stem, encoder blocks, decoder, reduction bookkeeping, output head) and the wall time not spent
in kernels (per-node dispatch).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
import time
from typing import Optional

import numpy as np

from vit_seg_node.backends.onnxruntime_backend import make_session, random_feed
from vit_seg_node.core.io import load_json


def scope_of(node: str) -> str:
    """Map an exported node name to a coarse part of the model."""
    if 'Resize' in node or 'ArgMax' in node:
        return 'output (resize, ArgMax)'
    if '/patch_embed/' in node:
        return 'stem'
    if '/decoder/' in node:
        return 'decoder'
    if '/blocks' in node:
        return 'encoder blocks'
    if node.startswith('/'):
        return 'token bookkeeping, scoring, other'
    return 'nodes fused by ONNX Runtime (no scope)'


def profile(path: str, runs: int = 30, threads: int = 2, warmup: int = 10) -> dict:
    """Return wall and kernel time per run (ms), by operator type and by scope."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = make_session(path, threads)
        feed = random_feed(sess)
        for _ in range(warmup):
            sess.run(None, feed)
        sess = make_session(path, threads, profile_prefix=os.path.join(tmp, 'p'))
        sess.run(None, feed)   # first run of the profiled session: not counted
        wall = []
        for _ in range(runs):
            t = time.perf_counter()
            sess.run(None, feed)
            wall.append((time.perf_counter() - t) * 1e3)
        events = load_json(sess.end_profiling(), 'ONNX Runtime profile')
    by_op, by_scope = collections.Counter(), collections.Counter()
    for e in events:
        if e.get('cat') == 'Node' and e['name'].endswith('_kernel_time'):
            us = e['dur'] / (runs + 1) / 1e3
            by_op[e['args']['op_name']] += us
            by_scope[scope_of(e['name'][:-len('_kernel_time')])] += us
    return {'wall_ms': float(np.median(wall)), 'kernel_ms': sum(by_op.values()),
            'by_op': dict(by_op.most_common()), 'by_scope': dict(by_scope.most_common())}


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('model')
    ap.add_argument('--runs', type=int, default=30)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args(argv)
    rep = profile(a.model, a.runs, a.threads)
    k = rep['kernel_ms']
    print(f'{a.model}: wall p50 {rep["wall_ms"]:.1f} ms, kernels {k:.1f} ms '
          f'({100 * (1 - k / rep["wall_ms"]):.0f} % of the wall time outside kernels)')
    for title, d in (('by scope', rep['by_scope']), ('by operator', rep['by_op'])):
        print(f'  {title}:')
        for name, ms in list(d.items())[:12]:
            print(f'    {name:40s} {ms:6.2f} ms {100 * ms / k:5.1f} %')
    return 0


if __name__ == '__main__':
    sys.exit(main())
