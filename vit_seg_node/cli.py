"""``vit-seg``: the command line. Each subcommand is a thin wrapper over a library function.

This module holds the runtime's commands (infer, eval, make-bag, replay, demo, bench-node,
build-engine). The training and optimisation packages add theirs (train; export, quantize,
sensitivity, bench) through the ``vit_seg.commands`` entry points, so this package never imports
them. Errors the user can fix (bad paths, unreadable files, invalid model cards) print one line
and exit with code 2; no traceback.
"""

from __future__ import annotations

import argparse
from importlib import metadata
import os
from pathlib import Path
import shlex
import sys
from typing import Optional

from vit_seg_node.core.argtypes import COUNT, DOMAIN_ID, float_in, int_in, RATE, SECONDS, \
    THREADS
from vit_seg_node.core.card import save_card
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import write_json

COMMANDS_GROUP = 'vit_seg.commands'
DEMO_DOMAIN = 57     # the demo's own ROS domain when ROS_DOMAIN_ID is not set


def command_line() -> str:
    """Return the command line of this run (recorded in model cards)."""
    return 'vit-seg ' + ' '.join(shlex.quote(a) for a in sys.argv[1:])


# ----------------------------------------------------------------------------- infer
def cmd_infer(a: argparse.Namespace) -> int:
    """Segment one image and write its colour mask (and optionally an overlay)."""
    from vit_seg_node.pipeline import (check_image_path, read_rgb, SegmentationPipeline,
                                       write_image)
    from vit_seg_node.core.processing import colorize, overlay, with_legend

    for path in (a.out, a.overlay, a.labels):   # every output checked before any is written
        if path:
            check_image_path(path)
    image = read_rgb(a.image)
    pipe = SegmentationPipeline(a.model, backend=a.backend, threads=a.threads, resize=a.resize)
    result = pipe(image)
    color = colorize(result.labels, pipe.card)
    write_image(a.out, color)
    if a.overlay:
        blended = overlay(image, color, a.alpha)
        write_image(a.overlay, with_legend(blended, pipe.card) if a.legend else blended)
    if a.labels:
        write_image(a.labels, result.labels)
    print(f'{a.out}: {image.shape[1]}x{image.shape[0]}, pre {result.pre_ms:.1f} ms, '
          f'infer {result.infer_ms:.1f} ms, post {result.post_ms:.1f} ms')
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    """Score an exported model (or a training checkpoint, torch backend) on a dataset split."""
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.core.evaluate import evaluate_predictor
    from vit_seg_node.pipeline import SegmentationPipeline

    if a.record and (a.checkpoint or a.limit or a.aspect or a.resize != 'card'):
        raise UserError('--record stores full-split metrics in an exported model\'s card: use it '
                        'with --model and without --limit, --aspect or --resize')
    if a.fake_quant and not a.checkpoint:
        raise UserError('--fake-quant needs --checkpoint')
    dataset = SegmentationDataset(a.data, a.split, None, cache=False)
    options = {'threads': a.threads}
    if a.checkpoint:   # INT8 fake quantization, calibrated on frames of the fit split
        options.update({'fake_quant_frames': a.fake_quant, 'calibration_data': a.data}
                       if a.fake_quant else {})
    pipe = SegmentationPipeline(a.checkpoint or a.model,
                                backend='torch' if a.checkpoint else a.backend, resize=a.resize,
                                **options)
    pairs = (dataset.load(i) for i in range(len(dataset)))
    if a.aspect:
        pairs = aspect_crops(pairs, a.aspect)
    report = evaluate_predictor(pipe.backend.infer, pairs, pipe.card, limit=a.limit)
    report.update({'model': str(pipe.model_path), 'data': str(a.data), 'split': a.split,
                   'frames': [s.image.name for s in dataset.samples][:report['num_images']]})
    report.update({'resize': pipe.card.resize, 'aspect': a.aspect})
    if a.checkpoint:
        report['fake_quant_calibration_frames'] = a.fake_quant or None
    if a.json:
        write_json(a.json, report)
    if a.record:
        pipe.card.metrics = {k: v for k, v in report.items() if k != 'frames'}
        save_card(pipe.card, pipe.model_path)
    num = (lambda v, f: '-' if v is None or v != v else format(v, f))   # None, nan: no pixels
    per_class = ', '.join(f'{k} {num(v, ".2f")}' for k, v in report['per_class_iou'].items())
    shape = f', {a.aspect} centre crops, resize {pipe.card.resize}' if a.aspect else ''
    print(f'{pipe.model_path} on {a.data}/{a.split}{shape}: mIoU {num(report["miou"], ".4f")}, '
          f'pixel acc {num(report["pixel_acc"], ".4f")}, {report["num_images"]} images\n'
          f'per class: {per_class}')
    return 0


