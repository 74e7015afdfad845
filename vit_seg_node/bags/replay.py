"""Live rosbag replay evaluation: play a bag through the running node over DDS and score it.

The bag's image messages are published (their recorded CDR bytes, unchanged) with the recorded
timing scaled by ``rate``; ``~/class_mask`` answers are matched to the ground truth by header
stamp. The report gives mIoU and per-class IoU (when the bag has ground truth), end-to-end
latency percentiles (publish to mask received), output FPS, frames the node dropped (from its
diagnostics) and frames never answered. Corrupt messages and unknown message types are skipped
with a warning and counted.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
from pathlib import Path
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Optional

import cv2
import numpy as np

from vit_seg_node.bags.make_bag import COMPRESSED_TYPE, IMAGE_TYPE, typestore
from vit_seg_node.errors import UserError
from vit_seg_node.runtime.card import atomic_write_text, ModelCard
from vit_seg_node.runtime.metrics import ConfusionMatrix
from vit_seg_node.runtime.processing import colorize, overlay

MASK_TOPIC = '/vit_seg_node/class_mask'


def log(msg: str) -> None:
    """Print a progress/warning line to stderr."""
    print(f'replay: {msg}', file=sys.stderr, flush=True)


@dataclasses.dataclass
class BagContents:
    """What replay needs from a bag: the image connection and ground truth by stamp."""

    image_topic: str
    image_type: str
    gt: dict[int, np.ndarray]
    skipped: collections.Counter
    num_images: int


def stamp_ns(header) -> int:
    """Return a header stamp in integer nanoseconds."""
    return int(header.stamp.sec) * 10 ** 9 + int(header.stamp.nanosec)


def _decode(ts, rawdata: bytes, msgtype: str):
    return ts.deserialize_cdr(rawdata, msgtype)


def open_reader(bag: str | os.PathLike):
    """Open a rosbag2 directory (mcap or sqlite3) with rosbags; UserError if unreadable."""
    from rosbags.rosbag2 import Reader

    p = Path(bag)
    if not p.exists():
        raise UserError(f'bag not found: {p}')
    try:
        reader = Reader(p)
        reader.open()
    except Exception as exc:  # rosbags raises several reader error types
        raise UserError(f'cannot read bag {p}: {exc}') from None
    return reader


def scan_bag(bag: str | os.PathLike, image_topic: Optional[str] = None,
             gt_topic: Optional[str] = '/camera/semantic_gt') -> BagContents:
    """Choose the image topic, load the ground truth, count what cannot be used."""
    ts = typestore()
    reader = open_reader(bag)
    skipped: collections.Counter = collections.Counter()
    try:
        conns = {c.topic: c for c in reader.connections}
        images = [c for c in reader.connections if c.msgtype in (IMAGE_TYPE, COMPRESSED_TYPE)
                  and c.topic != gt_topic]
        if image_topic:
            if image_topic not in conns:
                raise UserError(f'bag has no topic {image_topic} (topics: {sorted(conns)})')
            img = conns[image_topic]
            if img.msgtype not in (IMAGE_TYPE, COMPRESSED_TYPE):
                raise UserError(f'{image_topic} is {img.msgtype}, not an image topic')
        elif images:
            img = images[0]
        else:
            raise UserError(f'bag has no Image or CompressedImage topic (topics: '
                            f'{sorted(conns)})')
        for c in reader.connections:
            if c.msgtype not in ts.types:
                log(f'warning: topic {c.topic} has unknown type {c.msgtype}: its '
                    f'{c.msgcount} messages are skipped')
                skipped['unknown_type'] += c.msgcount
        gt: dict[int, np.ndarray] = {}
        gt_conn = conns.get(gt_topic) if gt_topic else None
        if gt_conn is not None and gt_conn.msgtype == IMAGE_TYPE:
            for _, _, raw in reader.messages([gt_conn]):
                try:
                    m = _decode(ts, raw, IMAGE_TYPE)
                    gt[stamp_ns(m.header)] = np.asarray(m.data, np.uint8).reshape(
                        m.height, m.step)[:, :m.width].copy()
                except Exception as exc:
                    skipped['corrupt'] += 1
                    log(f'warning: corrupt ground-truth message skipped ({exc})')
        return BagContents(img.topic, img.msgtype, gt, skipped, img.msgcount)
    finally:
        reader.close()


class NodeRunner:
    """Start vit_seg_node in its own process for the replay; always stopped afterwards."""

    def __init__(self, model: Optional[str], image_topic: str, compressed: bool, qos: str,
                 domain: int, threads: int = 0, backend: str = 'auto') -> None:
        exe = Path(sys.executable).parent / 'vit_seg_node'
        cmd = [str(exe) if exe.exists() else 'vit_seg_node', '--ros-args',
               '-p', f'input_transport:={"compressed" if compressed else "raw"}',
               '-p', f'qos:={qos}', '-p', f'threads:={threads}', '-p', f'backend:={backend}']
        if model:
            cmd += ['-p', f'model_path:={model}']
        topic = image_topic[:-len('/compressed')] if compressed else image_topic
        cmd += ['-r', f'image:={topic}', '-r', f'image/compressed:={topic}/compressed']
        env = {**os.environ, 'ROS_DOMAIN_ID': str(domain), 'PYTHONUNBUFFERED': '1'}
        self.lines: list[str] = []
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.time() + 120
        while time.time() < deadline:
            if any('ready:' in ln for ln in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        raise UserError('the node did not start: ' + (self.lines[-1].strip() if self.lines
                                                      else 'no output'))

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def alive(self) -> bool:
        """Return whether the node process still runs."""
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGINT, then kill after 10 s."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def percentiles(values: list[float]) -> dict[str, Optional[float]]:
    """Return p50/p95/p99 of ``values`` (None when empty)."""
    if not values:
        return {'p50': None, 'p95': None, 'p99': None}
    a = np.asarray(values)
    return {f'p{q}': float(np.percentile(a, q)) for q in (50, 95, 99)}


def replay(bag: str | os.PathLike, out_json: str | os.PathLike, model: Optional[str] = None,
           node_running: bool = False, rate: float = 1.0, image_topic: Optional[str] = None,
           gt_topic: str = '/camera/semantic_gt', qos: str = 'reliable',
           limit: Optional[int] = None, drain_s: float = 10.0, threads: int = 0,
           overlays: int = 3, domain: Optional[int] = None, backend: str = 'auto') -> dict:
    """Replay ``bag`` through the node and write JSON, Markdown and overlay PNGs."""
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CompressedImage, Image

    if rate <= 0:
        raise UserError(f'rate must be > 0, got {rate}')
    contents = scan_bag(bag, image_topic, gt_topic)
    compressed = contents.image_type == COMPRESSED_TYPE
    domain = int(os.environ.get('ROS_DOMAIN_ID', '0')) if domain is None else domain
    card = _card_for(model)
    ros_qos = qos_profile_sensor_data if qos == 'sensor_data' else QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST, depth=10)
    runner = None if node_running else NodeRunner(model, contents.image_topic, compressed, qos,
                                                  domain, threads, backend)
    ctx = rclpy.Context()
    rclpy.init(context=ctx, domain_id=domain)
    node = rclpy.create_node('vit_seg_replay', context=ctx)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    answers: dict[int, tuple[float, np.ndarray]] = {}
    diag: list[dict[str, str]] = []

    def on_mask(msg) -> None:
        arr = np.frombuffer(memoryview(msg.data), np.uint8).reshape(msg.height, msg.step)[
            :, :msg.width].copy()
        answers.setdefault(stamp_ns(msg.header), (time.monotonic(), arr))

    def on_diag(msg) -> None:
        for st in msg.status:
            if st.name.startswith('vit_seg_node'):
                diag.append({kv.key: kv.value for kv in st.values})

    node.create_subscription(Image, MASK_TOPIC, on_mask, ros_qos)
    node.create_subscription(DiagnosticArray, '/diagnostics', on_diag, 10)
    pub = node.create_publisher(CompressedImage if compressed else Image, contents.image_topic,
                                ros_qos)
    spinning = True

    def spin() -> None:
        while spinning and ctx.ok():
            executor.spin_once(timeout_sec=0.05)
    spinner = threading.Thread(target=spin, daemon=True)
    spinner.start()
    ts = typestore()
    sent: dict[int, float] = {}
    skipped = collections.Counter(contents.skipped)
    images: dict[int, bytes] = {}
    try:
        _wait(lambda: pub.get_subscription_count() > 0 and node.count_publishers(MASK_TOPIC) > 0,
              30, 'the node never subscribed to ' + contents.image_topic)
        _wait(lambda: bool(diag), 5, None)
        time.sleep(0.5)  # let the node's publisher match our subscription too
        reader = open_reader(bag)
        try:
            conn = [c for c in reader.connections if c.topic == contents.image_topic]
            t_first = wall0 = None
            for i, (_, t_rec, raw) in enumerate(reader.messages(conn)):
                if limit is not None and i >= limit:
                    break
                try:
                    msg = _decode(ts, raw, contents.image_type)
                except Exception as exc:
                    skipped['corrupt'] += 1
                    log(f'warning: corrupt image message at {t_rec} skipped ({exc})')
                    continue
                if t_first is None:
                    t_first, wall0 = t_rec, time.monotonic()
                delay = wall0 + (t_rec - t_first) / 1e9 / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                stamp = stamp_ns(msg.header)
                sent[stamp] = time.monotonic()
                pub.publish(bytes(raw))
                if len(images) < overlays:
                    images[stamp] = bytes(raw)
        finally:
            reader.close()
        _wait(lambda: all(s in answers for s in sent), drain_s, None)
        n_diag = len(diag)
        _wait(lambda: len(diag) > n_diag + 1, 3.0, None)  # a diagnostics update after the end
        node_alive = runner.alive() if runner else True
    finally:
        spinning = False
        spinner.join(2)
        node.destroy_node()
        ctx.try_shutdown()
        if runner:
            runner.stop()
    report = _report(contents, card, sent, answers, diag, skipped, node_alive, bag, rate)
    _write_outputs(report, out_json, card, images, answers, contents.image_type, ts)
    return report


def _card_for(model: Optional[str]) -> ModelCard:
    from vit_seg_node.runtime.pipeline import default_model_path, load_model_card

    path = Path(model) if model else default_model_path()
    return load_model_card(path)


def _wait(pred, timeout: float, error: Optional[str]) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    if error and not pred():
        raise UserError(error)
    return pred()


def _report(contents: BagContents, card: ModelCard, sent: dict[int, float],
            answers: dict[int, tuple[float, np.ndarray]], diag: list[dict[str, str]],
            skipped: collections.Counter, node_alive: bool, bag, rate: float) -> dict:
    answered = [s for s in sent if s in answers]
    latency = [(answers[s][0] - sent[s]) * 1e3 for s in answered]
    recv = sorted(answers[s][0] for s in answered)
    fps = (len(recv) - 1) / (recv[-1] - recv[0]) if len(recv) > 1 and recv[-1] > recv[0] else 0.0
    last = diag[-1] if diag else {}
    report: dict[str, Any] = {
        'bag': str(bag), 'image_topic': contents.image_topic, 'rate': rate,
        'num_frames': len(sent), 'answered': len(answered),
        'unanswered': len(sent) - len(answered),
        'dropped': int(last.get('frames_dropped', 0)),
        'rejected_by_node': int(last.get('frames_rejected', 0)),
        'skipped': dict(skipped), 'latency_ms': percentiles(latency), 'fps': fps,
        'node_alive': node_alive, 'model': card.name,
        'node_diagnostics': last,
        'miou': None, 'per_class_iou': None, 'pixel_acc': None, 'scored_frames': 0,
    }
    if contents.gt:
        cm = ConfusionMatrix(card.num_classes, card.ignore_index)
        scored = 0
        for s in answered:
            if s in contents.gt and answers[s][1].shape == contents.gt[s].shape:
                cm.update(answers[s][1], contents.gt[s])
                scored += 1
        if scored:
            report.update(cm.summary(card.classes))
        report['scored_frames'] = scored
    return report


def _write_outputs(report: dict, out_json, card: ModelCard, images: dict[int, bytes],
                   answers, image_type: str, ts) -> None:
    out_json = Path(out_json)
    atomic_write_text(out_json, json.dumps(report, indent=2) + '\n')
    atomic_write_text(out_json.with_suffix('.md'), markdown(report))
    for i, (stamp, raw) in enumerate(sorted(images.items())):
        if stamp not in answers:
            continue
        msg = ts.deserialize_cdr(raw, image_type)
        if image_type == COMPRESSED_TYPE:
            from rosbags.image import compressed_image_to_cvimage

            bgr = compressed_image_to_cvimage(msg, 'bgr8')
        else:
            from rosbags.image import message_to_cvimage

            bgr = message_to_cvimage(msg, 'bgr8')
        labels = answers[stamp][1]
        if labels.shape != bgr.shape[:2]:
            bgr = cv2.resize(bgr, (labels.shape[1], labels.shape[0]))
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        out = overlay(rgb, colorize(labels, card), 0.5)
        cv2.imwrite(str(out_json.with_name(f'{out_json.stem}_overlay_{i}.png')),
                    cv2.cvtColor(out, cv2.COLOR_RGB2BGR))


def markdown(r: dict) -> str:
    """Return the human-readable summary of a replay report."""
    lat = r['latency_ms']
    fmt = (lambda v: '-' if v is None else f'{v:.1f}')
    lines = [f'# Replay of `{r["bag"]}`', '',
             f'Model `{r["model"]}`, topic `{r["image_topic"]}`, rate x{r["rate"]}.', '',
             '| frames | answered | unanswered | dropped by node | skipped | FPS | '
             'latency p50 / p95 / p99 (ms) | mIoU |',
             '|---|---|---|---|---|---|---|---|',
             f'| {r["num_frames"]} | {r["answered"]} | {r["unanswered"]} | {r["dropped"]} | '
             f'{sum(r["skipped"].values())} | {r["fps"]:.2f} | {fmt(lat["p50"])} / '
             f'{fmt(lat["p95"])} / {fmt(lat["p99"])} | '
             f'{"-" if r["miou"] is None else format(r["miou"], ".4f")} |', '']
    if r['per_class_iou']:
        lines += ['| class | IoU |', '|---|---|']
        lines += [f'| {k} | {"-" if v is None else format(v, ".3f")} |'
                  for k, v in r['per_class_iou'].items()]
    return '\n'.join(lines) + '\n'
