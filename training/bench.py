"""The benchmark: every variant (token budget x precision) measured side by side in one run.

For each variant of a YAML grid: build the model from the checkpoint's resolved config, attach
the token reduction, export to ONNX (verified against PyTorch), apply the precision, then count
Params/MACs/FLOPs (fvcore, reduced token counts), time ONNX Runtime at batch 1 and a fixed thread
count (median/p90/p99 after warm-up), score mIoU on a split, and relate everything to the FP32
unpruned baseline measured in the same run. Writes results.csv/json/md and pareto.png.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import os
from pathlib import Path
import platform
import time
from typing import Any, Optional

import numpy as np
import yaml

from vit_seg_node.errors import UserError
from vit_seg_node.runtime.card import atomic_write_text, save_card

PRECISIONS = ('fp32', 'fp16', 'int8', 'mixed')


def machine_info(threads: int) -> dict[str, Any]:
    """Return what the numbers depend on: CPU, cores, ISA flags, library versions."""
    import onnxruntime
    import torch

    cpu, flags = platform.processor(), []
    try:
        for line in open('/proc/cpuinfo'):
            if line.startswith('model name'):
                cpu = line.split(':', 1)[1].strip()
            if line.startswith('flags'):
                flags = line.split(':', 1)[1].split()
                break
    except OSError:
        pass
    isa = [f for f in flags if f.startswith(('avx', 'amx', 'fma')) or f in ('f16c',)]
    try:
        import tensorrt  # noqa: F401
        trt = tensorrt.__version__
    except ImportError:
        trt = None
    return {'cpu': cpu, 'cores': os.cpu_count(), 'threads': threads, 'isa': isa,
            'onnxruntime': onnxruntime.__version__, 'torch': torch.__version__,
            'tensorrt': trt, 'python': platform.python_version(), 'machine': platform.machine()}


def session(path: str | os.PathLike, threads: int):
    """Return a CPU ONNX Runtime session with a fixed thread count."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=['CPUExecutionProvider'])


def time_session(sess, feed: dict[str, np.ndarray], warmup: int, runs: int) -> dict[str, float]:
    """Return latency percentiles (ms) of ``sess.run`` after ``warmup`` runs."""
    for _ in range(warmup):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return percentiles(times)


def percentiles(times_ms: list[float]) -> dict[str, float]:
    """Return p50/p90/p99 and the mean of latencies in ms."""
    a = np.asarray(times_ms)
    return {'p50': float(np.median(a)), 'p90': float(np.percentile(a, 90)),
            'p99': float(np.percentile(a, 99)), 'mean': float(a.mean())}


