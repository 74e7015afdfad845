"""``vit-seg``: the command line. Each subcommand is a thin wrapper over a library function.

Errors the user can fix (bad paths, unreadable files, invalid model cards) print one line and
exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import shlex
import sys
from typing import Callable, Optional

from vit_seg_node.errors import UserError

Handler = Callable[[argparse.Namespace], int]


def _command_line() -> str:
    return 'vit-seg ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])


def write_json(path: str | os.PathLike, obj: dict) -> None:
    """Write a JSON report atomically."""
    from vit_seg_node.runtime.card import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2) + '\n')


# ----------------------------------------------------------------------------- infer
def cmd_infer(a: argparse.Namespace) -> int:
    """Segment one image and write its colour mask (and optionally an overlay)."""
    from vit_seg_node.runtime.pipeline import SegmentationPipeline, read_rgb, write_rgb
    from vit_seg_node.runtime.processing import colorize, overlay

    image = read_rgb(a.image)
    pipe = SegmentationPipeline(a.model, backend=a.backend, threads=a.threads)
    result = pipe(image)
    color = colorize(result.labels, pipe.card)
    write_rgb(a.out, color)
    if a.overlay:
        write_rgb(a.overlay, overlay(image, color, a.alpha))
    if a.labels:
        import cv2

        cv2.imwrite(str(a.labels), result.labels)
    print(f'{a.out}: {image.shape[1]}x{image.shape[0]}, pre {result.pre_ms:.1f} ms, '
          f'infer {result.infer_ms:.1f} ms, post {result.post_ms:.1f} ms')
    return 0


# ----------------------------------------------------------------------------- train / eval
def cmd_train(a: argparse.Namespace) -> int:
    """Train from a config (resumable)."""
    from training.train import train

    print(json.dumps(train(a.config, resume=a.resume)))
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """Score a checkpoint or an exported model on a dataset split."""
    from training.data import SegmentationDataset

    if a.record and (a.checkpoint or a.limit):
        raise UserError('--record stores full-split metrics in an exported model\'s card: use it '
                        'with --model and without --limit')
    dataset = SegmentationDataset(a.data, a.split, None, cache=False)
    if a.checkpoint:
        import torch

        from training.checkpoint import load_model
        from training.config import card_from_config
        from training.evaluate import evaluate_model

        if a.threads:
            torch.set_num_threads(a.threads)
        model, cfg = load_model(a.checkpoint)
        card = card_from_config(cfg, 'checkpoint')
        if a.fake_quant:   # INT8 fake quantization, calibrated on train frames (min-max)
            from training.fakequant import calibrate_on_split, quantize_model

            quantize_model(model, calibrator='minmax')
            calibrate_on_split(model, a.data, 'train', card, a.fake_quant)
        report = evaluate_model(model, dataset, card)
        report['fake_quant_calibration_frames'] = a.fake_quant or None
        source = str(a.checkpoint)
    else:
        from training.evaluate import evaluate_predictor
        from vit_seg_node.runtime.pipeline import SegmentationPipeline

        pipe = SegmentationPipeline(a.model, backend=a.backend, threads=a.threads)
        pairs = (dataset.load(i) for i in range(len(dataset)))
        report = evaluate_predictor(pipe.backend.infer, pairs, pipe.card, limit=a.limit)
        source = str(pipe.model_path)
    report.update({'model': source, 'data': str(a.data), 'split': a.split})
    if a.json:
        write_json(a.json, report)
    if a.record:
        from vit_seg_node.runtime.card import save_card

        pipe.card.metrics = report
        save_card(pipe.card, pipe.model_path)
    print(f'{source} on {a.data}/{a.split}: mIoU {report["miou"]:.4f}, pixel acc '
          f'{report["pixel_acc"]:.4f}, {report["num_images"]} images')
    return 0


# ----------------------------------------------------------------------------- export
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


def cmd_export(a: argparse.Namespace) -> int:
    """Export a checkpoint to ONNX with its model card, verified against PyTorch."""
    from training.data import SegmentationDataset
    from training.export import export_checkpoint

    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(a.num_frames, len(ds)))]
    metrics = json.loads(Path(a.metrics).read_text()) if a.metrics else None
    rep = export_checkpoint(a.checkpoint, a.out, frames, command=_command_line(),
                            name=a.name, opset=a.opset, metrics=metrics, output=a.output,
                            reduction=_reduction_arg(a.reduction),
                            img_size=tuple(a.img_size) if a.img_size else None)
    print(f'{a.out}: verified on {rep["frames"]} frames, relative error '
          f'{rep["max_relative_error"]:.1e}, label mismatch {rep["max_label_mismatch"]:.1e}')
    return 0


# ----------------------------------------------------------------------------- build-engine
def cmd_build_engine(a: argparse.Namespace) -> int:
    """Build (or reuse) a TensorRT engine from an exported ONNX file."""
    import shutil

    from vit_seg_node.runtime.backends.tensorrt_backend import build_or_reuse
    from vit_seg_node.runtime.card import card_path_for, load_card

    card = load_card(a.onnx)
    cached = build_or_reuse(a.onnx, card, cache_dir=a.cache_dir, force=a.force)
    if a.out:
        shutil.copy(cached, a.out)
        shutil.copy(card_path_for(a.onnx), card_path_for(a.out))
        print(f'{a.out} (cached as {cached})')
    return 0


# ----------------------------------------------------------------------------- bags
def cmd_make_bag(a: argparse.Namespace) -> int:
    """Write a rosbag2 from an image folder (and label maps)."""
    from vit_seg_node.bags.make_bag import make_bag

    s = make_bag(a.images, a.out, labels=a.labels, storage=a.storage, rate=a.rate,
                 compressed=a.compressed, limit=a.limit, overwrite=a.overwrite)
    print(f'{s["bag"]}: {s["frames"]} frames on {s["image_topic"]}'
          + (f' with ground truth on {s["gt_topic"]}' if s['gt_topic'] else '')
          + f' ({s["storage"]})')
    return 0


def _print_replay(r: dict) -> None:
    from vit_seg_node.bags.replay import markdown

    print(markdown(r))


def cmd_replay(a: argparse.Namespace) -> int:
    """Replay a bag through the node over DDS and score it."""
    from vit_seg_node.bags.replay import replay

    r = replay(a.bag, a.json, model=a.model, node_running=a.node_running, rate=a.rate,
               image_topic=a.image_topic, gt_topic=a.gt_topic, qos=a.qos, limit=a.limit,
               threads=a.threads, domain=a.domain_id, backend=a.backend)
    _print_replay(r)
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    """Replay the shipped sample bag through the node with the shipped model."""
    from vit_seg_node.bags.replay import replay
    from vit_seg_node.runtime.pipeline import DATA_DIR

    bag = DATA_DIR / 'bags' / 'camvid_val_sample'
    out = Path(a.out)
    print(f'demo: replaying {bag} through vit_seg_node ({a.model or "shipped model"}) at '
          f'x{a.rate}, ROS domain {a.domain_id}...', flush=True)
    r = replay(bag, out / 'replay.json', model=a.model, rate=a.rate, limit=a.limit,
               threads=a.threads, domain=a.domain_id, qos='reliable')
    _print_replay(r)
    print(f'demo: report in {out}/replay.json, replay.md and replay_overlay_*.png')
    return 0 if r['answered'] > 0 else 1


# ----------------------------------------------------------------------------- bench
def cmd_bench(a: argparse.Namespace) -> int:
    """Run the benchmark grid and write results.{csv,json,md} and pareto.png."""
    from training.bench import markdown_table, matched_latency_table, retime, run_bench

    if a.retime:
        from vit_seg_node.runtime.card import atomic_write_text

        rep = retime(a.retime)
        path = Path(a.out) / 'retime.json'
        history = json.loads(path.read_text()) if path.is_file() else []
        atomic_write_text(path, json.dumps(history + [rep], indent=2) + '\n')
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


def cmd_bench_node(a: argparse.Namespace) -> int:
    """Measure the node's end-to-end overhead over raw backend inference."""
    from training.data import SegmentationDataset
    from vit_seg_node.bags.node_overhead import measure

    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(5, len(ds)))]
    r = measure(a.model, frames, runs=a.runs, threads=a.threads, domain=a.domain_id,
                out_json=a.json)
    e2e = r['node_end_to_end_ms']
    print(f'raw backend inference p50 {r["raw_infer_ms"]["p50"]:.1f} ms; node publish->mask '
          f'p50 {e2e["p50"]:.1f} ms ({r["resolution"]}); overhead {100 * r["overhead"]:.1f}%')
    return 0


