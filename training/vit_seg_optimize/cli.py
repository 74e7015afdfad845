"""``vit-seg export | quantize | sensitivity | bench``: registered through ``vit_seg.commands``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import numpy as np

from vit_seg_node.core.argtypes import BUDGET, COUNT, float_in, int_in, THREADS
from vit_seg_node.core.card import MAX_BATCH, MAX_INPUT_SIDE, MAX_OUTPUT_STRIDE
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.lifetime import terminate_on_sigterm


def _reduction_arg(text: Optional[str]) -> Optional[dict]:
    """Parse ``--reduction`` (YAML/JSON mapping, e.g. '{policy: tome, r: 20}')."""
    if not text:
        return None
    import yaml

    try:
        spec = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f'--reduction is not valid YAML: {exc}') from None
    if not isinstance(spec, dict) or 'policy' not in spec:
        raise UserError("--reduction must be a mapping with a policy, e.g. "
                        "'{policy: neighbor, window_first: 0.6, ratio: 0.25}'")
    return spec


def report_path(text: str) -> Path:
    """Return ``text`` as the path of a JSON report, checked before any work is done.

    It must end in ``.json`` (its Markdown table goes beside it, ``.md``), and neither it nor
    the table may be a folder.
    """
    p = Path(text)
    if p.suffix.lower() != '.json':
        raise UserError(f'--json must name a .json file (the table goes beside it as .md), '
                        f'got {text!r}')
    for q in (p, p.with_suffix('.md')):
        if q.is_dir():
            raise UserError(f'{q} is a folder, not a file')
    if p.parent.exists() and not p.parent.is_dir():
        raise UserError(f'cannot write {p}: {p.parent} is not a folder')
    return p


def cmd_export(a: argparse.Namespace) -> int:
    """Export a checkpoint to ONNX with its model card, verified against PyTorch."""
    from vit_seg_node.cli import command_line
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.core.io import load_json
    from vit_seg_optimize.export import export_checkpoint

    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(a.num_frames, len(ds)))]
    metrics = load_json(a.metrics, 'metrics') if a.metrics else None
    rep = export_checkpoint(a.checkpoint, a.out, frames, command=command_line(),
                            name=a.name, opset=a.opset, metrics=metrics, output=a.output,
                            reduction=_reduction_arg(a.reduction),
                            img_size=tuple(a.img_size) if a.img_size else None,
                            batch=a.batch)
    print(f'{a.out}: verified on {rep["frames"]} frames, relative error '
          f'{rep["max_relative_error"]:.1e}, label mismatch {rep["max_label_mismatch"]:.1e}')
    return 0


def cmd_quantize(a: argparse.Namespace) -> int:
    """Write a reduced-precision model with its card (``quant.write_quantized``)."""
    from vit_seg_node.cli import command_line
    from vit_seg_node.core.card import load_card
    from vit_seg_node.core.datasets import spread_frames
    from vit_seg_optimize.export import card_batches, frames_to_batches
    from vit_seg_optimize.plan import load_plan
    from vit_seg_optimize.quant import write_quantized

    card = load_card(a.model)
    calib = card_batches(frames_to_batches(spread_frames(a.calib, a.split, a.num_calib), card),
                         card.batch) if a.calib else None
    out = write_quantized(a.model, a.out, a.format, load_plan(a.plan) if a.plan else None,
                          calib, a.split, a.method, command_line())
    print(f'{a.out}: {a.format} ({out.precision["default"]})')
    return 0


def cmd_fold_input(a: argparse.Namespace) -> int:
    """Write a model that takes the frame's bytes (``fold_input.fold_input``)."""
    from vit_seg_node.cli import command_line
    from vit_seg_optimize.fold_input import fold_input

    card = fold_input(a.model, a.out, command_line())
    print(f'{a.out}: takes {card.input_dtype} {card.input_layout} frames; against {a.model}: '
          f'{card.extra["fold_check"]}')
    return 0


def cmd_label_stride(a: argparse.Namespace) -> int:
    """Write a model that arg-maxes at 1/stride of its input (``label_stride.label_stride``)."""
    from vit_seg_node.cli import command_line
    from vit_seg_node.core.card import load_card
    from vit_seg_node.core.datasets import spread_frames
    from vit_seg_node.core.processing import resize_to_input
    from vit_seg_optimize.label_stride import label_stride

    frames = None
    if a.frames:
        card = load_card(a.model)
        frames = np.stack([resize_to_input(f, card)[0]
                           for f in spread_frames(a.frames, a.split, a.num_frames)])
    card = label_stride(a.model, a.out, a.stride, command_line(), frames, a.min_agreement)
    print(f'{a.out}: labels at 1/{card.output_stride} of the input; against {a.model}: '
          f'{card.extra["stride_check"]}; score it with vit-seg eval --record')
    return 0


