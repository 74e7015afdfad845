"""Evidence for the latency budget: a fixed model against the ladder, under one busy process.

python -m experiments.latency_budget --data ../shared/datasets/camvid --out docs/results

Builds a 10 Hz bag from drive 0006R0 (repeated to ~30 s, with its labels), then
replays it three times through the node with a CPU load from --load-window: the FP32 model
alone, the fast model alone, and the shipped ladder with --budget. Writes latency_budget.json
(the three reports, timelines included) and latency_budget.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import shutil
import sys
import tempfile

from vit_seg_node.core.datasets import find_split
from vit_seg_node.core.io import atomic_write_text, write_json
from vit_seg_node.eval.make_bag import make_bag
from vit_seg_node.eval.replay import replay
from vit_seg_node.pipeline import shipped_models


def build_bag(data: str, work: Path, repeats: int) -> Path:
    """Write the held-out frames ``repeats`` times over as one 10 Hz bag with labels."""
    frames, labels = work / 'frames', work / 'labels'
    frames.mkdir()
    labels.mkdir()
    for k in range(repeats):
        for i, s in enumerate(find_split(data, 'heldout')):
            shutil.copy(s.image, frames / f'{k}_{i:04d}.png')
            shutil.copy(s.label, labels / f'{k}_{i:04d}.png')
    return Path(make_bag(frames, work / 'bag', labels=labels, rate=10.0)['bag'])


def main(argv=None) -> int:
    """Run the three replays and write the comparison."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--data', required=True)
    ap.add_argument('--out', default='docs/results')
    ap.add_argument('--budget', type=float, default=120.0)
    ap.add_argument('--workers', type=int, default=1)
    ap.add_argument('--load-window', default='8:20')
    ap.add_argument('--repeats', type=int, default=3)
    ap.add_argument('--domain', type=int, default=63)
    a = ap.parse_args(argv)
    start, stop = (float(v) for v in a.load_window.split(':'))
    models = shipped_models()
    runs = {'fixed default.onnx': {'model': str(models['default'])},
            'fixed fast.onnx': {'model': str(models['fast'])},
            f'ladder, budget {a.budget:g} ms': {
                'node_extra': {'latency_budget_ms': a.budget, 'model_ladder': 'shipped'}}}
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        bag = build_bag(a.data, Path(tmp), a.repeats)
        for name, kw in runs.items():
            print(f'latency_budget: {name}', file=sys.stderr, flush=True)
            reports[name] = replay(bag, Path(tmp) / 'r.json', domain=a.domain,
                                   cpu_load=(a.workers, start, stop), overlays=0, **kw)
    from vit_seg_optimize.measure import machine_info

    doc = {'machine': machine_info(0), 'budget_ms': a.budget, 'load_workers': a.workers,
           'load_window_s': [start, stop], 'runs': reports}
    out = Path(a.out)
    write_json(out / 'latency_budget.json', doc)
    atomic_write_text(out / 'latency_budget.md', markdown(doc))
    print(markdown(doc))
    return 0


def markdown(doc: dict) -> str:
    """Return the comparison table."""
    f = (lambda v: '-' if v is None else f'{v:.1f}')
    m = doc['machine']
    lines = [f'Machine: {m["cpu"]}, {m["cores"]} cores, ONNX Runtime {m["onnxruntime"]}, '
             f'threads: ONNX Runtime default. Load: {doc["load_workers"]} busy process(es) from '
             f'{doc["load_window_s"][0]:g} s to {doc["load_window_s"][1]:g} s of a 10 Hz replay '
             f'of drive 0006R0 (held out by the protocol, but the shipped models were trained on '
             f'it: the mIoU is seen-sequence). Latency: publish to mask received (end to end).',
             '',
             '| run | before load p50 / p90 | load, after 2 s: p50 / p90 | after load (+5 s) '
             'p50 / p90 | answered / frames | mIoU (seen) | back on rung 0 after |',
             '|---|---|---|---|---|---|---|']
    for name, r in doc['runs'].items():
        ph = r['phases_ms']
        lines.append(
            f'| {name} | {f(ph["before_load"]["p50"])} / {f(ph["before_load"]["p90"])} | '
            f'{f(ph["load_after_2s"]["p50"])} / {f(ph["load_after_2s"]["p90"])} | '
            f'{f(ph["after_load"]["p50"])} / {f(ph["after_load"]["p90"])} | '
            f'{r["answered"]} / {r["num_frames"]} | '
            f'{"-" if r["miou"] is None else format(r["miou"], ".4f")} | '
            f'{f(r["back_to_rung0_after_load_s"]) + " s" if r["node_parameters"] else "-"} |')
    return '\n'.join(lines) + '\n'


if __name__ == '__main__':
    sys.exit(main())
