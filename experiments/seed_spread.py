"""The spread of held-out scores across training seeds, per model family.

``python -m experiments.seed_spread --out docs/results/heldout/seeds.json --group NAME
EVAL.json [EVAL.json ...] [--group NAME ...]``: each EVAL.json is a ``vit-seg eval --json``
report of one seed's model on the same split. For each group: every seed's mIoU and thin-class
IoUs, their mean, min and max; then the difference of the group means against the first group.
One seed per model says little when two families lie a quarter of a point apart: this is the
number to compare instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from vit_seg_node.core.io import write_json

THIN = ('Pole', 'SignSymbol', 'Pedestrian', 'Bicyclist')


def read_report(path: str) -> dict:
    """Return ``miou`` and the thin classes' IoU of one ``vit-seg eval --json`` report."""
    doc = json.loads(Path(path).read_text())
    per_class = doc['per_class_iou']
    return {'file': path, 'miou': doc['miou'], **{c: per_class[c] for c in THIN}}


def spread(values: list[float]) -> dict:
    """Return the mean, min and max of one group's values."""
    return {'mean': sum(values) / len(values), 'min': min(values), 'max': max(values)}


def summarize(groups: dict[str, list[dict]]) -> dict:
    """Per group: its seeds, the spread of each metric, and its mean's difference to the first."""
    out = {}
    first = None
    for name, runs in groups.items():
        stats = {key: spread([r[key] for r in runs]) for key in ('miou',) + THIN}
        first = stats['miou']['mean'] if first is None else first
        out[name] = {'seeds': runs, 'spread': stats,
                     'miou_mean_minus_first': stats['miou']['mean'] - first}
    return out


def table(summary: dict) -> str:
    """Return a markdown table: mIoU per seed, mean [min, max], thin-class means."""
    lines = ['| model | seeds | mIoU per seed | mean [min, max] | ' + ' | '.join(THIN) + ' |',
             '|---|---|---|---|' + '---|' * len(THIN)]
    for name, g in summary.items():
        s = g['spread']
        per_seed = ' / '.join(f"{r['miou']:.4f}" for r in g['seeds'])
        m = s['miou']
        thin = ' | '.join(f"{s[c]['mean']:.3f}" for c in THIN)
        lines.append(f"| {name} | {len(g['seeds'])} | {per_seed} | "
                     f"{m['mean']:.4f} [{m['min']:.4f}, {m['max']:.4f}] | {thin} |")
    return '\n'.join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    """Summarize the groups' reports; 2 with one line on a missing or unreadable report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--group', nargs='+', action='append', required=True,
                    metavar=('NAME', 'EVAL_JSON'), help='a family name, then its seeds\' reports')
    ap.add_argument('--out', required=True, help='summary JSON (written atomically)')
    args = ap.parse_args(argv)
    groups = {}
    for name, *files in args.group:
        if not files:
            print(f'error: group {name!r} has no report', file=sys.stderr)
            return 2
        try:
            groups[name] = [read_report(f) for f in files]
        except (OSError, ValueError, KeyError) as e:
            print(f'error: {name}: cannot read a report: {e}', file=sys.stderr)
            return 2
    summary = summarize(groups)
    write_json(args.out, summary)
    print(table(summary))
    return 0


if __name__ == '__main__':
    sys.exit(main())
