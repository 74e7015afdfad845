"""The benchmark's outputs: results.json/csv/md (tables naming the machine), the Pareto plot."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Optional

from vit_seg_node.core.io import atomic_write_bytes, atomic_write_text, write_json


def write_results(doc: dict, out: Path) -> None:
    """Write results.json, results.csv, results.md and pareto.png."""
    write_json(out / 'results.json', doc)
    cols = ['name', 'policy', 'budget', 'precision', 'params', 'macs', 'flops', 'size_mb',
            'p50_ms', 'p90_ms', 'p99_ms', 'fps', 'miou', 'speedup_vs_baseline',
            'miou_drop_vs_baseline', 'achieved_gflops', 'roofline_fraction']
    buf = io.StringIO()
    regimes = doc.get('regimes', {}).get('regimes', [])
    cols += [f'{g}_{k}' for g in regimes for k in ('p50_ms', 'threads', 'speedup')]
    w = csv.DictWriter(buf, cols, extrasaction='ignore')
    w.writeheader()
    for r in doc['variants']:
        cells = {f'{g}_{k}': r['regimes'][g][src] for g in regimes
                 for k, src in (('p50_ms', 'p50'), ('threads', 'threads'),
                                ('speedup', 'speedup_vs_baseline'))}
        w.writerow({**r, **cells, 'budget': json.dumps(r['budget']),
                    'p50_ms': r['latency_ms']['p50'], 'p90_ms': r['latency_ms']['p90'],
                    'p99_ms': r['latency_ms']['p99']})
    atomic_write_text(out / 'results.csv', buf.getvalue())
    atomic_write_text(out / 'results.md', markdown_table(doc) + regimes_table(doc)
                      + peers_table(doc) + per_class_table(doc) + matched_latency_table(doc, 0.05)
                      + matched_latency_table(doc, 0.10))
    pareto_plot(doc, out / 'pareto.png')


def regimes_table(doc: dict) -> str:
    """Return every variant's p50 per regime at its best thread setting, and the speed-ups."""
    from vit_seg_optimize.regimes import REGIME_WORDS

    reg = doc.get('regimes')
    if not reg:
        return ''
    names = reg['regimes']
    lines = ['', 'Latency by regime (' + '; '.join(f'{g}: {REGIME_WORDS[g]}' for g in names)
             + f'): p50 ms at each variant\'s best thread setting of {", ".join(reg["threads"])} '
             f'(`2-nospin`: ONNX Runtime\'s pool does not spin), {reg["runs"]} runs per cell, '
             'variants interleaved; speed-up over the baseline at its own best setting.', '',
             '| variant | precision | mIoU | ' + ' | '.join(f'{g} ms (threads)' for g in names)
             + ' | speed-up ' + ' / '.join(names) + ' |',
             '|---|---|---|' + '---|' * (len(names) + 1)]
    for r in doc['variants']:
        cells = [r['regimes'][g] for g in names]
        lines.append(f'| {r["name"]} | {r["precision"]} | {r["miou"]:.4f} | ' + ' | '.join(
            f'{c["p50"]:.1f} ({c["threads"]})' for c in cells) + ' | ' + ' / '.join(
            f'{c["speedup_vs_baseline"]:.2f}x' for c in cells) + ' |')
    return '\n'.join(lines) + '\n'


def latency_in(row: dict, regime: str) -> float:
    """Return a row's p50 in ``regime`` (``hot`` without regime timings: the grid's own)."""
    return row['regimes'][regime]['p50'] if 'regimes' in row else row['latency_ms']['p50']