def cmd_sensitivity(a: argparse.Namespace) -> int:
    """Per-group INT8 sensitivity (mIoU drop, latency gain) and a greedy precision plan."""
    from vit_seg_node.core.card import load_card
    from vit_seg_node.core.datasets import spread_frames
    from vit_seg_node.core.io import write_json
    from vit_seg_optimize.export import card_batches, frames_to_batches
    from vit_seg_optimize.plan import allocate
    from vit_seg_optimize.sensitivity import sensitivity

    card = load_card(a.model)
    calib = card_batches(frames_to_batches(spread_frames(a.data, a.calib_split, a.num_calib),
                                           card), card.batch)
    sens = sensitivity(a.model, card, a.data, a.split, a.limit, a.threads, pairs=a.pairs,
                       calibration=calib)
    sens['calibration'] = {'split': a.calib_split, 'frames': len(calib)}
    sens['plan'] = allocate(sens, a.budget)
    write_json(a.json, sens)
    for g, s in sens['groups'].items():
        print(f'{g:20s} mIoU drop {100 * s["miou_drop"]:+.2f} pts, latency gain '
              f'{s["latency_gain_ms"]:+.1f} +- {s["noise_ms"]:.1f} ms -> '
              f'{sens["plan"]["groups"][g]}')
    return 0


def cmd_bench(a: argparse.Namespace) -> int:
    """Run the benchmark grid (results.{csv,json,md}, pareto.png) or re-time a finished run."""
    from vit_seg_optimize.bench import retime_and_record, run_bench
    from vit_seg_optimize.report import markdown_table, matched_latency_table

    if a.retime:
        rep, path = retime_and_record(a.retime, a.out)
        print(f'retime: baseline {rep["baseline_p50_ms"]["now"]:.1f} ms now vs '
              f'{rep["baseline_p50_ms"]["committed"]:.1f} committed; speed-up ratios deviate by '
              f'{100 * rep["median_abs_deviation"]:.1f} % (median), '
              f'{100 * rep["max_abs_deviation"]:.1f} % (max); {path}')
        return 0
    if not a.config:
        raise UserError('bench needs --config (or --retime RESULTS_JSON)')
    doc = run_bench(a.config, a.out)
    print(markdown_table(doc) + matched_latency_table(doc))
    return 0


def cmd_regimes(a: argparse.Namespace) -> int:
    """Time models hot, cold and under load, at 1 and 2 threads."""
    from vit_seg_node.core.io import atomic_write_text, write_json
    from vit_seg_optimize.regimes import markdown, run_regimes

    missing = [m for m in a.model if not Path(m).is_file()]
    if missing:
        raise UserError(f'model not found: {missing[0]}')
    out = report_path(a.json)
    terminate_on_sigterm()
    doc = run_regimes(a.model, a.regimes, a.threads, a.warmup, a.runs, a.repeats)
    write_json(out, doc)
    atomic_write_text(out.with_suffix('.md'), markdown(doc))
    print(markdown(doc))
    return 0


def cmd_tune(a: argparse.Namespace) -> int:
    """Tune the precision plan and threads of an FP32 model for this machine (cached)."""
    from vit_seg_optimize.tune import tune

    if not Path(a.model).is_file():
        raise UserError(f'model not found: {a.model}')
    terminate_on_sigterm()
    print(tune(a.model, a.data, a.out, a.regime, a.budget, a.split, a.limit, a.pairs))
    return 0


def register_graph_edits(sub) -> None:
    """Add ``fold-input`` and ``label-stride``: edits of an exported graph, checked against it."""
    p = sub.add_parser('fold-input', help='fold the input normalisation into the graph '
                                          '(uint8 frames in)')
    p.add_argument('--model', required=True,
                   help='ONNX model with its card (any precision)')
    p.add_argument('--out', required=True)
    p.set_defaults(func=cmd_fold_input)

    p = sub.add_parser('label-stride', help='arg-max at 1/stride of the input (the host '
                                            'upsamples the labels)')
    p.add_argument('--model', required=True, help='ONNX model with its card (any precision)')
    p.add_argument('--out', required=True)
    p.add_argument('--stride', type=int_in(2, MAX_OUTPUT_STRIDE), default=2)
    p.add_argument('--frames', help='dataset root: check against the original on its frames '
                                    '(default: generated frames)')
    p.add_argument('--split', default='val')
    p.add_argument('--num-frames', type=int_in(1, 1000), default=8)
    p.add_argument('--min-agreement', type=float_in(0.0, 1.0), default=0.95,
                   help='share of pixels whose label must match the original\'s')
    p.set_defaults(func=cmd_label_stride)


