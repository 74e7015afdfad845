"""The benchmark: every variant (token budget x precision) measured side by side in one run.

For each variant of a YAML grid: build the model from the checkpoint's resolved config, attach
the token reduction, export to ONNX (verified against PyTorch), write its precision form
(``quant.write_quantized``, the same card as ``vit-seg quantize``), count Params/MACs/FLOPs
(fvcore, reduced token counts), score mIoU and per-class IoU on a split; then time all variants
together in interleaved rounds (``measure.time_interleaved``) and relate everything to the FP32
unpruned baseline of the same run. Writes results.csv/json/md and pareto.png (``report``).
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import json
import os
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import file_digest, load_json, load_yaml, write_json
from vit_seg_optimize import measure
from vit_seg_optimize.report import write_results

PRECISIONS = ('fp32', 'fp16', 'int8', 'mixed')


@dataclasses.dataclass
class Probes:
    """The machine probes of a run (tests inject cheap ones)."""

    gemm_peak: Callable[[int, str], float] = measure.gemm_peak
    memory_bandwidth: Callable[[], float] = measure.memory_bandwidth


def precision_plan(fp32_path: Path, precision: str, plan: Optional[dict] = None) -> dict:
    """Return the precision plan of an INT8 form: uniform for ``int8``, ``plan`` for ``mixed``."""
    from vit_seg_optimize.plan import uniform_plan

    return uniform_plan(fp32_path) if precision == 'int8' else (plan or {'default': 'int8'})


def apply_precision(fp32_path: Path, precision: str, out_path: Path,
                    plan: Optional[dict] = None, calibration: Optional[list] = None,
                    command: str = '') -> Path:
    """Write the ``precision`` form of an FP32 model with its card; return its path.

    ``int8``: uniform -- every quantizable operator INT8, the token scoring and the stem
    included; ``mixed``: the precision ``plan``; ``fp16``: FP16. ``calibration``: batches for
    the static INT8 parts, where the plan has them.
    """
    from vit_seg_optimize.quant import write_quantized

    if precision not in PRECISIONS:
        raise UserError(f'unknown precision {precision!r}; choose one of {PRECISIONS}')
    if precision == 'fp32':
        return fp32_path
    form = 'fp16' if precision == 'fp16' else 'dynamic'
    write_quantized(fp32_path, out_path, form, precision_plan(fp32_path, precision, plan),
                    calibration, 'train', command=command)
    return out_path


def build_variant(variant: dict, checkpoint: str, workdir: Path, frames: list) -> tuple:
    """Export one variant's FP32 ONNX (verified); return (model, card, fp32 path, img size)."""
    from vit_seg_optimize.export import export_onnx
    from vit_seg_train.checkpoint import load_model
    from vit_seg_train.config import card_from_config
    from vit_seg_train.reduction.wiring import attach_reduction

    model, cfg = load_model(variant.get('checkpoint', checkpoint))
    img = tuple(cfg['model']['img_size'])
    if 'reduction' in variant:      # else: the checkpoint's own (e.g. fine-tuned with it)
        attach_reduction(model, variant['reduction'], img)
    card = card_from_config(cfg, variant['name'],
                            command=f'vit-seg bench (variant {variant["name"]})')
    card.reduction = getattr(model, 'reduction_card', {'policy': 'none'})   # peers: none
    path = workdir / f'{variant["name"]}.fp32.onnx'
    export_onnx(model, card, path, frames, output=variant.get('output', 'labels'))
    return model, card, path, img


def check_regimes(spec: Any) -> None:
    """Refuse a ``regimes:`` entry that names an unknown regime or thread setting."""
    from vit_seg_optimize.regimes import REGIMES, SETTINGS

    if spec is None:
        return
    if not isinstance(spec, dict):
        raise UserError('regimes: must be a mapping (regimes, threads, warmup, runs)')
    for key, what, known in (('regimes', 'regime', REGIMES),
                             ('threads', 'thread setting', tuple(SETTINGS))):
        bad = [x for x in spec.get(key, known) if str(x) not in known]
        if bad:
            raise UserError(f'unknown {what} {bad[0]!r} in regimes:; known: {", ".join(known)}')


