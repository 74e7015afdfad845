"""Train several configs side by side on a lent GPU within a time budget; bring the results back.

python experiments/gpu_train.py --run NAME=CONFIG [--run ...] --data DIR --budget S --out DIR

Each run is first probed for a few steps to measure its speed; the epoch count that fits the
budget (the slowest run decides, 85 %) is written into each resolved config, so a run is
reproducible from its config without this script. The runs are launched in parallel (one GPU
holds several ViT-Ti trainings), killed at the hard deadline if still running, and
``best.json``, ``metrics.csv``, ``config.yaml`` and the best weights (fp16 safetensors) of each
are copied to ``--out`` (the device tool brings back 8 files: keep to 2 runs). Works on a CPU
too (the test runs it with the tiny config); ``--probe-steps`` and ``--min-epochs`` make that
quick.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shutil
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = Path(__file__).resolve().parent.parent


def write_cfg(base: dict, overrides: dict, path: Path) -> Path:
    """Write ``base`` updated section by section with ``overrides`` to ``path``."""
    cfg = json.loads(json.dumps(base))
    for sec, vals in overrides.items():
        if isinstance(vals, dict):
            cfg.setdefault(sec, {}).update(vals)
        else:
            cfg[sec] = vals
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def launch(cfgs: list[Path], timeout: float) -> None:
    """Run one training process per config in parallel, killing them at the deadline."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        [str(ROOT / 'training'), str(ROOT), os.environ.get('PYTHONPATH', '')])}
    procs = [subprocess.Popen([sys.executable, '-m', 'vit_seg_train.train', '--config', str(c)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=env, cwd=ROOT)
             for c in cfgs]
    deadline = time.time() + timeout
    for p, c in zip(procs, cfgs):
        try:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            out, _ = p.communicate()
            print(f'{c.name}: stopped at the deadline')
        print(f'--- {c.name}\n' + '\n'.join(out.splitlines()[-6:]), flush=True)


def rate(run: Path) -> float:
    """Return training steps per second of a finished probe run (its summary.json).

    The summary holds the full-precision training time; metrics.csv rounds it to 0.1 s, which
    makes short probes look infinitely fast.
    """
    summary = json.loads((run / 'summary.json').read_text())
    return summary['steps'] / max(summary['seconds'], 1e-3)


def plan_epochs(base: dict, data: str, rates: list[float], budget: float,
                min_epochs: int) -> int:
    """Return the epoch count that fits ``budget`` seconds at the slowest measured rate."""
    sys.path[:0] = [str(ROOT / 'training'), str(ROOT)]
    from vit_seg_node.core.datasets import find_split

    frames = len(find_split(data, base.get('data', {}).get('train_split', 'train')))
    steps_per_epoch = max(1, frames // int(base['train']['batch_size']))
    epochs = int(min(rates) * budget * 0.85 / steps_per_epoch)
    return max(min_epochs, epochs - epochs % 10 if epochs >= 20 else epochs)


def collect(work: Path, names: list[str], out: Path) -> None:
    """Copy each run's record and best weights (fp16) to ``out``."""
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        d = work / name
        for f in ('best.json', 'metrics.csv', 'config.yaml'):
            if (d / f).exists():
                shutil.copy(d / f, out / f'{name}_{f}')
        if (d / 'best.safetensors').exists():
            sd = load_file(str(d / 'best.safetensors'))
            save_file({k: (v.half() if v.is_floating_point() else v) for k, v in sd.items()},
                      str(out / f'{name}_best_fp16.safetensors'))
        if (d / 'best.json').exists():
            print(name, 'best mIoU', json.loads((d / 'best.json').read_text())['miou'])


def main(argv=None) -> int:
    """Probe, train, collect."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--run', action='append', required=True, metavar='NAME=CONFIG')
    ap.add_argument('--data', required=True)
    ap.add_argument('--budget', type=float, default=420.0, help='training seconds')
    ap.add_argument('--hard-timeout', type=float, default=520.0)
    ap.add_argument('--workers', type=int, default=6)
    ap.add_argument('--probe-steps', type=int, default=60)
    ap.add_argument('--min-epochs', type=int, default=10)
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    runs = dict(r.split('=', 1) for r in a.run)
    bases = {n: yaml.safe_load(open(c)) for n, c in runs.items()}
    work = Path(tempfile.mkdtemp(prefix='vit_seg_gpu_'))   # its own folder: nothing else removed
    t = time.time()
    probes = [write_cfg(b, {'data': {'root': a.data}, 'output_dir': str(work / f'probe_{n}'),
                            'train': {'max_steps': a.probe_steps, 'eval_every': 10 ** 6,
                                      'log_every': max(1, a.probe_steps // 6),
                                      'num_workers': a.workers}}, work / f'probe_{n}.yaml')
              for n, b in bases.items()]
    launch(probes, 200)
    rates = [rate(work / f'probe_{n}') for n in runs]
    epochs = plan_epochs(next(iter(bases.values())), a.data, rates, a.budget, a.min_epochs)
    print(f'probe took {time.time() - t:.0f} s; steps/s {rates}; epochs {epochs}', flush=True)
    cfgs = [write_cfg(b, {'data': {'root': a.data}, 'output_dir': str(work / n),
                          'train': {'epochs': epochs, 'num_workers': a.workers,
                                    'checkpoint_every': 500, 'max_steps': 0}},
                      work / f'{n}.yaml') for n, b in bases.items()]
    launch(cfgs, a.hard_timeout - (time.time() - t))
    collect(work, list(runs), Path(a.out))
    return 0


if __name__ == '__main__':
    sys.exit(main())
