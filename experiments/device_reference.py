"""Train the reference model (and the patch-stem comparison) on a lent GPU within a time budget.

Used once to produce the shipped reference model; kept so the run is documented and repeatable.
It launches ``python -m vit_seg_train.train`` twice in parallel (conv stem = the reference,
patch stem
= the stem comparison), first for a short probe that measures steps per second, then for as many
epochs as fit in ``--budget`` seconds (the epoch count is written into each resolved config, so
the run is reproducible from it without this script). Results are copied to ``--out``, the
reference weights as fp16 safetensors.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

RUNS = {'conv': {'model': {'stem': 'conv'}}, 'patch': {'model': {'stem': 'patch'}}}


def write_cfg(base: dict, name: str, overrides: dict, path: Path) -> Path:
    """Write ``base`` updated section by section with ``overrides`` to ``path``."""
    cfg = json.loads(json.dumps(base))
    for sec, vals in overrides.items():
        cfg.setdefault(sec, {}).update(vals)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def launch(cfgs: list[Path], timeout: float) -> None:
    """Run one training process per config in parallel, killing them at the deadline."""
    procs = [subprocess.Popen([sys.executable, '-m', 'vit_seg_train.train', '--config', str(c)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for c in cfgs]
    deadline = time.time() + timeout
    for p, c in zip(procs, cfgs):
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            print(f'{c.name}: stopped at the deadline')
        print(f'--- {c.name}\n' + '\n'.join(out.splitlines()[-6:]))


def rate(metrics: Path) -> float:
    """Return training steps per second from a run's metrics.csv."""
    rows = [r for r in csv.DictReader(open(metrics)) if r['loss']]
    (s0, t0), (s1, t1) = [(int(r['step']), float(r['seconds'])) for r in (rows[1], rows[-1])]
    return (s1 - s0) / max(1e-6, t1 - t0)


def main() -> None:
    """Probe, train both runs, copy the results."""
    ap = argparse.ArgumentParser()
    ap.add_argument('--config', default='training/configs/camvid_vit_tiny.yaml')
    ap.add_argument('--data', default='.camvid')
    ap.add_argument('--budget', type=float, default=420.0)
    ap.add_argument('--hard-timeout', type=float, default=500.0)
    ap.add_argument('--workers', type=int, default=6)
    ap.add_argument('--out', required=True)
    args = ap.parse_args()
    base = yaml.safe_load(open(args.config))
    work = Path(tempfile.mkdtemp(prefix='vit_seg_gpu_'))   # its own folder: nothing else removed
    out = Path(args.out)
    common = {'data': {'root': args.data}}
    # 1. probe: both runs at once, 60 steps
    probes = []
    for name, ov in RUNS.items():
        o = {**ov, 'output_dir': str(work / f'probe_{name}')}
        probes.append(write_cfg(base, f'probe_{name}', {
            **common, **{k: v for k, v in o.items() if k != 'output_dir'},
            'train': {'max_steps': 60, 'eval_every': 10 ** 6, 'log_every': 10,
                      'num_workers': args.workers}}, work / f'probe_{name}.yaml'))
        cfg = yaml.safe_load(probes[-1].read_text())
        cfg['output_dir'] = str(work / f'probe_{name}')
        probes[-1].write_text(yaml.safe_dump(cfg, sort_keys=False))
    t = time.time()
    launch(probes, 200)
    rates = {n: rate(work / f'probe_{n}' / 'metrics.csv') for n in RUNS}
    steps_per_epoch = 367 // int(base['train']['batch_size'])
    epochs = int(min(rates.values()) * args.budget * 0.85 / steps_per_epoch)
    epochs = max(10, epochs - epochs % 10)
    print(f'probe took {time.time() - t:.0f}s; steps/s {rates}; epochs {epochs}', flush=True)
    # 2. the real runs
    cfgs = []
    for name, ov in RUNS.items():
        p = write_cfg(base, name, {**common, **ov, 'train': {
            'epochs': epochs, 'num_workers': args.workers, 'checkpoint_every': 500}},
            work / f'{name}.yaml')
        cfg = yaml.safe_load(p.read_text())
        cfg['output_dir'] = str(work / name)
        p.write_text(yaml.safe_dump(cfg, sort_keys=False))
        cfgs.append(p)
    launch(cfgs, args.hard_timeout - (time.time() - t))
    # 3. results back (at most 8 files)
    import torch
    from safetensors.torch import load_file, save_file

    for name in RUNS:
        d = work / name
        for f in ('best.json', 'metrics.csv', 'config.yaml'):
            if (d / f).exists():
                shutil.copy(d / f, out / f'{name}_{f}')
    best = work / 'conv' / 'best.safetensors'
    if best.exists():
        sd = load_file(str(best))
        save_file({k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()},
                  str(out / 'conv_best_fp16.safetensors'))
    for name in RUNS:
        p = work / name / 'best.json'
        if p.exists():
            print(name, json.loads(p.read_text())['miou'])
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu'
    print('torch', torch.__version__, dev)


if __name__ == '__main__':
    main()
