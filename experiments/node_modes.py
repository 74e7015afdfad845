"""The node's overhead under each transport and threading setting, all timed interleaved.

python -m experiments.node_modes --frames ../shared/datasets/camvid --out docs/results/node_modes

One node process per setting (``zero_copy``, ``executor``), each on its own ROS
domain and all alive at once, and raw inference in this process: every round starts the processes
afresh (where the kernel places a process's threads changes its inference time by 1-3 ms on a
2-core VM) and times a block of frames through each of them in turn, the order rotating, so that
a machine whose speed drifts slows every setting alike. Per setting: the median publish-to-mask
latency over the median raw inference latency (``vit-seg bench-node``'s overhead) and over the
node's own inference median, and the node's stage medians. Writes records.json (blocks and
summary, with the machine).
"""

from __future__ import annotations

import argparse
import contextlib
import sys

import numpy as np

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.core.io import write_json
from vit_seg_node.core.machine import machine_record
from vit_seg_node.core.stats import percentiles
from vit_seg_node.eval.node_overhead import node_stages, NodeSession, RawInference

SETTINGS = [  # (zero_copy, executor)
    (False, 'single'),
    (True, 'single'),
    (False, 'events'),
    (True, 'events'),
]


def name(setting: tuple) -> str:
    """Return a setting's label."""
    zero_copy, executor = setting
    return f'zero_copy={str(zero_copy).lower()} executor={executor}'


def main(argv: list[str] | None = None) -> int:
    """Run the rounds; write records.json."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--frames', required=True, help='dataset root with 480x360 frames')
    ap.add_argument('--split', default='val')
    ap.add_argument('--model', default='vit_seg_node/data/models/fast.onnx')
    ap.add_argument('--rounds', type=int, default=8)
    ap.add_argument('--block', type=int, default=20, help='frames per block')
    ap.add_argument('--gap', type=float, default=0.05)
    ap.add_argument('--domain-id', type=int, default=70, help='first of len(SETTINGS) domains')
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(5, len(ds)))]
    raw = RawInference(a.model, frames, threads=2)
    keys = ['raw'] + [name(s) for s in SETTINGS]
    times: dict[str, list[float]] = {k: [] for k in keys}
    stages: dict[str, list[dict]] = {k: [] for k in keys[1:]}
    blocks = []
    for rnd in range(a.rounds):
        with contextlib.ExitStack() as stack:
            nodes = {}
            for k, s in enumerate(SETTINGS):
                zero_copy, executor = s
                nodes[name(s)] = stack.enter_context(NodeSession(
                    a.model, frames, 2, a.domain_id + k, executor=executor,
                    zero_copy=zero_copy))
            shift = rnd % len(keys)
            for key in keys[shift:] + keys[:shift]:
                t = raw.time(a.block, a.gap) if key == 'raw' else \
                    nodes[key].time(a.block, a.gap)
                times[key] += t
                blocks.append({'round': rnd, 'what': key, 'p50_ms': float(np.median(t))})
            for k, n in nodes.items():
                stages[k].append(node_stages(n.diagnostics()))
        done = [f'{b["what"]} {b["p50_ms"]:.2f}' for b in blocks if b['round'] == rnd]
        print(f'round {rnd}: ' + ', '.join(done), flush=True)
    raw_p50 = float(np.median(times['raw']))
    summary = {'raw_infer_ms': percentiles(times['raw'], (50, 95))}
    for k in keys[1:]:
        p50 = float(np.median(times[k]))
        infer = float(np.median([st['infer'] for st in stages[k]]))
        summary[k] = {'node_end_to_end_ms': percentiles(times[k], (50, 95)),
                      'overhead': p50 / raw_p50 - 1.0, 'node_infer_p50_ms': infer,
                      'overhead_vs_node_infer': p50 / infer - 1.0, 'answered': len(times[k]),
                      'node_stages_p50_ms_per_round': stages[k]}
        print(f'{k}: node p50 {p50:.2f} ms, overhead {100 * (p50 / raw_p50 - 1):.1f}% '
              f'(raw {raw_p50:.2f} ms), {100 * (p50 / infer - 1):.1f}% against its own '
              f'inference ({infer:.2f} ms)')
    write_json(f'{a.out}/records.json', {
        'model': a.model, 'rounds': a.rounds, 'block': a.block, 'gap_s': a.gap,
        'frames_sent_per_setting': a.rounds * a.block, 'summary': summary, 'blocks': blocks,
        'machine': machine_record(2)})
    return 0


if __name__ == '__main__':
    sys.exit(main())