def aspect_crops(pairs, aspect: str):
    """Yield each (image, labels) pair cut to its centre at ``aspect`` (``16:9``)."""
    from vit_seg_node.core.processing import aspect_crop_box, parse_aspect

    try:
        ratio = parse_aspect(aspect)
    except ValueError as exc:
        raise UserError(f'--aspect: {exc}') from None
    for image, labels in pairs:
        y0, x0, h, w = aspect_crop_box(image.shape[0], image.shape[1], ratio)
        yield image[y0:y0 + h, x0:x0 + w], labels[y0:y0 + h, x0:x0 + w]


def cmd_models(a: argparse.Namespace) -> int:
    """List the shipped models with what their cards say, or print one's path."""
    from vit_seg_node.core.card import load_card
    from vit_seg_node.pipeline import shipped_models, shipped_name

    models = shipped_models()
    if a.path:
        name = shipped_name(a.path)
        if name is None:
            raise UserError(f'no shipped model {a.path!r}; shipped: {sorted(models)}')
        print(models[name])
        return 0
    for name, path in models.items():
        card = load_card(path)
        m = card.metrics or {}
        score = f'mIoU {m["miou"]:.4f} on {m.get("split", "?")}' if m.get('miou') else 'not scored'
        print(f'{name}: {path}\n  {card.name}, input {card.input_width}x{card.input_height}, '
              f'reduction {card.reduction.get("policy", "none")}, precision '
              f'{card.precision.get("default", "fp32")}, {score}')
    return 0


def cmd_dds_profile(a: argparse.Namespace) -> int:
    """Print the path of a shipped Fast DDS profile (a camera driver's, or the node's own)."""
    from vit_seg_node.ros.transport import CAMERA_PROFILE, NODE_PROFILE

    print(NODE_PROFILE if a.node else CAMERA_PROFILE)
    return 0


# ----------------------------------------------------------------------------- build-engine
def cmd_build_engine(a: argparse.Namespace) -> int:
    """Build (or reuse) a TensorRT engine from an exported ONNX file."""
    from vit_seg_node.backends.tensorrt_backend import build_or_reuse
    from vit_seg_node.core.card import card_path_for, load_card
    from vit_seg_node.core.io import copy_atomic

    card = load_card(a.onnx)
    cached = build_or_reuse(a.onnx, card, cache_dir=a.cache_dir, force=a.force)
    if a.out:
        copy_atomic(cached, a.out)
        copy_atomic(card_path_for(a.onnx), card_path_for(a.out))
        print(f'{a.out} (cached as {cached})')
    return 0


# ----------------------------------------------------------------------------- bags
def cmd_make_bag(a: argparse.Namespace) -> int:
    """Write a rosbag2 from an image folder (and label maps)."""
    from vit_seg_node.eval.make_bag import make_bag

    s = make_bag(a.images, a.out, labels=a.labels, storage=a.storage, rate=a.rate,
                 compressed=a.compressed, limit=a.limit, overwrite=a.overwrite)
    print(f'{s["bag"]}: {s["frames"]} frames on {s["image_topic"]}'
          + (f' with ground truth on {s["gt_topic"]}' if s['gt_topic'] else '')
          + f' ({s["storage"]})')
    return 0


def _print_replay(r: dict) -> None:
    from vit_seg_node.eval.replay import markdown

    print(markdown(r))


def cmd_replay(a: argparse.Namespace) -> int:
    """Replay a bag through the node over DDS and score it."""
    from vit_seg_node.eval.replay import replay

    extra = {}
    if a.budget_ms is not None:
        extra['latency_budget_ms'] = float(a.budget_ms)
    if a.ladder:
        extra['model_ladder'] = a.ladder
    load = None
    if a.cpu_load:
        try:
            start, stop = (float(v) for v in a.load_window.split(':'))
        except ValueError:
            raise UserError(f'--load-window must be START:STOP seconds, got '
                            f'{a.load_window!r}') from None
        if not 0 <= start < stop:
            raise UserError(f'--load-window needs 0 <= START < STOP, got {a.load_window!r}')
        load = (a.cpu_load, start, stop)
    r = replay(a.bag, a.json, model=a.model, node_running=a.node_running, rate=a.rate,
               image_topic=a.image_topic, gt_topic=a.gt_topic, qos=a.qos, limit=a.limit,
               threads=a.threads, domain=a.domain_id, backend=a.backend, node_extra=extra,
               cpu_load=load, warmup=a.warmup)
    _print_replay(r)
    return 0