def check_variants(variants: Any) -> None:
    """Refuse a variant list that is not named mappings with exactly one baseline (UserError)."""
    if not isinstance(variants, list) or not variants:
        raise UserError('variants: must be a non-empty list')
    names = []
    for v in variants:
        if not isinstance(v, dict) or not isinstance(v.get('name'), str) or not v['name']:
            raise UserError(f'each variant must be a mapping with a name, got {v!r}')
        names.append(v['name'])
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f'variant names must be unique: {", ".join(twice)}')
    if sum(bool(v.get('baseline')) for v in variants) != 1:
        raise UserError('exactly one variant must be marked baseline: true')


@dataclasses.dataclass
class BenchConfig:
    """A benchmark YAML, read once."""

    path: str
    doc: dict[str, Any]

    @classmethod
    def load(cls, path: str | os.PathLike) -> 'BenchConfig':
        """Read and check a benchmark YAML."""
        p = Path(path)
        if not p.is_file():
            raise UserError(f'benchmark config not found: {p}')
        doc = load_yaml(p, 'benchmark config') or {}
        if not isinstance(doc, dict):
            raise UserError(f'benchmark config {p} must be a mapping')
        check_variants(doc.get('variants'))
        check_regimes(doc.get('regimes'))
        return cls(str(path), doc)

    def get(self, key: str, default: Any = None) -> Any:
        """Return a top-level setting."""
        return self.doc.get(key, default)


def score_variants(cfg: BenchConfig, work: Path) -> list[dict]:
    """Build, quantize, count and score every variant; return their rows (no timing yet)."""
    from vit_seg_node.core.datasets import SegmentationDataset, spread_frames
    from vit_seg_optimize.export import frames_to_batches
    from vit_seg_optimize.flops import cost
    from vit_seg_optimize.plan import load_plan

    data, split = cfg.get('data'), cfg.get('split', 'val')
    frames_ds = SegmentationDataset(data, split, None, cache=False)
    frames = [frames_ds.load(i)[0] for i in range(min(3, len(frames_ds)))]
    calib_cfg = cfg.get('calibration', {})     # static INT8 parts
    calib_frames = spread_frames(data, calib_cfg.get('split', 'train'),
                                 int(calib_cfg.get('frames', 16)))
    threads = int(cfg.get('threads', 2))
    rows, built = [], {}
    for v in map(copy.deepcopy, cfg.get('variants')):
        key = json.dumps([v.get('checkpoint'), v.get('reduction')], sort_keys=True)
        if key not in built:
            built[key] = build_variant(v, cfg.get('checkpoint'), work, frames)
        model, card, fp32_path, img = built[key]
        precision = v.get('precision', 'fp32')
        plan = load_plan(v['plan']) if isinstance(v.get('plan'), str) else v.get('plan')
        path = apply_precision(fp32_path, precision, work / f'{v["name"]}.{precision}.onnx', plan,
                               frames_to_batches(calib_frames, card),
                               command=f'vit-seg bench (variant {v["name"]})')
        c = cost(model, (1, 3, *img))
        ev = measure.evaluate_onnx(path, card, data, split, threads, cfg.get('limit'))
        rows.append({
            'name': v['name'], 'baseline': bool(v.get('baseline')), 'model': card.backbone,
            'policy': card.reduction.get('policy', 'none'),
            'budget': card.reduction.get('params'), 'precision': precision,
            'fine_tuned': 'checkpoint' in v, 'params': c['params'], 'macs': c['macs'],
            'flops': c['flops'], 'size_mb': path.stat().st_size / 1e6,
            'miou': ev['miou'], 'pixel_acc': ev['pixel_acc'],
            'per_class_iou': ev['per_class_iou'], 'num_images': ev['num_images'],
            'tokens_per_block': card.reduction.get('tokens_per_block'), 'onnx': str(path),
            'onnx_digest': file_digest(path), 'input_shape': [1, 3, *img],
            'input_name': card.input_name,
        })
        print(f'bench: {v["name"]}: mIoU {ev["miou"]:.4f}, {c["flops"] / 1e9:.2f} GFLOPs',
              flush=True)
    return rows


def random_feed(row: dict) -> dict[str, np.ndarray]:
    """Return the fixed random input a variant is timed on."""
    return {row['input_name']: np.random.default_rng(0).standard_normal(
        row['input_shape']).astype(np.float32)}


