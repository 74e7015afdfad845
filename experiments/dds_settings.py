"""The DDS floor under Fast DDS's environment settings: frames through the model-free relay.

python -m experiments.dds_settings --frames ../shared/datasets/camvid \
    --out docs/results/dds_settings.json

Fast DDS reads its transports (``FASTDDS_BUILTIN_TRANSPORTS``) and rmw_fastrtps its publication
mode (``RMW_FASTRTPS_PUBLICATION_MODE``) from the environment when a participant is created, so
each setting runs in a child process of its own: a client and ``vit_seg_node.ros.relay`` (the
node's topics, QoS and worker thread, no model), 480x360 rgb8 frames one at a time, one every
50 ms. Settings rotate through rounds, so that a machine whose speed drifts slows each alike.
Writes the per-setting medians with the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

SETTINGS: dict[str, dict[str, str]] = {
    'default (shared memory + UDPv4)': {},
    'FASTDDS_BUILTIN_TRANSPORTS=SHM': {'FASTDDS_BUILTIN_TRANSPORTS': 'SHM'},
    'FASTDDS_BUILTIN_TRANSPORTS=UDPv4': {'FASTDDS_BUILTIN_TRANSPORTS': 'UDPv4'},
    'FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA': {'FASTDDS_BUILTIN_TRANSPORTS': 'LARGE_DATA'},
    'RMW_FASTRTPS_PUBLICATION_MODE=ASYNCHRONOUS': {'RMW_FASTRTPS_PUBLICATION_MODE':
                                                   'ASYNCHRONOUS'},
}


def one_block(frames_root: str, split: str, runs: int, gap: float, domain: int) -> list[float]:
    """Time ``runs`` frames through the relay under this process's environment."""
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.eval.node_overhead import NodeSession

    ds = SegmentationDataset(frames_root, split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(5, len(ds)))]
    with NodeSession(None, frames, 2, domain, module='vit_seg_node.ros.relay',
                     executor='events') as relay:
        return relay.time(runs, gap)


def main(argv: list[str] | None = None) -> int:
    """Run the rounds, each setting in a child process; write the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--frames', required=True, help='dataset root with 480x360 frames')
    ap.add_argument('--split', default='val')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--runs', type=int, default=60, help='frames per setting and round')
    ap.add_argument('--gap', type=float, default=0.05)
    ap.add_argument('--domain-id', type=int, default=75)
    ap.add_argument('--out')
    ap.add_argument('--child', action='store_true', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print(json.dumps(one_block(a.frames, a.split, a.runs, a.gap, a.domain_id)))
        return 0
    from vit_seg_node.core.io import write_json
    from vit_seg_node.core.machine import machine_record
    from vit_seg_node.core.stats import percentiles

    times: dict[str, list[float]] = {k: [] for k in SETTINGS}
    blocks = []
    keys = list(SETTINGS)
    for rnd in range(a.rounds):
        for key in keys[rnd % len(keys):] + keys[:rnd % len(keys)]:
            env = {k: v for k, v in os.environ.items()
                   if k not in ('FASTDDS_BUILTIN_TRANSPORTS', 'RMW_FASTRTPS_PUBLICATION_MODE')}
            cmd = [sys.executable, '-m', 'experiments.dds_settings', '--child', '--frames',
                   a.frames, '--split', a.split, '--runs', str(a.runs), '--gap', str(a.gap),
                   '--domain-id', str(a.domain_id)]
            out = subprocess.run(cmd, env={**env, **SETTINGS[key]}, capture_output=True,
                                 text=True, timeout=300, check=True)
            t = json.loads(out.stdout.strip().splitlines()[-1])
            times[key] += t
            blocks.append({'round': rnd, 'setting': key, 'p50_ms': float(np.median(t)),
                           'answered': len(t)})
            print(f'round {rnd}: {key}: {np.median(t):.2f} ms ({len(t)}/{a.runs})', flush=True)
    summary = {k: {'round_trip_ms': percentiles(v, (50, 95)), 'answered': len(v)}
               for k, v in times.items()}
    if a.out:
        write_json(a.out, {'what': 'relay round trip, 480x360 rgb8 in, mono8 mask out',
                           'rounds': a.rounds, 'runs': a.runs, 'gap_s': a.gap,
                           'summary': summary, 'blocks': blocks, 'machine': machine_record(2)})
    return 0


if __name__ == '__main__':
    sys.exit(main())
