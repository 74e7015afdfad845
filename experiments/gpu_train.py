"""Train several configs side by side on a lent GPU within a time budget; bring the results back.

python experiments/gpu_train.py --run NAME=CONFIG [--run ...] [--set NAME:key.sub=VALUE ...]
    --data DIR --budget S --out DIR

``--set`` overrides one config value of one run (VALUE is YAML), so that variants of one config
need no files of their own. Each run is first probed for a few steps to measure its speed; the
step count that fits the budget (the slowest run decides, 85 %) is turned into each run's epoch
count (runs on more frames get fewer epochs, the same steps) and written into its resolved
config, so a run is reproducible from its config without this script. The runs are launched in
parallel (one GPU holds several small trainings), killed at the hard deadline if still running.
``--out`` receives at most 8 files whatever the number of runs (what the device tool brings
back): ``records.tar.gz`` (each run's ``config.yaml``, ``metrics.csv``, ``best.json``,
``summary.json`` and log) and the best weights of all runs as fp16 safetensors, packed into
``weights_K.safetensors`` files of at most 15 MiB (tensor names prefixed ``RUN/``). Works on a
CPU too (the test runs it with the tiny config); ``--probe-steps`` and ``--min-epochs`` make
that quick.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import subprocess
import sys
import tarfile
import tempfile
import time

import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_PATHS = [str(ROOT / 'training'), str(ROOT)]   # the training and runtime packages


def use_packages() -> None:
    """Make the repository's packages importable here (once), as the launched runs have them."""
    if PACKAGE_PATHS[0] not in sys.path:
        sys.path[:0] = PACKAGE_PATHS


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


def set_value(cfg: dict, dotted: str, value: str) -> None:
    """Set ``cfg[a][b]... = yaml(value)`` for the key path ``a.b...``."""
    *path, last = dotted.split('.')
    for k in path:
        cfg = cfg.setdefault(k, {})
    cfg[last] = yaml.safe_load(value)


def launch(cfgs: list[Path], timeout: float) -> None:
    """Run one training process per config in parallel, killing them at the deadline."""
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join(
        PACKAGE_PATHS + [os.environ.get('PYTHONPATH', '')])}
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
        (c.parent / f'{c.stem}.log').write_text(out)
        print(f'--- {c.name}\n' + '\n'.join(out.splitlines()[-6:]), flush=True)


def rate(run: Path) -> float:
    """Return training steps per second of a finished probe run (its summary.json).

    The summary holds the full-precision training time; metrics.csv rounds it to 0.1 s, which
    makes short probes look infinitely fast.
    """
    summary = json.loads((run / 'summary.json').read_text())
    return summary['steps'] / max(summary['seconds'], 1e-3)


def plan_epochs(base: dict, data: str, steps: float, min_epochs: int) -> int:
    """Return the epoch count of ``base`` closest to ``steps`` training steps."""
    use_packages()
    from vit_seg_node.core.datasets import find_split

    frames = len(find_split(data, base.get('data', {}).get('train_split', 'train')))
    steps_per_epoch = max(1, frames // int(base['train']['batch_size']))
    epochs = int(steps / steps_per_epoch)
    return max(min_epochs, epochs - epochs % 10 if epochs >= 20 else epochs)


def final_weights(run: Path) -> Path:
    """Write the model weights of the run's last checkpoint as ``final.safetensors``."""
    import torch
    from safetensors.torch import save_file

    use_packages()
    from vit_seg_train.checkpoint import run_weights

    ck = torch.load(run / 'last.pt', map_location='cpu', weights_only=True)
    weights = run_weights(ck)   # a run with train.ema evaluates its average
    save_file({k: v.contiguous() for k, v in weights.items()}, str(run / 'final.safetensors'))
    return run / 'final.safetensors'


def collect(work: Path, names: list[str], out: Path, keep: list[str], final: list[str],
            max_bytes: int = 15 * 2 ** 20) -> None:
    """Pack every run's records into one tar, and the weights of ``keep`` (fp16) into few files.

    Runs in ``final`` bring back their last weights (a fixed schedule, nothing selected on a
    split they trained on); the others their best on the validation split.
    """
    from safetensors.torch import load_file, save_file

    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / 'records.tar.gz', 'w:gz') as tar:
        for name in names:
            for f in ('best.json', 'metrics.csv', 'config.yaml', 'summary.json'):
                if (work / name / f).exists():
                    tar.add(work / name / f, arcname=f'{name}/{f}')
            if (work / f'{name}.log').exists():
                tar.add(work / f'{name}.log', arcname=f'{name}/train.log')
    for name in names:
        if (work / name / 'best.json').exists():
            print(name, 'best', json.loads((work / name / 'best.json').read_text())['miou'])
    packs: list[dict] = [{}]
    for name in keep:
        best = work / name / 'best.safetensors'
        if name in final and (work / name / 'last.pt').exists():
            best = final_weights(work / name)
        if not best.exists():
            continue
        sd = {f'{name}/{k}': (v.half() if v.is_floating_point() else v)
              for k, v in load_file(str(best)).items()}
        size = sum(v.numel() * v.element_size() for v in sd.values())
        if packs[-1] and sum(v.numel() * v.element_size() for v in packs[-1].values()) + \
                size > max_bytes:
            packs.append({})
        packs[-1].update(sd)
    if len(packs) > 7:
        raise SystemExit(f'{len(packs)} weight files: more than the 7 that travel back')
    for k, sd in enumerate(p for p in packs if p):
        save_file(sd, str(out / f'weights_{k}.safetensors'))


def main(argv=None) -> int:
    """Probe, train, collect."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--run', action='append', required=True, metavar='NAME=CONFIG')
    ap.add_argument('--set', action='append', default=[], metavar='NAME:KEY=VALUE')
    ap.add_argument('--keep', nargs='*', help='runs whose weights come back (default: all)')
    ap.add_argument('--final', nargs='*', default=[],
                    help='runs that bring back their last weights instead of their best')
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
    for item in a.set:
        name, _, kv = item.partition(':')
        key, _, value = kv.partition('=')
        set_value(bases[name], key, value)
    work = Path(tempfile.mkdtemp(prefix='vit_seg_gpu_'))   # its own folder: nothing else removed
    t = time.time()
    probes = [write_cfg(b, {'data': {'root': a.data}, 'output_dir': str(work / f'probe_{n}'),
                            'train': {'max_steps': a.probe_steps, 'eval_every': 10 ** 6,
                                      'log_every': max(1, a.probe_steps // 6),
                                      'num_workers': a.workers}}, work / f'probe_{n}.yaml')
              for n, b in bases.items()]
    launch(probes, 200)
    rates = [rate(work / f'probe_{n}') for n in runs]
    steps = min(rates) * a.budget * 0.85
    epochs = {n: plan_epochs(b, a.data, steps, a.min_epochs) for n, b in bases.items()}
    print(f'probe took {time.time() - t:.0f} s; steps/s {rates}; epochs {epochs}', flush=True)
    cfgs = [write_cfg(b, {'data': {'root': a.data}, 'output_dir': str(work / n),
                          'train': {'epochs': epochs[n], 'num_workers': a.workers,
                                    'checkpoint_every': 500, 'max_steps': 0}},
                      work / f'{n}.yaml') for n, b in bases.items()]
    launch(cfgs, a.hard_timeout - (time.time() - t))
    collect(work, list(runs), Path(a.out), list(runs) if a.keep is None else a.keep, a.final)
    return 0


if __name__ == '__main__':
    sys.exit(main())