def time_variants(rows: list[dict], threads: int, warmup: int, runs: int, passes: int,
                  probes: Probes) -> tuple[list[dict], dict, dict]:
    """Time all variants in interleaved rounds; return (latencies, reproducibility, bandwidth)."""
    sessions = [measure.session(r['onnx'], threads) for r in rows]
    feeds = [random_feed(r) for r in rows]
    bandwidth = {'before': probes.memory_bandwidth()}
    lats = measure.time_interleaved(sessions, feeds, warmup, runs)
    base_i = next(i for i, r in enumerate(rows) if r['baseline'])
    check = {}
    if passes > 1:   # a second, independent pass: how well do the speed-up ratios reproduce?
        again = measure.time_interleaved(sessions, feeds, warmup, runs)
        dev = [abs((again[base_i]['p50'] / b['p50']) / (lats[base_i]['p50'] / a['p50']) - 1)
               for a, b in zip(lats, again)]
        check = {'second_pass_p50_ms': {r['name']: b['p50'] for r, b in zip(rows, again)},
                 'max_speedup_ratio_deviation': max(dev)}
    bandwidth['after'] = probes.memory_bandwidth()
    return lats, check, bandwidth


def time_regimes(rows: list[dict], spec: dict) -> dict:
    """Time every variant in the robot regimes (``vit_seg_optimize.regimes``).

    Adds to each row, per regime, the thread setting with the lowest p50 and the speed-up over
    the baseline at its own best setting; returns the settings and every cell per model file.
    """
    from vit_seg_optimize.regimes import REGIMES, THREADS, best_setting, run_regimes

    regimes = tuple(spec.get('regimes', REGIMES))
    threads = tuple(str(t) for t in spec.get('threads', THREADS))
    doc = run_regimes([r['onnx'] for r in rows], regimes, threads,
                      int(spec.get('warmup', 3)), int(spec.get('runs', 20)))
    base = next(r for r in rows if r['baseline'])
    for r in rows:
        r['regimes'] = {}
        for regime in regimes:
            th, lat = best_setting(doc['models'][r['onnx']], regime)
            r['regimes'][regime] = {'threads': th, **lat}
    for r in rows:
        for regime, cell in r['regimes'].items():
            cell['speedup_vs_baseline'] = base['regimes'][regime]['p50'] / cell['p50']
    return {k: doc[k] for k in ('regimes', 'threads', 'warmup', 'runs', 'models')}


def relate(rows: list[dict], lats: list[dict], peaks: dict[str, float]) -> None:
    """Add latency, FPS, roofline fraction and the ratios to the baseline to every row."""
    for r, lat in zip(rows, lats):
        peak = peaks['int8' if r['precision'] in ('int8', 'mixed') else 'fp32']
        achieved = r['flops'] / (lat['p50'] * 1e-3) / 1e9
        r.update({'latency_ms': {k: lat[k] for k in ('p50', 'p90', 'p99')},
                  'fps': 1e3 / lat['p50'], 'achieved_gflops': achieved,
                  'roofline_fraction': achieved / peak if peak else None})
    base = next(r for r in rows if r['baseline'])
    for r in rows:
        r['speedup_vs_baseline'] = base['latency_ms']['p50'] / r['latency_ms']['p50']
        r['miou_drop_vs_baseline'] = base['miou'] - r['miou']
        r['flops_ratio_vs_baseline'] = r['flops'] / base['flops']


def run_bench(config_path: str | os.PathLike, out_dir: str | os.PathLike,
              probes: Optional[Probes] = None) -> dict:
    """Run the grid in ``config_path``; write results to ``out_dir``; return the results."""
    probes = probes or Probes()
    cfg = BenchConfig.load(config_path)
    out = Path(out_dir)
    work = Path(cfg.get('workdir', 'runs/bench_models'))   # exported models: not committed
    work.mkdir(parents=True, exist_ok=True)
    threads = int(cfg.get('threads', 2))
    warmup, runs = int(cfg.get('warmup', 10)), int(cfg.get('runs', 50))
    passes = int(cfg.get('timing_passes', 1))
    machine = measure.machine_info(threads)
    machine['gemm_peak_gflops'] = {p: probes.gemm_peak(threads, p) for p in ('fp32', 'int8')}
    rows = score_variants(cfg, work)
    # latency last, all variants in rounds, so that the drift of a shared machine hits them alike
    lats, check, bandwidth = time_variants(rows, threads, warmup, runs, passes, probes)
    machine['memory_copy_gbs'] = bandwidth
    relate(rows, lats, machine['gemm_peak_gflops'])
    for r in rows:
        print(f'bench: {r["name"]}: {r["latency_ms"]["p50"]:.1f} ms', flush=True)
    doc = {'machine': machine, 'config': str(config_path), 'split': cfg.get('split', 'val'),
           'timing': {'warmup': warmup, 'runs': runs, 'passes': passes},
           'variants': rows, 'reproducibility': check}
    if cfg.get('regimes'):
        doc['regimes'] = time_regimes(rows, cfg.get('regimes'))
    write_results(doc, out)
    return doc