def env_domain(default: int) -> int:
    """Return ``$ROS_DOMAIN_ID`` when set, else ``default``; UserError if it is not a domain."""
    value = os.environ.get('ROS_DOMAIN_ID', '').strip()
    if not value:
        return default
    try:
        return DOMAIN_ID(value)
    except (argparse.ArgumentTypeError, ValueError) as exc:
        raise UserError(f'ROS_DOMAIN_ID: {exc}') from None


def cmd_demo(a: argparse.Namespace) -> int:
    """Replay the shipped sample bag through the node with the shipped model."""
    from vit_seg_node.eval.replay import replay
    from vit_seg_node.pipeline import DATA_DIR

    bag = DATA_DIR / 'bags' / 'camvid_val_sample'
    out = Path(a.out)
    domain = a.domain_id if a.domain_id is not None else env_domain(DEMO_DOMAIN)
    print(f'demo: replaying {bag} through vit_seg_node (model {a.model}) at x{a.rate}, ROS '
          f'domain {domain}, after {a.warmup} warm-up frames...', flush=True)
    r = replay(bag, out / 'replay.json', model=a.model, rate=a.rate, limit=a.limit,
               threads=a.threads, domain=domain, qos='reliable', warmup=a.warmup)
    _print_replay(r)
    print(f'demo: report in {out}/replay.json, replay.md and replay_overlay_*.png')
    return 0 if r['answered'] > 0 else 1


def cmd_param(a: argparse.Namespace) -> int:
    """Get or set a running node's parameter (what ``ros2 param get|set`` do)."""
    from vit_seg_node.eval.param_client import get_parameter, set_parameter

    if a.action == 'get':
        if a.value is not None:
            raise UserError('param get takes NODE NAME only')
        print(get_parameter(a.node, a.name))
    else:
        if a.value is None:
            raise UserError('param set needs NODE NAME VALUE')
        set_parameter(a.node, a.name, a.value)
        print(f'set {a.name} on {a.node}')
    return 0


def cmd_bench_node(a: argparse.Namespace) -> int:
    """Measure the node's end-to-end overhead over raw backend inference."""
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.eval.node_overhead import measure

    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(5, len(ds)))]
    r = measure(a.model, frames, runs=a.runs, threads=a.threads, domain=a.domain_id,
                out_json=a.json, gap_s=a.gap, executor=a.executor,
                spinning=a.cpu_spinning == 'true', zero_copy=a.zero_copy == 'true')
    e2e = r['node_end_to_end_ms']
    print(f'raw backend inference p50 {r["raw_infer_ms"]["p50"]:.1f} ms; node publish->mask '
          f'p50 {e2e["p50"]:.1f} ms ({r["resolution"]}, a frame every {a.gap:g} s); '
          f'overhead {100 * r["overhead"]:.1f}%'
          + (f' ({100 * r["overhead_vs_node_infer"]:.1f}% against the node\'s own inference)'
             if r['overhead_vs_node_infer'] is not None else ''))
    stages = r['node_stages_p50_ms']
    if stages:
        print('inside the node (p50 ms): ' + ', '.join(f'{k} {v:.2f}' for k, v in stages.items())
              + (f'; transport and hand-off {r["transport_ms"]:.2f}'
                 if r['transport_ms'] is not None else ''))
    if r['relay_floor_ms']:
        print(f'model-free relay (the floor of any Python node here) p50 '
              f'{r["relay_floor_ms"]["p50"]:.1f} ms; overhead above that floor '
              f'{100 * r["overhead_above_floor"]:.1f}%')
    return 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    """Return the ``vit-seg`` argument parser."""
    ap = Parser(prog='vit-seg', description='Frugal ViT semantic segmentation.')
    sub = ap.add_subparsers(dest='command', required=True)
    _add_model_commands(sub)
    _add_bag_commands(sub)
    register_plugins(sub)
    return ap


def resize_arg(p: argparse.ArgumentParser) -> None:
    """Add ``--resize``: how a frame of another aspect ratio fits the model input."""
    p.add_argument('--resize', default='card', choices=['card', 'stretch', 'letterbox', 'crop'],
                   help='fit frames by the model card\'s choice, stretching, letterboxing or '
                        'cropping the centre (masks keep the frame size)')


