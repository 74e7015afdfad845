"""Latency under a robot's conditions: hot caches, cold caches, a busy CPU; 1 or 2 threads.

The benchmark's hot regime (each model in bursts on one input, its weights in cache, the CPU
otherwise idle) is the best case. Here every model of a list is timed, interleaved with the
others, in each regime and thread setting:

* ``hot``: bursts of 5 runs per model, after one untimed run (the benchmark's harness);
* ``cold``: one run per model in turn, each after a sweep writing ``sweep_mb`` of memory, which
  evicts the model's weights from the core-private caches as other work on a robot does;
* ``loaded``: one run per model in turn while one busy process spins on a core.

Thread settings (``SETTINGS``): ``1``, ``2`` (ONNX Runtime's default pool: it spins between
operators and goes on spinning for a while after a run), ``2-runspin`` (it spins during a run
only, as the node's backend runs it) and ``2-nospin`` (pool threads sleep when idle: they leave a
busy core alone). The benchmark's default is ``THREADS``.
"""

from __future__ import annotations

import os
from pathlib import Path
import time
from typing import Callable, Optional

import numpy as np

from vit_seg_node.backends.onnxruntime_backend import make_session, random_feed
from vit_seg_node.core.cpuload import CpuLoad
from vit_seg_optimize.measure import machine_info, percentiles

REGIMES = ('hot', 'cold', 'loaded')
SETTINGS: dict[str, dict] = {   # thread setting: make_session's options
    '1': {'threads': 1},
    '2': {'threads': 2},
    '2-runspin': {'threads': 2, 'spin_after_run': False},
    '2-nospin': {'threads': 2, 'spinning': False},
}
THREADS = ('1', '2', '2-nospin')
SWEEP_MB = 64
REGIME_WORDS = {'hot': 'bursts on one input, weights in cache',
                'cold': f'a {SWEEP_MB} MB memory sweep before every run',
                'loaded': 'one busy process on a core'}


def sweep(buffer: np.ndarray) -> None:
    """Write the whole buffer once (cache eviction)."""
    buffer += 1


def _feed(sess) -> dict[str, np.ndarray]:
    return random_feed(sess)


def time_one_by_one(sessions: list, feeds: list[dict], runs: int,
                    before: Optional[Callable[[], None]] = None) -> list[list[float]]:
    """Time one run per session in turn, ``runs`` rounds; ``before`` runs before each run."""
    times: list[list[float]] = [[] for _ in sessions]
    for i in range(runs):
        order = list(range(len(sessions)))
        for k in order[i % len(order):] + order[:i % len(order)]:
            if before is not None:
                before()
            t = time.perf_counter()
            sessions[k].run(None, feeds[k])
            times[k].append((time.perf_counter() - t) * 1e3)
    return times


def time_regime(sessions: list, feeds: list[dict], regime: str, warmup: int, runs: int,
                sweep_mb: int = SWEEP_MB) -> list[dict[str, float]]:
    """Return per session the latency percentiles (ms) in ``regime``."""
    from vit_seg_optimize.measure import time_interleaved

    if regime == 'hot':
        return time_interleaved(sessions, feeds, warmup, runs)
    for sess, feed in zip(sessions, feeds):
        for _ in range(warmup):
            sess.run(None, feed)
    if regime == 'cold':
        buf = np.zeros(sweep_mb << 17)   # float64: sweep_mb MB
        times = time_one_by_one(sessions, feeds, runs, lambda: sweep(buf))
    elif regime == 'loaded':
        load = CpuLoad(1)
        load.start()
        try:
            time.sleep(0.5)
            times = time_one_by_one(sessions, feeds, runs)
        finally:
            load.stop()
    else:
        raise ValueError(f'unknown regime {regime!r}; one of {REGIMES}')
    return [percentiles(t) for t in times]


def run_regimes(models: list[str | os.PathLike], regimes=REGIMES, threads=THREADS,
                warmup: int = 5, runs: int = 30, repeats: int = 1) -> dict:
    """Time every model in every regime and thread setting; return the results document.

    ``repeats`` > 1 times the regimes of each thread setting that many times in turn (the
    models interleaved in each) and keeps per cell the draw with the median p50 and every draw's
    p50 (``p50_repeats``): a regime that moves between runs (a busy neighbour) shows its spread
    instead of one draw.
    """
    models = list(dict.fromkeys(str(m) for m in models))   # one session per file
    draws: dict[str, dict[str, list]] = {m: {} for m in models}
    for th in threads:
        sessions = [make_session(m, **SETTINGS[th]) for m in models]
        feeds = [_feed(s) for s in sessions]
        for _ in range(repeats):
            for regime in regimes:
                for m, lat in zip(models, time_regime(sessions, feeds, regime, warmup, runs)):
                    draws[m].setdefault(f'{regime}/{th}', []).append(lat)
    rows = {m: {c: median_draw(d) for c, d in cells.items()} for m, cells in draws.items()}
    return {'machine': machine_info(0), 'warmup': warmup, 'runs': runs, 'repeats': repeats,
            'regimes': list(regimes), 'threads': list(threads), 'models': rows}


def median_draw(draws: list[dict[str, float]]) -> dict:
    """Return the draw with the median p50 (the lower middle one), every p50 beside it."""
    mid = dict(sorted(draws, key=lambda d: d['p50'])[(len(draws) - 1) // 2])
    if len(draws) > 1:
        mid['p50_repeats'] = [d['p50'] for d in draws]
    return mid


def _cell_text(cell: dict) -> str:
    rep = cell.get('p50_repeats')
    return f'{cell["p50"]:.1f}' + (f' ({min(rep):.1f}-{max(rep):.1f})' if rep else '')


def best_setting(cells: dict[str, dict], regime: str) -> tuple[str, dict[str, float]]:
    """Return the thread setting with the lowest p50 in ``regime`` and its percentiles."""
    mine = {c.split('/', 1)[1]: lat for c, lat in cells.items() if c.split('/', 1)[0] == regime}
    if not mine:
        raise KeyError(f'no cell of regime {regime!r}')
    th = min(mine, key=lambda t: mine[t]['p50'])
    return th, mine[th]


def markdown(doc: dict) -> str:
    """Return the p50 table: models as rows, regime/threads as columns."""
    m = doc['machine']
    cols = [f'{r}/{t}' for r in doc['regimes'] for t in doc['threads']]
    reps = doc.get('repeats', 1)
    spread = (f' Each cell: the median p50 of {reps} repeats of its thread setting\'s regimes '
              f'(their range).' if reps > 1 else '')
    lines = [f'Machine: {m["cpu"]}, {m["cores"]} cores, ONNX Runtime {m["onnxruntime"]}; '
             f'ISA {" ".join(m["isa"])}. p50 latency (ms), batch 1, {doc["runs"]} runs per cell '
             f'after {doc["warmup"]}, models interleaved within each cell.{spread}', '',
             '| model | ' + ' | '.join(cols) + ' |', '|---|' + '---|' * len(cols)]
    short = {n: Path(n).name for n in doc['models']}
    if len(set(short.values())) < len(short):   # same file names: show the paths
        short = {n: n for n in doc['models']}
    for name, cells in doc['models'].items():
        lines.append(f'| {short[name]} | ' + ' | '.join(_cell_text(cells[c]) for c in cols)
                     + ' |')
    return '\n'.join(lines) + '\n'
