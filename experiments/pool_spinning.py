"""What ONNX Runtime's pool spinning costs a node that serves a camera: CPU per frame, latency.

python -m experiments.pool_spinning --frames ../shared/datasets/camvid \
    --model vit_seg_node/data/models/fast.onnx --out docs/results/pool_spinning.json

Frames are processed as the node does (pre-processing into kept buffers, inference, labels
restored to the frame's size), one every ``--gap`` seconds, under three pool settings:
ONNX Runtime's default (threads spin between operators and keep spinning after a run),
spinning during a run only (``session.force_spinning_stop``: what the backend does with
``cpu_spinning: true``) and no spinning (``cpu_spinning: false``). Blocks of frames rotate over
the settings, on an idle machine and beside one busy process (``core.cpuload``). Per setting:
the CPU time this process spends per frame (all its threads), the inference and
post-processing medians, and, beside the busy process, the share of a core that process got.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import numpy as np

NAMES = {   # regimes.SETTINGS key: what it is
    '2': 'spin, also after a run (ONNX Runtime default)',
    '2-runspin': 'spin during a run only (the backend, cpu_spinning: true)',
    '2-nospin': 'no spinning (cpu_spinning: false)',
}
THREADS = 2


def _cpu_s() -> float:
    """Return this process's CPU time (user + system, all threads) in seconds."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _proc_cpu_s(pid: int) -> float:
    """Return another process's CPU time in seconds, from /proc."""
    with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def block(session, card, frames, runs: int, gap: float, other_pid: int | None) -> dict:
    """Process ``runs`` frames ``gap`` s apart; return CPU per frame and stage latencies."""
    from vit_seg_node.core.processing import Preprocessor, restore_labels, to_labels

    prep = Preprocessor(card)
    infer, post = [], []
    c0, w0 = _cpu_s(), time.perf_counter()
    o0 = _proc_cpu_s(other_pid) if other_pid else 0.0
    for i in range(runs):
        batch, geo = prep(frames[i % len(frames)])
        t0 = time.perf_counter()
        out = session.run([card.output_name], {card.input_name: batch})[0]
        t1 = time.perf_counter()
        restore_labels(to_labels(out, card.output_kind)[0], geo)
        t2 = time.perf_counter()
        infer.append((t1 - t0) * 1e3)
        post.append((t2 - t1) * 1e3)
        time.sleep(gap)
    wall = time.perf_counter() - w0
    res = {'cpu_ms_per_frame': (_cpu_s() - c0) / runs * 1e3, 'infer': infer, 'post': post}
    if other_pid:
        res['other_process_core_share'] = (_proc_cpu_s(other_pid) - o0) / wall
    return res


def main(argv: list[str] | None = None) -> int:
    """Rotate the settings over blocks, idle and beside a busy process; write the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--frames', required=True, help='dataset root')
    ap.add_argument('--split', default='val')
    ap.add_argument('--model', required=True)
    ap.add_argument('--rounds', type=int, default=6)
    ap.add_argument('--runs', type=int, default=20, help='frames per block')
    ap.add_argument('--gap', type=float, default=0.05)
    ap.add_argument('--out')
    a = ap.parse_args(argv)

    from vit_seg_node.backends.onnxruntime_backend import make_session
    from vit_seg_node.core.card import load_card
    from vit_seg_node.core.cpuload import CpuLoad
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.core.io import write_json
    from vit_seg_node.core.machine import machine_record
    from vit_seg_optimize.regimes import SETTINGS

    card = load_card(a.model)
    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(5, len(ds)))]
    sessions = {NAMES[k]: make_session(a.model, **SETTINGS[k]) for k in NAMES}
    names = list(sessions)
    report: dict = {}
    for regime in ('idle', 'one busy process'):
        load = CpuLoad(1) if regime != 'idle' else None
        if load:
            load.start()
            time.sleep(1.0)
        pid = load.procs[0].pid if load else None
        blocks: dict[str, list[dict]] = {k: [] for k in names}
        try:
            for rnd in range(a.rounds):
                for k in names[rnd % 3:] + names[:rnd % 3]:
                    blocks[k].append(block(sessions[k], card, frames, a.runs, a.gap, pid))
        finally:
            if load:
                load.stop()
        report[regime] = {k: summary(v) for k, v in blocks.items()}
        for k, s in report[regime].items():
            print(f'{regime}: {k}: {s}', flush=True)
    if a.out:
        write_json(a.out, {'what': 'CPU time per frame and latencies under ONNX Runtime pool '
                                   'spinning settings, frames paced like a camera',
                           'model': a.model, 'threads': THREADS, 'gap_s': a.gap,
                           'rounds': a.rounds, 'runs': a.runs, 'results': report,
                           'machine': machine_record(THREADS)})
    return 0


def summary(blocks: list[dict]) -> dict:
    """Return the medians over a setting's blocks and frames."""
    out = {'cpu_ms_per_frame': round(float(np.median([b['cpu_ms_per_frame'] for b in blocks])),
                                     2),
           'infer_p50_ms': round(float(np.median([x for b in blocks for x in b['infer']])), 2),
           'post_p50_ms': round(float(np.median([x for b in blocks for x in b['post']])), 3)}
    if 'other_process_core_share' in blocks[0]:
        out['other_process_core_share'] = round(float(np.median(
            [b['other_process_core_share'] for b in blocks])), 3)
    return out


if __name__ == '__main__':
    raise SystemExit(main())