# ----------------------------------------------------------------------------- quantization
def cmd_quantize(a: argparse.Namespace) -> int:
    """Write a reduced-precision model with its card.

    ``dynamic``: INT8 MatMuls for ONNX Runtime on a CPU; ``qdq``: static INT8 Q/DQ for TensorRT;
    ``qdq-fp16``: the same with the float parts typed FP16 (a strongly typed TensorRT network);
    ``fp16``: FP16 without INT8.
    """
    import tempfile

    from training.data import spread_frames
    from training.export import frames_to_batches
    from training.quant import (group_precisions, load_plan, quantize_mixed, quantize_qdq,
                                to_float16)
    from vit_seg_node.runtime.card import load_card, save_card

    card = load_card(a.model)
    plan = load_plan(a.plan) if a.plan else {'default': 'int8'}
    calib = frames_to_batches(spread_frames(a.calib, a.split, a.num_calib), card) \
        if a.calib else None
    if a.format == 'dynamic':
        quantize_mixed(a.model, a.out, plan, calib, card.input_name)
    elif a.format == 'fp16':
        plan = {'default': 'fp16'}
        to_float16(a.model, a.out)
    else:
        if not a.calib:
            raise UserError(f'--format {a.format} needs --calib DIR (frames to calibrate on)')
        with tempfile.TemporaryDirectory() as tmp:
            qdq = Path(tmp) / 'qdq.onnx' if a.format == 'qdq-fp16' else Path(a.out)
            quantize_qdq(a.model, qdq, calib, card.input_name, a.method, plan)
            if a.format == 'qdq-fp16':
                to_float16(qdq, a.out)
    default = 'mixed' if 'fp32' in json.dumps(plan) else plan.get('default', 'int8')
    groups = {} if a.format == 'fp16' else group_precisions(a.model, plan)
    card.precision = {'default': default, 'form': a.format, 'plan': plan, 'groups': groups,
                      'calibration': a.method if a.format.startswith('qdq') else (
                          f'{len(calib)} {a.split} frames (static INT8 parts)' if calib
                          else 'none'),
                      'float': 'fp16' if a.format.endswith('fp16') else 'fp32'}
    card.command = _command_line()
    card.metrics = {}   # the float model's; measure this one: vit-seg eval --model OUT --record
    save_card(card, a.out)
    print(f'{a.out}: {a.format} ({default})')
    return 0