def retime(results_path: str | os.PathLike, probes: Optional[Probes] = None) -> dict:
    """Time the models of a committed ``results.json`` again; compare the speed-up ratios.

    Answers "does re-running reproduce the ratios?" across time, not only within one run
    (the benchmark's second timing pass), with the committed run's warm-up and run counts.
    Returns per variant the new p50 and speed-up and the relative deviation of every speed-up
    from the committed one.
    """
    probes = probes or Probes()
    p = Path(results_path)
    if not p.is_file():
        raise UserError(f'results not found: {p}')
    doc = load_json(p, 'benchmark results')
    rs = doc.get('variants') if isinstance(doc, dict) else None
    if not isinstance(rs, list) or not all(isinstance(r, dict) and 'onnx' in r for r in rs):
        raise UserError(f'{p} is not the results.json of a benchmark run')
    missing = [r['onnx'] for r in rs if not Path(r['onnx']).is_file()]
    if missing:
        raise UserError(f'{len(missing)} benchmark models are missing (e.g. {missing[0]}): '
                        f'run the benchmark first')
    changed = [r['onnx'] for r in rs if r.get('onnx_digest') and
               file_digest(r['onnx']) != r['onnx_digest']]
    if changed:   # e.g. another grid exported into the same workdir since
        raise UserError(f'{len(changed)} benchmark models differ from the ones this run timed '
                        f'(e.g. {changed[0]}): run the benchmark again first')
    t = doc['timing']
    for r in rs:   # results written before the input shape was recorded: read it from the file
        if 'input_shape' not in r:
            i = measure.session(r['onnx'], 1).get_inputs()[0]
            r['input_name'], r['input_shape'] = i.name, [int(d) for d in i.shape]
    lats, _, bandwidth = time_variants(rs, int(doc['machine']['threads']), int(t['warmup']),
                                       int(t['runs']), 1, probes)
    b = next(i for i, r in enumerate(rs) if r['baseline'])
    rows = {}
    for r, lat in zip(rs, lats):
        speedup = lats[b]['p50'] / lat['p50']
        rows[r['name']] = {'p50_ms': lat['p50'], 'speedup': speedup,
                           'committed_speedup': r['speedup_vs_baseline'],
                           'deviation': speedup / r['speedup_vs_baseline'] - 1}
    dev = sorted(abs(v['deviation']) for v in rows.values())
    return {'results': str(results_path), 'machine': measure.machine_info(
                int(doc['machine']['threads'])),
            'when': datetime.datetime.now().isoformat(timespec='seconds'),
            'warmup': int(t['warmup']), 'runs': int(t['runs']),
            'baseline_p50_ms': {'committed': rs[b]['latency_ms']['p50'], 'now': lats[b]['p50']},
            'memory_copy_gbs': {'committed': doc['machine'].get('memory_copy_gbs'),
                                'now': bandwidth},
            'max_abs_deviation': dev[-1], 'median_abs_deviation': dev[len(dev) // 2],
            'variants': rows}


def retime_and_record(results_path: str | os.PathLike, out_dir: str | os.PathLike,
                      probes: Optional[Probes] = None) -> tuple[dict, Path]:
    """Re-time a run and append the record to ``out_dir/retime.json``; return (record, path)."""
    rec = retime(results_path, probes)
    path = Path(out_dir) / 'retime.json'
    history = load_json(path, 're-timing record') if path.is_file() else []
    write_json(path, history + [rec])
    return rec, path