def time_interleaved(sessions: list, feeds: list[dict], warmup: int, runs: int,
                     burst: int = 5) -> list[dict[str, float]]:
    """Time several sessions in rounds: each round runs every session ``burst`` times in turn.

    Timing variants one after another lets a shared machine's drift (we saw the same model at 64
    and 77 ms an hour apart) leak into their ratios; in rounds, every variant sees the same
    conditions. A burst keeps each model's own caches warm, as when it runs alone on a robot.
    Returns per session the percentiles (ms) of ``runs`` timed runs after ``warmup`` runs.
    """
    for sess, feed in zip(sessions, feeds):
        for _ in range(warmup):
            sess.run(None, feed)
    times: list[list[float]] = [[] for _ in sessions]
    rounds = -(-runs // burst)
    for i in range(rounds):
        order = list(range(len(sessions)))
        order = order[i % len(order):] + order[:i % len(order)]   # rotate who goes first
        for k in order:
            sessions[k].run(None, feeds[k])   # one untimed run after the previous model
            for _ in range(burst):
                t = time.perf_counter()
                sessions[k].run(None, feeds[k])
                times[k].append((time.perf_counter() - t) * 1e3)
    return [percentiles(t[:runs]) for t in times]


def memory_bandwidth(size_mb: int = 256, repeats: int = 5) -> float:
    """Return this moment's memory copy bandwidth in GB/s (read + write, best of ``repeats``).

    Recorded beside every timing as one reading of the shared machine's state: the FP32
    baseline swings far more than the reduced models between runs, and this says whether main
    memory was contended at the time (so far it was not what differed: 22-24 GB/s in runs whose
    baselines differed by 25 %).
    """
    src = np.ones(size_mb * (1 << 20) // 8)
    dst = np.empty_like(src)
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    return 2.0 * src.nbytes / best / 1e9


def gemm_peak(threads: int, precision: str, size: int = 1024, runs: int = 20) -> float:
    """Measure this machine's GEMM rate in G(FL)OP/s through ONNX Runtime at ``precision``."""
    import onnx
    from onnx import helper, TensorProto

    rng = np.random.default_rng(0)
    if precision == 'int8':
        a = helper.make_tensor_value_info('a', TensorProto.UINT8, [size, size])
        w = rng.integers(-127, 127, (size, size), dtype=np.int8)
        node = helper.make_node('MatMulInteger', ['a', 'w'], ['y'])
        y = helper.make_tensor_value_info('y', TensorProto.INT32, [size, size])
        init = [helper.make_tensor('w', TensorProto.INT8, w.shape, w.tobytes(), raw=True)]
        feed = {'a': rng.integers(0, 255, (size, size), dtype=np.uint8)}
    else:
        a = helper.make_tensor_value_info('a', TensorProto.FLOAT, [size, size])
        w = rng.standard_normal((size, size)).astype(np.float32)
        node = helper.make_node('MatMul', ['a', 'w'], ['y'])
        y = helper.make_tensor_value_info('y', TensorProto.FLOAT, [size, size])
        init = [helper.make_tensor('w', TensorProto.FLOAT, w.shape, w.tobytes(), raw=True)]
        feed = {'a': rng.standard_normal((size, size)).astype(np.float32)}
    model = helper.make_model(helper.make_graph([node], 'gemm', [a], [y], init),
                              opset_imports=[helper.make_opsetid('', 17)])
    buf = io.BytesIO()
    onnx.save(model, buf)
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(buf.getvalue(), sess_options=opts,
                                providers=['CPUExecutionProvider'])
    t = time_session(sess, feed, 3, runs)
    return 2.0 * size ** 3 / (t['p50'] * 1e-3) / 1e9


def precision_plan(fp32_path: Path, precision: str, plan: Optional[dict] = None) -> dict:
    """Return the precision plan that ``apply_precision`` uses for an INT8 form."""
    from training.quant import uniform_plan

    return uniform_plan(fp32_path) if precision == 'int8' else (plan or {'default': 'int8'})


def apply_precision(fp32_path: Path, precision: str, out_path: Path,
                    plan: Optional[dict] = None, calibration: Optional[list] = None,
                    input_name: str = 'image') -> Path:
    """Write the ``precision`` form of an FP32 ONNX model (see docs/mixed-precision.md).

    ``int8``: uniform -- every quantizable operator INT8, including attention's activation
    products, the token scoring and the stem; ``mixed``: the precision ``plan`` (default:
    ``training.quant``'s default plan, Linear layers INT8, the rest float). ``calibration``:
    batches for the static INT8 of activation products, where the plan has them.
    """
    if precision == 'fp32':
        return fp32_path
    if precision in ('int8', 'mixed'):
        from training.quant import quantize_mixed

        return quantize_mixed(fp32_path, out_path, precision_plan(fp32_path, precision, plan),
                              calibration, input_name)
    if precision == 'fp16':
        from training.quant import to_float16

        return to_float16(fp32_path, out_path)
    raise UserError(f'unknown precision {precision!r}; choose one of {PRECISIONS}')


def evaluate_onnx(path: Path, card, data: str, split: str, threads: int,
                  limit: Optional[int] = None) -> dict:
    """Score an ONNX model on a split through the runtime's pre/post-processing."""
    from training.data import SegmentationDataset
    from training.evaluate import evaluate_predictor

    sess = session(path, threads)
    ds = SegmentationDataset(data, split, None, cache=False)
    pairs = (ds.load(i) for i in range(len(ds)))
    return evaluate_predictor(lambda x: sess.run([card.output_name], {card.input_name: x})[0],
                              pairs, card, limit=limit)


def build_variant(variant: dict, checkpoint: str, workdir: Path, frames: list) -> tuple:
    """Export one variant's FP32 ONNX (verified); return (model, card, fp32 path)."""
    from training.checkpoint import load_model
    from training.config import card_from_config
    from training.export import export_onnx
    from training.reduction.wiring import attach_reduction

    ckpt = variant.get('checkpoint', checkpoint)
    model, cfg = load_model(ckpt)
    img = tuple(cfg['model']['img_size'])
    if 'reduction' in variant:      # else: the checkpoint's own (e.g. fine-tuned with it)
        attach_reduction(model, variant['reduction'], img)
    card = card_from_config(cfg, variant['name'], command=f'vit-seg bench (variant '
                                                          f'{variant["name"]})')
    card.reduction = model.reduction_card
    path = workdir / f'{variant["name"]}.fp32.onnx'
    export_onnx(model, card, path, frames, output=variant.get('output', 'labels'))
    return model, card, path, img


def run_bench(config_path: str | os.PathLike, out_dir: str | os.PathLike) -> dict:
    """Run the grid in ``config_path``; write results to ``out_dir``; return the results."""
    from training.data import SegmentationDataset, spread_frames
    from training.export import frames_to_batches
    from training.flops import cost

    cfg = yaml.safe_load(Path(config_path).read_text())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(cfg.get('workdir', 'runs/bench_models'))   # exported models: not committed
    work.mkdir(parents=True, exist_ok=True)
    threads = int(cfg.get('threads', 2))
    warmup, runs = int(cfg.get('warmup', 10)), int(cfg.get('runs', 50))
    limit = cfg.get('limit')
    variants = cfg['variants']
    if sum(bool(v.get('baseline')) for v in variants) != 1:
        raise UserError('exactly one variant must be marked baseline: true')
    frames_ds = SegmentationDataset(cfg['data'], cfg.get('split', 'val'), None, cache=False)
    frames = [frames_ds.load(i)[0] for i in range(min(3, len(frames_ds)))]
    calib_cfg = cfg.get('calibration', {})     # static INT8 of attention products
    calib_frames = spread_frames(cfg['data'], calib_cfg.get('split', 'train'),
                                 int(calib_cfg.get('frames', 16)))
    machine = machine_info(threads)
    machine['gemm_peak_gflops'] = {'fp32': gemm_peak(threads, 'fp32'),
                                   'int8': gemm_peak(threads, 'int8')}
    results, built, feeds = [], {}, []
    for v in variants:
        v = copy.deepcopy(v)
        key = json.dumps([v.get('checkpoint'), v.get('reduction')], sort_keys=True)
        if key not in built:
            built[key] = build_variant(v, cfg['checkpoint'], work, frames)
        model, card, fp32_path, img = built[key]
        precision = v.get('precision', 'fp32')
        if isinstance(v.get('plan'), str):   # a plan file, or a sensitivity report with one
            from training.quant import load_plan

            v['plan'] = load_plan(v['plan'])
        path = apply_precision(fp32_path, precision, work / f'{v["name"]}.{precision}.onnx',
                               v.get('plan'), frames_to_batches(calib_frames, card),
                               card.input_name)
        if path != fp32_path:   # the quantized model gets its own card, precision recorded
            qcard = copy.deepcopy(card)
            qcard.precision = {'default': precision, 'form': 'onnxruntime-cpu'
                               if precision in ('int8', 'mixed') else precision,
                               'plan': v.get('plan')}
            if precision in ('int8', 'mixed'):
                from training.quant import group_precisions

                plan = precision_plan(fp32_path, precision, v.get('plan'))
                qcard.precision['plan'] = plan
                qcard.precision['groups'] = group_precisions(fp32_path, plan)
            save_card(qcard, path)
        c = cost(model, (1, 3, *img))
        ev = evaluate_onnx(path, card, cfg['data'], cfg.get('split', 'val'), threads, limit)
        results.append({
            'name': v['name'], 'baseline': bool(v.get('baseline')),
            'policy': card.reduction.get('policy', 'none'),
            'budget': card.reduction.get('params'), 'precision': precision,
            'fine_tuned': 'checkpoint' in v,
            'params': c['params'], 'macs': c['macs'], 'flops': c['flops'],
            'size_mb': path.stat().st_size / 1e6,
            'miou': ev['miou'], 'pixel_acc': ev['pixel_acc'], 'num_images': ev['num_images'],
            'tokens_per_block': card.reduction.get('tokens_per_block'),
            'onnx': str(path),
        })
        feeds.append({card.input_name: np.random.default_rng(0).standard_normal(
            (1, 3, *img)).astype(np.float32)})
        print(f'bench: {v["name"]}: mIoU {ev["miou"]:.4f}, {c["flops"] / 1e9:.2f} GFLOPs',
              flush=True)
    # latency last, all variants in rounds, so that the drift of a shared machine hits them alike
    sessions = [session(r['onnx'], threads) for r in results]
    bandwidth = {'before': memory_bandwidth()}
    lats = time_interleaved(sessions, feeds, warmup, runs)
    base_i = next(i for i, r in enumerate(results) if r['baseline'])
    check = {}
    if int(cfg.get('timing_passes', 1)) > 1:
        # a second, independent timing pass: how well do the speed-up ratios reproduce?
        again = time_interleaved(sessions, feeds, warmup, runs)
        dev = [abs((again[base_i]['p50'] / b['p50']) / (lats[base_i]['p50'] / a['p50']) - 1)
               for a, b in zip(lats, again)]
        check = {'second_pass_p50_ms': {r['name']: b['p50'] for r, b in zip(results, again)},
                 'max_speedup_ratio_deviation': max(dev)}
    bandwidth['after'] = memory_bandwidth()
    machine['memory_copy_gbs'] = bandwidth
    for r, lat in zip(results, lats):
        peak = machine['gemm_peak_gflops']['int8' if r['precision'] in ('int8', 'mixed')
                                           else 'fp32']
        achieved = r['flops'] / (lat['p50'] * 1e-3) / 1e9
        r.update({'latency_ms': {k: lat[k] for k in ('p50', 'p90', 'p99')},
                  'fps': 1e3 / lat['p50'], 'achieved_gflops': achieved,
                  'roofline_fraction': achieved / peak if peak else None})
        print(f'bench: {r["name"]}: {lat["p50"]:.1f} ms', flush=True)
    base = next(r for r in results if r['baseline'])
    for r in results:
        r['speedup_vs_baseline'] = base['latency_ms']['p50'] / r['latency_ms']['p50']
        r['miou_drop_vs_baseline'] = base['miou'] - r['miou']
        r['flops_ratio_vs_baseline'] = r['flops'] / base['flops']
    doc = {'machine': machine, 'config': str(config_path), 'split': cfg.get('split', 'val'),
           'timing': {'warmup': warmup, 'runs': runs, 'passes': int(cfg.get('timing_passes', 1))},
           'variants': results, 'reproducibility': check}
    write_results(doc, out)
    return doc


def _timing_of(doc: dict) -> tuple[int, int]:
    """Return the (warmup, runs) a results document was timed with."""
    t = doc.get('timing')
    if t is None and Path(str(doc.get('config', ''))).is_file():
        cfg = yaml.safe_load(Path(doc['config']).read_text())
        t = {'warmup': cfg.get('warmup', 10), 'runs': cfg.get('runs', 50)}
    t = t or {'warmup': 5, 'runs': 30}
    return int(t['warmup']), int(t['runs'])


def retime(results_path: str | os.PathLike, warmup: Optional[int] = None,
           runs: Optional[int] = None) -> dict:
    """Time the models of a committed ``results.json`` again; compare the speed-up ratios.

    Answers "does re-running reproduce the ratios?" across time, not only within one run
    (the benchmark's second timing pass). Warm-up and run counts default to the committed
    run's. Returns per variant the new p50 and speed-up, and the relative deviation of every
    speed-up from the committed one.
    """
    import datetime

    doc = json.loads(Path(results_path).read_text())
    w, r = _timing_of(doc)
    warmup = w if warmup is None else warmup
    runs = r if runs is None else runs
    threads = int(doc['machine']['threads'])
    rs = doc['variants']
    missing = [r['onnx'] for r in rs if not Path(r['onnx']).is_file()]
    if missing:
        raise UserError(f'{len(missing)} benchmark models are missing (e.g. {missing[0]}): '
                        f'run the benchmark first')
    sessions = [session(r['onnx'], threads) for r in rs]
    feeds = []
    for s in sessions:
        i = s.get_inputs()[0]
        feeds.append({i.name: np.random.default_rng(0).standard_normal(
            [int(d) for d in i.shape]).astype(np.float32)})
    bandwidth = {'before': memory_bandwidth()}
    lats = time_interleaved(sessions, feeds, warmup, runs)
    bandwidth['after'] = memory_bandwidth()
    b = next(i for i, r in enumerate(rs) if r['baseline'])
    rows = {}
    for r, lat in zip(rs, lats):
        speedup = lats[b]['p50'] / lat['p50']
        rows[r['name']] = {'p50_ms': lat['p50'], 'speedup': speedup,
                           'committed_speedup': r['speedup_vs_baseline'],
                           'deviation': speedup / r['speedup_vs_baseline'] - 1}
    dev = sorted(abs(v['deviation']) for v in rows.values())
    when = datetime.datetime.now().isoformat(timespec='seconds')
    return {'results': str(results_path), 'when': when, 'warmup': warmup, 'runs': runs,
            'baseline_p50_ms': {'committed': rs[b]['latency_ms']['p50'], 'now': lats[b]['p50']},
            'memory_copy_gbs': {'committed': doc['machine'].get('memory_copy_gbs'),
                                'now': bandwidth},
            'max_abs_deviation': dev[-1], 'median_abs_deviation': dev[len(dev) // 2],
            'variants': rows}


def write_results(doc: dict, out: Path) -> None:
    """Write results.json, results.csv, results.md and pareto.png."""
    atomic_write_text(out / 'results.json', json.dumps(doc, indent=2) + '\n')
    cols = ['name', 'policy', 'budget', 'precision', 'params', 'macs', 'flops', 'size_mb',
            'p50_ms', 'p90_ms', 'p99_ms', 'fps', 'miou', 'speedup_vs_baseline',
            'miou_drop_vs_baseline', 'achieved_gflops', 'roofline_fraction']
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols, extrasaction='ignore')
    w.writeheader()
    for r in doc['variants']:
        w.writerow({**r, 'budget': json.dumps(r['budget']), 'p50_ms': r['latency_ms']['p50'],
                    'p90_ms': r['latency_ms']['p90'], 'p99_ms': r['latency_ms']['p99']})
    atomic_write_text(out / 'results.csv', buf.getvalue())
    atomic_write_text(out / 'results.md', markdown_table(doc) + matched_latency_table(doc, 0.05)
                      + matched_latency_table(doc, 0.10))
    pareto_plot(doc, out / 'pareto.png')


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
             '| variant | policy | precision | GFLOPs | params (M) | p50 / p90 / p99 ms | FPS | '
             'mIoU | speed-up | mIoU drop (pts) | G(FL)OP/s (% peak) |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for r in doc['variants']:
        lat = r['latency_ms']
        frac = f' ({100 * r["roofline_fraction"]:.0f}%)' if r['roofline_fraction'] else ''
        lines.append(
            f'| {r["name"]}{" (baseline)" if r["baseline"] else ""} | {r["policy"]} | '
            f'{r["precision"]} | {r["flops"] / 1e9:.2f} | {r["params"] / 1e6:.2f} | '
            f'{lat["p50"]:.1f} / {lat["p90"]:.1f} / {lat["p99"]:.1f} | {r["fps"]:.1f} | '
            f'{r["miou"]:.4f} | {r["speedup_vs_baseline"]:.2f}x | '
            f'{100 * r["miou_drop_vs_baseline"]:+.2f} | {r["achieved_gflops"]:.0f}{frac} |')
    return '\n'.join(lines) + '\n'


def matched_latency(doc: dict, policy: str = 'neighbor', tol: float = 0.05) -> list[dict]:
    """Return, per ``policy`` variant, the most accurate rival of every other policy nearby.

    A rival has the same precision and a latency within ``tol`` (relative) of the variant's.
    """
    rs = [r for r in doc['variants'] if r['policy'] != 'none']
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
        c = colors.setdefault(r['policy'], f'C{len(colors)}')
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
    path.write_bytes(buf.getvalue())