def _add_model_commands(sub) -> None:
    """Add infer, eval, models and build-engine."""
    p = sub.add_parser('infer', help='segment one image')
    p.add_argument('--model', help='model file (.onnx/.engine) with its card; default: shipped')
    p.add_argument('--image', required=True)
    p.add_argument('--out', required=True, help='colour mask PNG (same size as the image)')
    p.add_argument('--overlay', help='also write the mask blended over the image')
    p.add_argument('--legend', action='store_true',
                   help='put the classes and their colours beside the overlay')
    p.add_argument('--labels', help='also write the class-id map (mono PNG)')
    p.add_argument('--alpha', type=float_in(0.0, 1.0), default=0.5)
    resize_arg(p)
    p.add_argument('--backend', default='auto')
    p.add_argument('--threads', type=THREADS, default=0)
    p.set_defaults(func=cmd_infer)

    p = sub.add_parser('eval', help='mIoU of a checkpoint or exported model on a split')
    g = p.add_mutually_exclusive_group()
    g.add_argument('--checkpoint', help='training weights (config.yaml beside them; torch '
                   'backend, from the training package)')
    g.add_argument('--model', help='exported model with card; default: the shipped model')
    p.add_argument('--data', required=True, help='dataset root (SegNet or images/masks layout)')
    p.add_argument('--split', default='val',
                   help='split: a folder, heldout | fit | all, or train:SEQ[,SEQ] / train:!SEQ')
    p.add_argument('--json', help='write the report here')
    p.add_argument('--backend', default='auto')
    p.add_argument('--threads', type=THREADS, default=0)
    p.add_argument('--limit', type=COUNT, default=None, help='score only the first N frames')
    p.add_argument('--fake-quant', type=int_in(0, 10000), default=0, metavar='N',
                   help='with --checkpoint: score under INT8 fake quantization calibrated on N '
                        'frames of the fit split')
    p.add_argument('--record', action='store_true',
                   help='also store the report as the metrics of the model card')
    resize_arg(p)
    p.add_argument('--aspect', metavar='W:H',
                   help='score centre crops of this aspect ratio (16:9: a wide camera)')
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser('models', help='list the shipped models (or print one\'s path)')
    p.add_argument('--path', metavar='NAME', help='print only the path of this shipped model')
    p.set_defaults(func=cmd_models)

    p = sub.add_parser('dds-profile', help='print the Fast DDS profile for a camera driver\'s '
                                           'process (FASTRTPS_DEFAULT_PROFILES_FILE)')
    p.add_argument('--node', action='store_true',
                   help='the profile the node sets for itself instead')
    p.set_defaults(func=cmd_dds_profile)

    p = sub.add_parser('build-engine', help='build a TensorRT engine (cached, never forced)')
    p.add_argument('--onnx', required=True, help='exported model with its card')
    p.add_argument('--out', help='also copy the engine (and card) here')
    p.add_argument('--cache-dir', help='engine + timing cache (default ~/.cache/vit_seg_node)')
    p.add_argument('--force', action='store_true', help='rebuild even if a cached engine fits')
    p.set_defaults(func=cmd_build_engine)