def register(sub) -> None:
    """Add the optimisation subcommands to ``vit-seg``'s subparsers."""
    p = sub.add_parser('export', help='export a checkpoint to ONNX with its model card')
    p.add_argument('--checkpoint', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--frames', required=True, help='dataset root with real frames to verify on')
    p.add_argument('--split', default='val')
    p.add_argument('--num-frames', type=int_in(1, 1000), default=4)
    p.add_argument('--opset', type=int_in(11, 25), default=17)
    p.add_argument('--metrics', help='JSON of measured metrics to put in the card')
    p.add_argument('--name', help='model name in the card (default: the output file stem)')
    p.add_argument('--reduction', help="token reduction and budget, YAML: "
                   "'{policy: neighbor, window_first: 0.6, ratio: 0.25, locations: [1, 3, 6]}'")
    p.add_argument('--img-size', type=int_in(1, MAX_INPUT_SIDE), nargs=2, metavar=('H', 'W'),
                   help='export for another input size (multiples of the patch size)')
    p.add_argument('--batch', type=int_in(1, MAX_BATCH), default=1,
                   help='static batch of the graph: frames of this many cameras in one call')
    p.add_argument('--output', default='labels', choices=['labels', 'logits'],
                   help='graph output: uint8 labels (ArgMax in the graph) or float logits')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('quantize', help='INT8 export: dynamic (CPU) or QDQ (TensorRT)')
    p.add_argument('--model', required=True, help='FP32 ONNX with its card')
    p.add_argument('--out', required=True)
    p.add_argument('--format', default='dynamic', choices=['dynamic', 'qdq', 'qdq-fp16', 'fp16'],
                   help='dynamic: INT8 for ONNX Runtime CPU; qdq: INT8 Q/DQ for TensorRT; '
                        'qdq-fp16: Q/DQ with FP16-typed float parts (strongly typed TensorRT, '
                        'opset >= 19); fp16: FP16 only')
    p.add_argument('--plan', help='precision plan JSON (groups -> int8|fp32), or a '
                                  '`vit-seg sensitivity` report holding one')
    p.add_argument('--calib', help='dataset root with calibration frames (qdq, and dynamic '
                                   'plans with static INT8 parts)')
    p.add_argument('--split', default='fit', help='calibration split')
    p.add_argument('--num-calib', type=COUNT, default=16)
    p.add_argument('--method', default='minmax', choices=['minmax', 'percentile', 'entropy'])
    p.set_defaults(func=cmd_quantize)

    register_graph_edits(sub)

    p = sub.add_parser('sensitivity', help='per-group INT8 sensitivity and a precision plan')
    p.add_argument('--model', required=True)
    p.add_argument('--data', required=True)
    p.add_argument('--split', default='heldout')
    p.add_argument('--limit', type=COUNT, default=20)
    p.add_argument('--threads', type=THREADS, default=2)
    p.add_argument('--budget', type=BUDGET, default=0.005, help='mIoU budget (0.005 = 0.5 pt)')
    p.add_argument('--pairs', type=COUNT, default=60,
                   help='interleaved timing pairs per group (more: steadier savings)')
    p.add_argument('--calib-split', default='fit',
                   help='frames that calibrate the static INT8 parts')
    p.add_argument('--num-calib', type=COUNT, default=16)
    p.add_argument('--json', required=True)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser('regimes', help='latency hot, cold and under a CPU load, 1 and 2 threads')
    p.add_argument('--model', action='append', required=True, help='ONNX model (repeatable)')
    p.add_argument('--regimes', nargs='+', default=['hot', 'cold', 'loaded'],
                   choices=['hot', 'cold', 'loaded'])
    p.add_argument('--threads', nargs='+', default=['1', '2', '2-nospin'],
                   choices=['1', '2', '2-runspin', '2-nospin'],
                   help='2: ONNX Runtime\'s default pool; 2-runspin: it spins during a run only '
                        '(as the node runs it); 2-nospin: it never spins')
    p.add_argument('--warmup', type=int_in(0, 100_000), default=5)
    p.add_argument('--runs', type=COUNT, default=30)
    p.add_argument('--repeats', type=int_in(1, 100), default=1,
                   help='time each thread setting\'s regimes this many times in turn; each '
                        'cell keeps the median p50 and the range')
    p.add_argument('--json', required=True, help='report (a .md table is written beside it)')
    p.set_defaults(func=cmd_regimes)

    p = sub.add_parser('tune', help='precision plan and threads chosen on this machine (cached)')
    p.add_argument('--model', required=True, help='FP32 ONNX with its card')
    p.add_argument('--data', required=True, help='dataset root (accuracy and calibration)')
    p.add_argument('--out', default='runs/tuned')
    p.add_argument('--regime', default='loaded', choices=['hot', 'loaded'])
    p.add_argument('--budget', type=BUDGET, default=0.005, help='mIoU budget (0.005 = 0.5 pt)')
    p.add_argument('--split', default='heldout')
    p.add_argument('--limit', type=COUNT, default=20)
    p.add_argument('--pairs', type=COUNT, default=30)
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser('bench', help='benchmark a grid of variants (one table, one plot)')
    p.add_argument('--config', help='benchmark YAML (variants grid)')
    p.add_argument('--out', required=True, help='output directory')
    p.add_argument('--retime', metavar='RESULTS_JSON',
                   help='instead: time the models of a finished run again and compare the '
                        'speed-up ratios (appends to OUT/retime.json)')
    p.set_defaults(func=cmd_bench)
