"""Publish a training run's best weights as a committed reference: FP16 safetensors + records.

``python -m vit_seg_train.publish runs/RUN training/reference/NAME``: writes ``model.safetensors``
(FP16 storage: half the size; loading casts back to FP32, and the published model is evaluated
from this file), the resolved ``config.yaml``, ``metrics.csv`` and ``best.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
import shutil
import sys
from typing import Optional

from safetensors.torch import load_file, save_file

from vit_seg_node.core.errors import UserError


def publish(run: Path, dest: Path) -> Path:
    """Copy the run's best checkpoint (FP16) and its records into ``dest``; return the weights."""
    best = run / 'best.safetensors'
    for f in (best, run / 'config.yaml'):
        if not f.is_file():
            raise UserError(f'{f} not found: is {run} a finished training run?')
    dest.mkdir(parents=True, exist_ok=True)
    sd = load_file(str(best))
    out = dest / 'model.safetensors'
    save_file({k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in sd.items()},
              str(out))
    for name in ('config.yaml', 'metrics.csv', 'best.json'):
        if (run / name).is_file():
            shutil.copyfile(run / name, dest / name)
    return out


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('run', type=Path)
    ap.add_argument('dest', type=Path)
    a = ap.parse_args(argv)
    try:
        print(publish(a.run, a.dest))
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