def _add_bag_commands(sub) -> None:
    """Add make-bag, replay, bench-node and demo."""
    p = sub.add_parser('make-bag', help='write a rosbag2 from images (+ label maps)')
    p.add_argument('--images', required=True)
    p.add_argument('--labels', help='label maps with the same file names (ground truth)')
    p.add_argument('--out', required=True, help='bag directory to create')
    p.add_argument('--storage', default='mcap', choices=['mcap', 'sqlite3'])
    p.add_argument('--rate', type=RATE, default=1.0, help='frames per second of the stamps')
    p.add_argument('--compressed', action='store_true', help='JPEG CompressedImage frames')
    p.add_argument('--limit', type=COUNT, default=None)
    p.add_argument('--overwrite', action='store_true')
    p.set_defaults(func=cmd_make_bag)

    def replay_args(p: argparse.ArgumentParser, warmup: int = 0) -> None:
        p.add_argument('--rate', type=RATE, default=1.0, help='playback speed factor')
        p.add_argument('--limit', type=COUNT, default=None, help='play only the first N frames')
        p.add_argument('--threads', type=THREADS, default=0, help='backend threads of the node')
        p.add_argument('--warmup', type=int_in(0, 100), default=warmup,
                       help='frames sent through the node (and answered) before the timed '
                            'replay, not scored')

    p = sub.add_parser('replay', help='play a bag through the node and score it')
    p.add_argument('--bag', required=True)
    g = p.add_mutually_exclusive_group()
    g.add_argument('--model', help='model for the node this command starts')
    g.add_argument('--node-running', action='store_true', help='use a node already running')
    p.add_argument('--image-topic', help='default: the first Image/CompressedImage topic')
    p.add_argument('--gt-topic', default='/camera/semantic_gt')
    p.add_argument('--qos', default='reliable', choices=['reliable', 'sensor_data'])
    p.add_argument('--backend', default='auto')
    p.add_argument('--domain-id', type=DOMAIN_ID, default=None,
                   help='default: $ROS_DOMAIN_ID or 0')
    p.add_argument('--json', required=True)
    p.add_argument('--budget-ms', type=float_in(0.0, 10000.0),
                   help='latency_budget_ms of the node it starts')
    p.add_argument('--ladder', help="model_ladder of the node it starts ('shipped' or a file)")
    p.add_argument('--cpu-load', type=int_in(0, 64), default=0, metavar='N',
                   help='N busy processes during --load-window (a robot\'s other work)')
    p.add_argument('--load-window', default='5:20', metavar='START:STOP',
                   help='seconds after the first frame during which the load runs')
    replay_args(p)
    p.set_defaults(func=cmd_replay)

    p = sub.add_parser('bench-node', help="the node's overhead over raw backend inference")
    p.add_argument('--model', help='default: the shipped model')
    p.add_argument('--frames', required=True, help='dataset root with 480x360 frames')
    p.add_argument('--split', default='val')
    p.add_argument('--runs', type=COUNT, default=40)
    p.add_argument('--threads', type=THREADS, default=2)
    p.add_argument('--domain-id', type=DOMAIN_ID, default=58)
    p.add_argument('--json', help='write the report here')
    p.add_argument('--gap', type=SECONDS, default=0.05,
                   help='seconds between frames, on both sides (a camera period)')
    p.add_argument('--executor', default='single', choices=['single', 'events'],
                   help='rclpy executor of the node, the relay and the timing client')
    p.add_argument('--cpu-spinning', default='true', choices=['true', 'false'],
                   help="ONNX Runtime pool threads spin (the node's cpu_spinning), both sides")
    p.add_argument('--zero-copy', default='true', choices=['true', 'false'],
                   help="the node's and the relay's zero_copy")
    p.set_defaults(func=cmd_bench_node)

    p = sub.add_parser('param', help="a running node's parameter, on $ROS_DOMAIN_ID (what "
                                     "`ros2 param get|set` do, without a sourced ROS 2)")
    p.add_argument('action', choices=['get', 'set'])
    p.add_argument('node', help='the node\'s full name, e.g. /vit_seg_node')
    p.add_argument('name')
    p.add_argument('value', nargs='?', help='for set: the value, read as YAML (80, 80.0, true)')
    p.set_defaults(func=cmd_param)

    p = sub.add_parser('demo', help='replay the shipped sample bag through the node')
    p.add_argument('--out', default='runs/demo')
    p.add_argument('--model', default='fast',
                   help='model for the node: a shipped name (fast, mid, default) or a file; '
                        'default: fast')
    p.add_argument('--domain-id', type=DOMAIN_ID, default=None,
                   help=f'ROS domain of the demo (default: $ROS_DOMAIN_ID, else {DEMO_DOMAIN})')
    replay_args(p, warmup=5)
    p.set_defaults(func=cmd_demo, rate=4.0)


def register_plugins(sub) -> None:
    """Let installed packages add their subcommands (entry points ``vit_seg.commands``)."""
    for ep in sorted(metadata.entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        ep.load()(sub)


class UsageError(UserError):
    """The command line itself is wrong (an unknown option, a number out of range)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``main`` prints it, exit code 2)."""

    def error(self, message: str):
        """Raise UsageError instead of printing the usage and exiting."""
        raise UsageError(f'{self.prog}: error: {message} (see {self.prog} --help)')


def resolve_model_args(args: argparse.Namespace) -> None:
    """Let every command's ``--model`` name a shipped model (``fast``, ``mid.onnx``) or a path."""
    from vit_seg_node.pipeline import resolve_model

    for attr in ('model', 'onnx'):   # build-engine takes --onnx
        m = getattr(args, attr, None)
        if isinstance(m, str) and m:
            setattr(args, attr, str(resolve_model(m)))
        elif isinstance(m, list):
            setattr(args, attr, [str(resolve_model(x)) for x in m])


def main(argv: Optional[list[str]] = None) -> int:
    """Run ``vit-seg``; user errors give one line on stderr and exit code 2."""
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        resolve_model_args(args)
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f'vit-seg {args.command}: error: {exc}', file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader went away (`vit-seg eval ... | head -1`): no traceback, and none at exit
        # when Python flushes stdout again; 141 = 128 + SIGPIPE, what a shell tool returns
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == '__main__':
    sys.exit(main())
