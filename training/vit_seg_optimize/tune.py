"""``vit-seg tune``: choose the precision plan and thread setting on the machine that will run.

A plan allocated on one CPU (AMX on a Xeon) need not hold on another (VNNI only on an EPYC), and
the thread setting that wins on an idle CPU loses beside a busy process (docs/benchmark.md,
regimes). TensorRT answers this by building on the target; this does the same for ONNX Runtime
on a CPU, from an FP32 model:

1. time the FP32 model at each thread setting in the chosen regime and keep the fastest;
2. measure every operator group's INT8 cost (mIoU) and saving (in context, paired timing) with
   that setting, in that regime (``sensitivity.sensitivity``; ``loaded`` runs it beside a busy
   process), and allocate a plan within the mIoU budget (``plan.allocate``);
3. write the plan's INT8 model with a card that records the CPU, its ISA flags, ONNX Runtime's
   version, the regime, threads, the plan and the measured p50 of FP32 and of the result.

Results are cached under ``out_dir/<key>/``, the key a digest of the FP32 model, the CPU, ISA,
ONNX Runtime version, regime, budget and the thread settings tried: what is cached is never
tuned again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

from vit_seg_node.backends.onnxruntime_backend import make_session
from vit_seg_node.core.card import load_card, save_card
from vit_seg_node.core.cpuload import CpuLoad
from vit_seg_node.core.io import write_json
from vit_seg_optimize.measure import machine_info
from vit_seg_optimize.regimes import SETTINGS, time_regime

TUNE_REGIMES = ('hot', 'loaded')
TUNE_THREADS = ('1', '2-runspin', '2-nospin')   # the settings the node's backend can run


def tune_key(fp32_path: str | os.PathLike, machine: dict, regime: str, budget: float) -> str:
    """Return the cache key: model, CPU, ISA, ONNX Runtime, regime, budget, settings tried."""
    from vit_seg_node.core.io import file_digest

    text = json.dumps([file_digest(fp32_path), machine['cpu'], machine['isa'],
                       machine['onnxruntime'], regime, budget, TUNE_THREADS], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def p50_in_regime(model: str | os.PathLike, regime: str, setting: str, runs: int = 20) -> float:
    """Return the p50 (ms) of ``model`` in ``regime`` at a thread setting ('1', '2-nospin'...)."""
    from vit_seg_optimize.regimes import _feed

    sess = make_session(model, **SETTINGS[setting])
    return time_regime([sess], [_feed(sess)], regime, 3, runs)[0]['p50']


def fastest_setting(model: str | os.PathLike, regime: str, runs: int = 20) -> tuple[str, float]:
    """Return the thread setting with the lowest p50 in ``regime``, and that p50 (ms)."""
    return min(((th, p50_in_regime(model, regime, th, runs)) for th in TUNE_THREADS),
               key=lambda x: x[1])


def _in_regime(regime: str, fn: Callable[[], dict]) -> dict:
    if regime != 'loaded':
        return fn()
    load = CpuLoad(1)
    load.start()
    try:
        return fn()
    finally:
        load.stop()


def tune(fp32_path: str | os.PathLike, data: str, out_dir: str | os.PathLike,
         regime: str = 'loaded', budget: float = 0.005, split: str = 'heldout', limit: int = 20,
         pairs: int = 30, calib_split: str = 'fit', num_calib: int = 16,
         log: Callable[[str], None] = print) -> Path:
    """Return the tuned model for this machine (cached), tuning it first if needed."""
    from vit_seg_node.core.datasets import spread_frames
    from vit_seg_optimize.export import frames_to_batches
    from vit_seg_optimize.plan import allocate
    from vit_seg_optimize.quant import write_quantized
    from vit_seg_optimize.sensitivity import sensitivity

    if regime not in TUNE_REGIMES:
        raise ValueError(f'regime must be one of {TUNE_REGIMES}')
    machine = machine_info(0)
    out = Path(out_dir) / tune_key(fp32_path, machine, regime, budget) / 'fast.onnx'
    if out.is_file():
        log(f'tune: cached {out}')
        return out
    card = load_card(fp32_path)
    setting, fp32_ms = fastest_setting(fp32_path, regime)
    threads, spinning = SETTINGS[setting]['threads'], SETTINGS[setting].get('spinning', True)
    log(f'tune: {regime} regime, threads {setting}: FP32 p50 {fp32_ms:.1f} ms')
    calib = frames_to_batches(spread_frames(data, calib_split, num_calib), card)
    sens = _in_regime(regime, lambda: sensitivity(
        fp32_path, card, data, split, limit, threads, pairs, calib, spinning))
    plan = allocate(sens, budget)
    tuned = write_quantized(fp32_path, out, 'dynamic', plan, calib, calib_split,
                            command=f'vit-seg tune (regime {regime}, budget {budget})')
    tuned_ms = p50_in_regime(out, regime, setting)
    tuned.precision['tuned'] = {
        'cpu': machine['cpu'], 'isa': machine['isa'], 'onnxruntime': machine['onnxruntime'],
        'regime': regime, 'threads': threads, 'spinning': spinning, 'fp32_p50_ms': fp32_ms,
        'p50_ms': tuned_ms, 'budget': budget}
    save_card(tuned, out)
    write_json(out.with_name('sensitivity.json'), sens)
    log(f'tune: {out}: p50 {tuned_ms:.1f} ms ({fp32_ms / tuned_ms:.2f}x FP32), plan '
        f'{sum(v == "int8" for v in plan["groups"].values())}/{len(plan["groups"])} groups INT8')
    return out