def peers_table(doc: dict, max_drop: float = 0.01) -> str:
    """Return, per regime, the reference's fastest variant against each peer's fastest form.

    The reference's variants qualify within ``max_drop`` mIoU of its baseline; empty without
    peers.
    """
    rs = doc['variants']
    peers = sorted({family(doc, r) for r in rs} - {r['policy'] for r in rs})
    if not peers:
        return ''
    regimes = doc['regimes']['regimes'] if doc.get('regimes') else ['hot']
    lines = ['', f'Against the peers: per regime, the fastest variant of the reference within '
             f'{100 * max_drop:.0f} mIoU point of its baseline, and the fastest form of each peer '
             f'(p50 ms at the best thread setting, mIoU on {doc["split"]}).', '',
             '| regime | reference variant | ' + ' | '.join(peers) + ' |',
             '|---|---|' + '---|' * len(peers)]
    base = next(r for r in rs if r['baseline'])
    for g in regimes:
        ours = [r for r in rs if family(doc, r) == r['policy']
                and base['miou'] - r['miou'] <= max_drop]
        cells = []
        for fam in [None] + peers:
            group = ours if fam is None else [r for r in rs if family(doc, r) == fam]
            r = min(group, key=lambda x: latency_in(x, g))
            cells.append(f'{r["name"]}: {latency_in(r, g):.1f} ms, {r["miou"]:.4f}')
        lines.append(f'| {g} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines) + '\n'


def family(doc: dict, row: dict) -> str:
    """Return a row's token-reduction policy, or its model's name for a peer architecture."""
    base = next((r.get('model') for r in doc['variants'] if r.get('baseline')), None)
    return row['policy'] if row.get('model', base) == base else row['model']


def per_class_table(doc: dict) -> str:
    """Return the per-class IoU of every variant that has it.

    A pruned model that keeps road and sky but loses poles and pedestrians is worse for a robot
    than its mIoU says.
    """
    rows = [r for r in doc['variants'] if r.get('per_class_iou')]
    if not rows:
        return ''
    classes = list(rows[0]['per_class_iou'])
    lines = ['', f'Per-class IoU on {doc["split"]}:', '',
             '| variant | ' + ' | '.join(classes) + ' |', '|---|' + '---|' * len(classes)]
    for r in rows:
        lines.append(f'| {r["name"]} | ' + ' | '.join(
            '-' if r['per_class_iou'].get(c) is None else f'{r["per_class_iou"][c]:.3f}'
            for c in classes) + ' |')
    return '\n'.join(lines) + '\n'


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Return the indices of the points not dominated (lower latency and higher mIoU is better)."""
    front = []
    for i, (lat, acc) in enumerate(points):
        if not any((l2 <= lat and a2 >= acc) and (l2 < lat or a2 > acc)
                   for j, (l2, a2) in enumerate(points) if j != i):
            front.append(i)
    return front


def markdown_table(doc: dict) -> str:
    """Return the results as a Markdown table with the machine line above it."""
    m = doc['machine']
    lines = [f'Machine: {m["cpu"]}, {m["cores"]} cores, {m["threads"]} threads, ONNX Runtime '
             f'{m["onnxruntime"]}; GEMM peak {m["gemm_peak_gflops"]["fp32"]:.0f} GFLOP/s FP32, '
             f'{m["gemm_peak_gflops"]["int8"]:.0f} GOP/s INT8. Split: {doc["split"]}. '
             'Latency: all variants timed in interleaved rounds (`time_interleaved`).'
             + (f' A second timing pass reproduced every speed-up ratio within '
                f'{100 * doc["reproducibility"]["max_speedup_ratio_deviation"]:.1f} %.'
                if doc.get('reproducibility') else ''), '',
             '| variant | policy (or peer) | precision | GFLOPs | params (M) | p50 / p90 / p99 ms '
             '| FPS | mIoU | speed-up | mIoU drop (pts) | G(FL)OP/s (% peak) |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in doc['variants']:
        lat = r['latency_ms']
        frac = f' ({100 * r["roofline_fraction"]:.0f}%)' if r['roofline_fraction'] else ''
        lines.append(
            f'| {r["name"]}{" (baseline)" if r["baseline"] else ""} | {family(doc, r)} | '
            f'{r["precision"]} | {r["flops"] / 1e9:.2f} | {r["params"] / 1e6:.2f} | '
            f'{lat["p50"]:.1f} / {lat["p90"]:.1f} / {lat["p99"]:.1f} | {r["fps"]:.1f} | '
            f'{r["miou"]:.4f} | {r["speedup_vs_baseline"]:.2f}x | '
            f'{100 * r["miou_drop_vs_baseline"]:+.2f} | {r["achieved_gflops"]:.0f}{frac} |')
    return '\n'.join(lines) + '\n'


def matched_latency(doc: dict, policy: str = 'neighbor', tol: float = 0.05) -> list[dict]:
    """Return, per ``policy`` variant, the most accurate rival of every other policy nearby.

    A rival has the same precision and a latency within ``tol`` (relative) of the variant's.
    """
    rs = [r for r in doc['variants']
          if r['policy'] != 'none' and family(doc, r) == r['policy']]
    others = sorted({r['policy'] for r in rs} - {policy})
    rows = []
    for r in rs:
        if r['policy'] != policy:
            continue
        lat = r['latency_ms']['p50']
        row = {'variant': r, 'matches': {}}
        for p in others:
            near = [o for o in rs if o['policy'] == p and o['precision'] == r['precision']
                    and abs(o['latency_ms']['p50'] / lat - 1) <= tol]
            row['matches'][p] = max(near, key=lambda o: o['miou']) if near else None
        rows.append(row)
    return rows


def matched_latency_table(doc: dict, tol: float = 0.05) -> str:
    """Return the matched-latency comparison as Markdown (empty when nothing to compare)."""
    rows = matched_latency(doc, tol=tol)
    if not rows:
        return ''
    others = list(rows[0]['matches'])

    def cell(r: Optional[dict]) -> str:
        if r is None:
            return '--'
        return f'{r["name"]}: {r["latency_ms"]["p50"]:.1f} ms, {r["miou"]:.4f}'
    lines = ['', f'Matched latency (+-{100 * tol:.0f} %, same precision): the most accurate '
             'variant of each baseline policy within the band of each neighbour-merge variant.', '',
             '| neighbour merge | ' + ' | '.join(others) + ' | best? |',
             '|---|' + '---|' * (len(others) + 1)]
    for row in rows:
        r = row['variant']
        rivals = [m for m in row['matches'].values() if m is not None]
        best = 'yes' if all(r['miou'] > m['miou'] for m in rivals) else 'no'
        if not rivals:
            best = 'no rival in band'
        lines.append(f'| {cell(r)} | ' + ' | '.join(cell(row['matches'][p]) for p in others) +
                     f' | {best} |')
    return '\n'.join(lines) + '\n'


def pareto_plot(doc: dict, path: Path, floor_points: float = 12.0) -> None:
    """Plot mIoU against latency: every point numbered and listed, the Pareto front drawn.

    Numbers instead of names keep a crowded region readable; the list beside the axes gives each
    number's variant, latency and mIoU (Pareto-optimal ones marked *). Points more than
    ``floor_points`` below the baseline are drawn on the lower edge (marker v) so that a collapsed
    variant does not squash the interesting range.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rs = doc['variants']
    pts = [(r['latency_ms']['p50'], 100 * r['miou']) for r in rs]
    front = sorted(pareto_front(pts), key=lambda i: pts[i][0])
    base = next((100 * r['miou'] for r in rs if r['baseline']), max(p[1] for p in pts))
    floor = max(min(p[1] for p in pts) - 0.5, base - floor_points)
    fig = plt.figure(figsize=(14, 7.5), dpi=100)
    ax = fig.add_axes([0.06, 0.08, 0.60, 0.84])
    colors: dict[str, str] = {}
    for n, (r, (x, y)) in enumerate(zip(rs, pts), 1):
        c = colors.setdefault(family(doc, r), f'C{len(colors)}')
        clipped = y < floor
        marker = 'v' if clipped else {'fp32': 'o', 'fp16': 's', 'int8': '^',
                                      'mixed': 'D'}.get(r['precision'], 'o')
        y = max(y, floor)
        ax.scatter(x, y, c=c, marker=marker, s=55, zorder=3,
                   edgecolors='black' if r['baseline'] else 'none')
        ax.annotate(str(n), (x, y), textcoords='offset points', xytext=(3, 3), fontsize=7)
    ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], 'k--', lw=1,
            label='Pareto front', zorder=2)
    for p, c in colors.items():
        ax.scatter([], [], c=c, label=p)
    ax.set_ylim(floor - 0.5, max(p[1] for p in pts) + 0.5)
    ax.set_xlabel(f'latency p50 (ms), batch 1, {doc["machine"]["threads"]} threads')
    ax.set_ylabel(f'mIoU (%) on {doc["split"]}')
    ax.set_title('accuracy vs latency -- marker: o fp32, ^ int8, D mixed, s fp16, '
                 f'v below {floor:.1f} % (clipped)', fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc='lower right')
    on_front = set(front)
    listing = [f'{n:2d}{"*" if n - 1 in on_front else " "} {r["name"][:34]:34s} '
               f'{r["latency_ms"]["p50"]:6.1f} ms {100 * r["miou"]:5.2f}'
               for n, r in enumerate(rs, 1)]
    fig.text(0.68, 0.92, '\n'.join(listing), fontsize=7, family='monospace', va='top')
    fig.text(0.68, 0.95, '#  variant (* Pareto-optimal)          latency   mIoU', fontsize=7,
             family='monospace', weight='bold')
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