def cmd_sensitivity(a: argparse.Namespace) -> int:
    """Per-group INT8 sensitivity (mIoU drop, latency gain) and a greedy precision plan."""
    from training.data import spread_frames
    from training.export import frames_to_batches
    from training.quant import allocate, save_json, sensitivity
    from vit_seg_node.runtime.card import load_card

    card = load_card(a.model)
    calib = frames_to_batches(spread_frames(a.data, a.calib_split, a.num_calib), card)
    sens = sensitivity(a.model, card, a.data, a.split, a.limit, a.threads, pairs=a.pairs,
                       calibration=calib)
    sens['calibration'] = {'split': a.calib_split, 'frames': len(calib)}
    sens['plan'] = allocate(sens, a.budget)
    save_json(sens, a.json)
    for g, s in sens['groups'].items():
        print(f'{g:20s} mIoU drop {100 * s["miou_drop"]:+.2f} pts, latency gain '
              f'{s["latency_gain_ms"]:+.1f} +- {s["noise_ms"]:.1f} ms -> '
              f'{sens["plan"]["groups"][g]}')
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """Return the ``vit-seg`` argument parser."""
    ap = argparse.ArgumentParser(prog='vit-seg', description='Frugal ViT semantic segmentation.')
    sub = ap.add_subparsers(dest='command', required=True)

    p = sub.add_parser('infer', help='segment one image')
    p.add_argument('--model', help='model file (.onnx/.engine) with its card; default: shipped')
    p.add_argument('--image', required=True)
    p.add_argument('--out', required=True, help='colour mask PNG (same size as the image)')
    p.add_argument('--overlay', help='also write the mask blended over the image')
    p.add_argument('--labels', help='also write the class-id map (mono PNG)')
    p.add_argument('--alpha', type=float, default=0.5)
    p.add_argument('--backend', default='auto')
    p.add_argument('--threads', type=int, default=0)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser('train', help='train a model from a YAML config')
    p.add_argument('--config', required=True)
    p.add_argument('--resume', action='store_true', help='continue from output_dir/last.pt')
    p.set_defaults(func=cmd_train)

    p = sub.add_parser('eval', help='mIoU of a checkpoint or exported model on a split')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--checkpoint', help='training weights (config.yaml beside them)')
    g.add_argument('--model', help='exported model with card; default: the shipped model')
    p.add_argument('--data', required=True, help='dataset root (SegNet or images/masks layout)')
    p.add_argument('--split', default='val',
                   help='split: a folder, heldout | fit | all, or train:SEQ[,SEQ] / train:!SEQ')
    p.add_argument('--json', help='write the report here')
    p.add_argument('--backend', default='auto')
    p.add_argument('--threads', type=int, default=0)
    p.add_argument('--limit', type=int, default=None, help='score only the first N frames')
    p.add_argument('--fake-quant', type=int, default=0, metavar='N',
                   help='with --checkpoint: score under INT8 fake quantization calibrated on N '
                        'train frames')
    p.add_argument('--record', action='store_true',
                   help='also store the report as the metrics of the model card')
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser('export', help='export a checkpoint to ONNX with its model card')
    p.add_argument('--checkpoint', required=True)
    p.add_argument('--out', required=True)
    p.add_argument('--frames', required=True, help='dataset root with real frames to verify on')
    p.add_argument('--split', default='val')
    p.add_argument('--num-frames', type=int, default=4)
    p.add_argument('--opset', type=int, default=17)
    p.add_argument('--metrics', help='JSON of measured metrics to put in the card')
    p.add_argument('--name', help='model name in the card (default: the output file stem)')
    p.add_argument('--reduction', help="token reduction and budget, YAML: "
                   "'{policy: neighbor, window_first: 0.6, ratio: 0.25, locations: [1, 3, 6]}'")
    p.add_argument('--img-size', type=int, nargs=2, metavar=('H', 'W'),
                   help='export for another input size (multiples of the patch size)')
    p.add_argument('--output', default='labels', choices=['labels', 'logits'],
                   help='graph output: uint8 labels (ArgMax in the graph) or float logits')
    p.set_defaults(func=cmd_export)

    p = sub.add_parser('build-engine', help='build a TensorRT engine (cached, never forced)')
    p.add_argument('--onnx', required=True, help='exported model with its card')
    p.add_argument('--out', help='also copy the engine (and card) here')
    p.add_argument('--cache-dir', help='engine + timing cache (default ~/.cache/vit_seg_node)')
    p.add_argument('--force', action='store_true', help='rebuild even if a cached engine fits')
    p.set_defaults(func=cmd_build_engine)

    p = sub.add_parser('make-bag', help='write a rosbag2 from images (+ label maps)')
    p.add_argument('--images', required=True)
    p.add_argument('--labels', help='label maps with the same file names (ground truth)')
    p.add_argument('--out', required=True, help='bag directory to create')
    p.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'])
    p.add_argument('--rate', type=float, default=1.0, help='frames per second of the stamps')
    p.add_argument('--compressed', action='store_true', help='JPEG CompressedImage frames')
    p.add_argument('--limit', type=int, default=None)
    p.add_argument('--overwrite', action='store_true')
    p.set_defaults(func=cmd_make_bag)

    def replay_args(p: argparse.ArgumentParser) -> None:
        p.add_argument('--rate', type=float, default=1.0, help='playback speed factor')
        p.add_argument('--limit', type=int, default=None, help='play only the first N frames')
        p.add_argument('--threads', type=int, default=0, help='backend threads of the node')

    p = sub.add_parser('replay', help='play a bag through the node and score it')
    p.add_argument('--bag', required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument('--model', help='model for the node this command starts')
    g.add_argument('--node-running', action='store_true', help='use a node already running')
    p.add_argument('--image-topic', help='default: the first Image/CompressedImage topic')
    p.add_argument('--gt-topic', default='/camera/semantic_gt')
    p.add_argument('--qos', default='reliable', choices=['reliable', 'sensor_data'])
    p.add_argument('--backend', default='auto')
    p.add_argument('--domain-id', type=int, default=None, help='default: $ROS_DOMAIN_ID or 0')
    p.add_argument('--json', required=True)
    replay_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser('bench', help='benchmark a grid of variants (one table, one plot)')
    p.add_argument('--config', help='benchmark YAML (variants grid)')
    p.add_argument('--out', required=True, help='output directory')
    p.add_argument('--retime', metavar='RESULTS_JSON',
                   help='instead: time the models of a finished run again and compare the '
                        'speed-up ratios (appends to OUT/retime.json)')
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser('bench-node', help="the node's overhead over raw backend inference")
    p.add_argument('--model', help='default: the shipped model')
    p.add_argument('--frames', required=True, help='dataset root with 480x360 frames')
    p.add_argument('--split', default='val')
    p.add_argument('--runs', type=int, default=40)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--domain-id', type=int, default=58)
    p.add_argument('--json', help='write the report here')
    p.set_defaults(func=cmd_bench_node)

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
                                   'plans with INT8 attention products)')
    p.add_argument('--split', default='train', help='calibration split')
    p.add_argument('--num-calib', type=int, default=16)
    p.add_argument('--method', default='minmax', choices=['minmax', 'percentile', 'entropy'])
    p.set_defaults(func=cmd_quantize)

    p = sub.add_parser('sensitivity', help='per-group INT8 sensitivity and a precision plan')
    p.add_argument('--model', required=True)
    p.add_argument('--data', required=True)
    p.add_argument('--split', default='val')
    p.add_argument('--limit', type=int, default=20)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--budget', type=float, default=0.005, help='mIoU budget (0.005 = 0.5 pt)')
    p.add_argument('--pairs', type=int, default=60,
                   help='interleaved timing pairs per group (more: steadier savings)')
    p.add_argument('--calib-split', default='train',
                   help='frames that calibrate the static INT8 of attention products')
    p.add_argument('--num-calib', type=int, default=16)
    p.add_argument('--json', required=True)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser('demo', help='replay the shipped sample bag through the node')
    p.add_argument('--out', default='runs/demo')
    p.add_argument('--model', help='model for the node; default: the shipped default.onnx '
                                   '(also shipped: fast.onnx, see the README)')
    p.add_argument('--domain-id', type=int, default=57, help='isolated ROS domain of the demo')
    replay_args(p)
    p.set_defaults(func=cmd_demo, rate=4.0)
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """Run ``vit-seg``; user errors give one line on stderr and exit code 2."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f'vit-seg {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == '__main__':
    sys.exit(main())
