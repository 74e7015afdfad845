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

Results are cached under ``out_dir/<key>/``, the key a digest of everything that changes the
result: the FP32 model, the CPU, ISA, ONNX Runtime version, regime, budget, the thread settings
tried, the data (folder, split, frames scored, timing pairs, calibration split and frames).
What is cached is never tuned again. An entry is built in a private folder beside it (the FP32
model copied in, so that ONNX Runtime's temporaries land there too) and renamed into place
whole: a reader sees the model with its card or no entry; an entry without a loadable tuned
card (an older, interrupted run) is ignored. Two tunes of the same key both succeed; the one
that finishes second keeps the first one's entry.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
import shutil
import tempfile
from typing import Callable, Optional

from vit_seg_node.backends.onnxruntime_backend import make_session
from vit_seg_node.core.card import card_path_for, load_card, save_card
from vit_seg_node.core.cpuload import CpuLoad
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import write_json
from vit_seg_optimize.measure import machine_info
from vit_seg_optimize.regimes import SETTINGS, time_regime

TUNE_REGIMES = ('hot', 'loaded')
TUNE_THREADS = ('1', '2-runspin', '2-nospin')   # the settings the node's backend can run


def tune_key(fp32_path: str | os.PathLike, machine: dict, regime: str, budget: float,
             data: dict) -> str:
    """Return the cache key: model, CPU, ISA, ONNX Runtime, regime, budget, settings tried, data.

    ``data``: the data arguments (folder, split, limit, pairs, calibration split and frames).
    """
    from vit_seg_node.core.io import file_digest

    text = json.dumps([file_digest(fp32_path), machine['cpu'], machine['isa'],
                       machine['onnxruntime'], regime, budget, TUNE_THREADS, data],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cached(entry: Path, log: Callable[[str], None]) -> Optional[Path]:
    """Return the tuned model of a whole cache entry; None (said when one is there) if not."""
    model = entry / 'fast.onnx'
    if not entry.exists():
        return None
    try:
        if model.is_file() and 'tuned' in load_card(model).precision:
            return model
    except UserError:
        pass
    log(f'tune: incomplete cache entry {entry} ignored')
    return None


def publish(work: Path, entry: Path, log: Callable[[str], None]) -> Path:
    """Rename the finished ``work`` folder to ``entry``; keep a whole entry already there."""
    if entry.exists() and cached(entry, log) is None:   # an incomplete one: out of the way
        trash = Path(tempfile.mkdtemp(dir=entry.parent, prefix='.old-'))
        os.replace(entry, trash / entry.name)
        shutil.rmtree(trash, ignore_errors=True)
    try:
        os.rename(work, entry)
    except OSError:   # another tune of the same key finished first: its entry stands
        shutil.rmtree(work, ignore_errors=True)
        if cached(entry, log) is None:
            raise
    return entry / 'fast.onnx'


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
    if regime not in TUNE_REGIMES:
        raise ValueError(f'regime must be one of {TUNE_REGIMES}')
    if min(limit, pairs, num_calib) < 1 or not 0.0 <= budget <= 1.0:   # also refuses nan
        raise UserError(f'tune needs limit, pairs and num_calib >= 1 and a budget in [0, 1], got '
                        f'{limit}, {pairs}, {num_calib}, {budget}')
    machine = machine_info(0)
    data_args = {'data': str(Path(data).resolve()), 'split': split, 'limit': limit,
                 'pairs': pairs, 'calib_split': calib_split, 'num_calib': num_calib}
    entry = Path(out_dir) / tune_key(fp32_path, machine, regime, budget, data_args)
    done = cached(entry, log)
    if done is not None:
        log(f'tune: cached {done}')
        return done
    load_card(fp32_path)
    entry.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f'.{entry.name}.'))
    try:
        fp32 = work / 'fp32.onnx'   # ONNX Runtime's temporaries go beside its input: here
        shutil.copyfile(fp32_path, fp32)
        shutil.copyfile(card_path_for(fp32_path), card_path_for(fp32))
        _tune(fp32, data, work / 'fast.onnx', machine, regime, budget, split, limit, pairs,
              calib_split, num_calib, log)
        fp32.unlink()
        card_path_for(fp32).unlink()
        return publish(work, entry, log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tune(fp32_path: Path, data: str, out: Path, machine: dict, regime: str, budget: float,
          split: str, limit: int, pairs: int, calib_split: str, num_calib: int,
          log: Callable[[str], None]) -> None:
    """Tune ``fp32_path`` into ``out`` (with its card and sensitivity.json beside it)."""
    from vit_seg_node.core.datasets import spread_frames
    from vit_seg_optimize.export import card_batches, frames_to_batches
    from vit_seg_optimize.plan import allocate
    from vit_seg_optimize.quant import write_quantized
    from vit_seg_optimize.sensitivity import sensitivity

    card = load_card(fp32_path)
    setting, fp32_ms = fastest_setting(fp32_path, regime)
    threads, spinning = SETTINGS[setting]['threads'], SETTINGS[setting].get('spinning', True)
    log(f'tune: {regime} regime, threads {setting}: FP32 p50 {fp32_ms:.1f} ms')
    calib = card_batches(frames_to_batches(spread_frames(data, calib_split, num_calib), card),
                         card.batch)
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
    log(f'tune: p50 {tuned_ms:.1f} ms ({fp32_ms / tuned_ms:.2f}x FP32), plan '
        f'{sum(v == "int8" for v in plan["groups"].values())}/{len(plan["groups"])} groups INT8')
