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
import math
import os
from pathlib import Path
import struct
import sys
import time
from typing import Any, Optional

import cv2
import numpy as np

from vit_seg_node.eval.make_bag import COMPRESSED_TYPE, IMAGE_TYPE, typestore
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.card import ModelCard
from vit_seg_node.core.io import atomic_write_text, write_json
from vit_seg_node.core.machine import machine_line, machine_record
from vit_seg_node.core.metrics import ConfusionMatrix
from vit_seg_node.core.processing import colorize, overlay, with_legend
from vit_seg_node.core.stats import percentiles

MASK_TOPIC = '/vit_seg_node/class_mask'


PROGRESS_EVERY_S = 5.0


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


def with_stamp(cdr: bytes, sec: int, nanosec: int) -> bytes:
    """Return a serialized message with a header first (Image, CompressedImage), restamped."""
    out = bytearray(cdr)
    order = '<' if out[1] == 1 else '>'           # CDR encapsulation: 0x0001 little endian
    struct.pack_into(order + 'iI', out, 4, sec, nanosec)
    return bytes(out)


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


def read_messages(reader, connections, skipped: collections.Counter):
    """Yield the reader's messages; corrupt storage (a chunk, a page) ends the stream, counted.

    rosbags raises the storage library's own errors (zstd, sqlite) from inside the iteration,
    where nothing after the damaged part can be read.
    """
    it = iter(reader.messages(connections))
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except Exception as exc:   # zstd, apsw, mcap: each has its own error types
            skipped['corrupt_storage'] += 1
            log(f'warning: the bag is damaged after this point, the rest is skipped '
                f'({type(exc).__name__}: {exc})')
            return
        yield item


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
            for _, _, raw in read_messages(reader, [gt_conn], skipped):
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


def node_params(model: Optional[str], image_topic: str, compressed: bool, qos: str,
                threads: int, backend: str) -> dict[str, Any]:
    """Return the parameters of the node that a replay starts."""
    from vit_seg_node.eval.harness import reliable_overrides

    params = {'input_transport': 'compressed' if compressed else 'raw', 'threads': threads,
              'backend': backend}
    if qos == 'reliable':
        params.update(reliable_overrides(image_topic))
    if model:
        params['model_path'] = model
    return params


def topic_remaps(image_topic: str, compressed: bool) -> list[str]:
    """Return the ``--ros-args`` remappings that point the node at the bag's image topic."""
    topic = image_topic[:-len('/compressed')] if compressed else image_topic
    return ['-r', f'image:={topic}', '-r', f'image/compressed:={topic}/compressed']


def replay(bag: str | os.PathLike, out_json: str | os.PathLike, model: Optional[str] = None,
           node_running: bool = False, rate: float = 1.0, image_topic: Optional[str] = None,
           gt_topic: str = '/camera/semantic_gt', qos: str = 'reliable',
           limit: Optional[int] = None, drain_s: float = 10.0, threads: int = 0,
           overlays: int = 3, domain: Optional[int] = None, backend: str = 'auto',
           node_extra: Optional[dict[str, Any]] = None,
           cpu_load: Optional[tuple[int, float, float]] = None, warmup: int = 0) -> dict:
    """Replay ``bag`` through the node and write JSON, Markdown and overlay PNGs.

    ``node_extra``: more parameters for the node it starts (``latency_budget_ms``,
    ``model_ladder``...). ``cpu_load``: ``(workers, start_s, stop_s)`` busy processes running
    from ``start_s`` to ``stop_s`` seconds after the first frame; the report then has a timeline
    and per-phase latencies (before, under load after 2 s of adaptation, 5 s after it stopped).
    ``warmup``: frames sent through the node (each answered) before the replay, not scored: the
    first frames of a fresh process are slow (caches, lazy imports, page faults). A long run
    prints its progress every ``PROGRESS_EVERY_S`` seconds on stderr.
    """
    from rclpy.qos import qos_profile_sensor_data

    from vit_seg_node.core.lifetime import terminate_on_sigterm, uninterrupted
    from vit_seg_node.eval.harness import CpuLoad, NodeProcess, Probe, reliable

    if not math.isfinite(rate) or rate <= 0:
        raise UserError(f'rate must be a positive number, got {rate}')
    contents = scan_bag(bag, image_topic, gt_topic)
    compressed = contents.image_type == COMPRESSED_TYPE
    domain = int(os.environ.get('ROS_DOMAIN_ID', '0')) if domain is None else domain
    card = _card_for(model)
    ros_qos = qos_profile_sensor_data if qos == 'sensor_data' else reliable()
    terminate_on_sigterm()
    probe = runner = None
    load = CpuLoad(cpu_load[0]) if cpu_load else None
    try:
        with uninterrupted():   # a signal here comes once both are assigned
            probe = Probe(domain, 'vit_seg_replay')
            if not node_running:
                params = {**node_params(model, contents.image_topic, compressed, qos, threads,
                                        backend), **(node_extra or {})}
                runner = NodeProcess(domain, params,
                                     topic_remaps(contents.image_topic, compressed))
        if runner:
            runner.wait_ready(probe)
        session = _Session(probe, contents, ros_qos, overlays)
        session.warm_up(bag, warmup)
        session.play(bag, rate, limit, load, cpu_load[1:] if cpu_load else None)
        session.drain(drain_s)
        node_alive = runner.alive() if runner else True
    finally:
        with uninterrupted():
            if load is not None:
                load.stop()
            if probe is not None:
                probe.close()
            if runner:
                runner.stop()
    report = _report(contents, card, session.sent, session.answers, probe.diagnostics,
                     session.skipped, node_alive, bag, rate)
    report['node_parameters'] = node_extra or {}
    if cpu_load:
        report.update(load_phases(session, probe, cpu_load))
    _write_outputs(report, out_json, card, session.images, session.answers,
                   contents.image_type, typestore())
    return report


class _Session:
    """One replay: publish the bag's frames on time, collect the node's masks by stamp."""

    def __init__(self, probe, contents: BagContents, qos, overlays: int) -> None:
        from sensor_msgs.msg import CompressedImage, Image

        self.probe, self.contents, self.overlays = probe, contents, overlays
        self.t0: Optional[float] = None   # monotonic time of the first frame
        self.answers: dict[int, tuple[float, np.ndarray]] = {}
        self.sent: dict[int, float] = {}
        self.images: dict[int, bytes] = {}
        self.skipped = collections.Counter(contents.skipped)
        probe.node.create_subscription(Image, MASK_TOPIC, self._on_mask, qos)
        compressed = contents.image_type == COMPRESSED_TYPE
        self.pub = probe.publisher(CompressedImage if compressed else Image,
                                   contents.image_topic, qos)

    def _on_mask(self, msg) -> None:
        arr = np.frombuffer(memoryview(msg.data), np.uint8).reshape(msg.height, msg.step)[
            :, :msg.width].copy()
        self.answers.setdefault(stamp_ns(msg.header), (time.monotonic(), arr))

    def _wait_subscribed(self) -> None:
        """Return once the node subscribes the image topic and publishes masks."""
        from vit_seg_node.eval.harness import wait_for

        node = self.probe.node
        if not wait_for(lambda: self.pub.get_subscription_count() > 0
                        and node.count_publishers(MASK_TOPIC) > 0, 30):
            raise UserError('the node never subscribed to ' + self.contents.image_topic)
        time.sleep(0.5)  # let the node's publisher match our subscription too

    def warm_up(self, bag, frames: int, timeout: float = 30.0) -> None:
        """Send the bag's first frame ``frames`` times (stamps 1, 2, ... ns), each answered."""
        from vit_seg_node.eval.harness import wait_for

        if frames <= 0:
            return
        self._wait_subscribed()
        reader = open_reader(bag)
        try:
            conn = [c for c in reader.connections if c.topic == self.contents.image_topic]
            raw = next(iter(read_messages(reader, conn, collections.Counter())), None)
        finally:
            reader.close()
        if raw is None:
            return
        for k in range(1, frames + 1):
            self.pub.publish(with_stamp(bytes(raw[2]), 0, k))
            wait_for(lambda: k in self.answers, timeout)
        for k in range(1, frames + 1):
            self.answers.pop(k, None)

    def play(self, bag, rate: float, limit: Optional[int], load=None,
             window: Optional[tuple[float, float]] = None) -> None:
        """Publish the image messages with the recorded timing scaled by ``rate``.

        ``load`` (a ``CpuLoad``) runs during ``window`` (seconds after the first frame).
        """
        self._wait_subscribed()
        ts = typestore()
        shown = time.monotonic()
        reader = open_reader(bag)
        try:
            conn = [c for c in reader.connections if c.topic == self.contents.image_topic]
            t_first = wall0 = None
            for i, (_, t_rec, raw) in enumerate(read_messages(reader, conn, self.skipped)):
                if limit is not None and i >= limit:
                    break
                try:
                    msg = _decode(ts, raw, self.contents.image_type)
                except Exception as exc:
                    self.skipped['corrupt'] += 1
                    log(f'warning: corrupt image message at {t_rec} skipped ({exc})')
                    continue
                if t_first is None:
                    t_first, wall0 = t_rec, time.monotonic()
                    self.t0 = wall0
                delay = wall0 + (t_rec - t_first) / 1e9 / rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if load is not None:
                    elapsed = time.monotonic() - wall0
                    (load.start if window[0] <= elapsed < window[1] else load.stop)()
                stamp = stamp_ns(msg.header)
                self.sent[stamp] = time.monotonic()
                self.pub.publish(bytes(raw))
                if len(self.images) < self.overlays:
                    self.images[stamp] = bytes(raw)
                if time.monotonic() - shown >= PROGRESS_EVERY_S:
                    shown = time.monotonic()
                    log(f'replay: {len(self.sent)} frames sent, {len(self.answers)} answered, '
                        f'{shown - wall0:.0f} s')
        finally:
            reader.close()

    def drain(self, timeout: float) -> None:
        """Wait for the outstanding answers, then for one more diagnostics update."""
        from vit_seg_node.eval.harness import wait_for

        wait_for(lambda: all(s in self.answers for s in self.sent), timeout)
        n_diag = len(self.probe.diagnostics)
        wait_for(lambda: len(self.probe.diagnostics) > n_diag + 1, 3.0)


def _card_for(model: Optional[str]) -> ModelCard:
    from vit_seg_node.pipeline import load_model_card, resolve_model

    return load_model_card(resolve_model(model))


def load_phases(session: '_Session', probe, cpu_load: tuple[int, float, float]) -> dict:
    """Return the timeline of a replay under load and its per-phase latency percentiles."""
    workers, start, stop = cpu_load
    t0 = session.t0
    timeline = [[round(session.sent[s] - t0, 3),
                 round((session.answers[s][0] - session.sent[s]) * 1e3, 2)
                 if s in session.answers else None] for s in sorted(session.sent)]
    rungs = [[round(t - t0, 3), int(d.get('active_rung', 0))]
             for t, d in zip(probe.diagnostics_at, probe.diagnostics) if t >= t0]

    def p(lo: float, hi: float) -> dict:
        return percentiles([lat for t, lat in timeline if lo <= t < hi and lat is not None],
                           (50, 90))
    back = next((t for k, (t, r) in enumerate(rungs) if t >= stop and
                 all(r2 == 0 for _, r2 in rungs[k:])), None)
    end = timeline[-1][0] + 1 if timeline else stop
    return {'cpu_load': {'workers': workers, 'start_s': start, 'stop_s': stop},
            'phases_ms': {'before_load': p(0, start), 'load_after_2s': p(start + 2, stop),
                          'load_first_2s': p(start, start + 2), 'after_load': p(stop + 5, end)},
            'back_to_rung0_after_load_s': None if back is None else round(back - stop, 2),
            'timeline': timeline, 'rung_timeline': rungs}


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
        'skipped': dict(skipped), 'latency_ms': percentiles(latency, (50, 95, 99)), 'fps': fps,
        'node_alive': node_alive, 'model': card.name, 'machine': machine_record(),
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
    write_json(out_json, report)
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
        from vit_seg_node.pipeline import write_image

        out = with_legend(overlay(rgb, colorize(labels, card), 0.5), card)
        write_image(out_json.with_name(f'{out_json.stem}_overlay_{i}.png'), out)


def markdown(r: dict) -> str:
    """Return the human-readable summary of a replay report."""
    lat = r['latency_ms']
    fmt = (lambda v: '-' if v is None else f'{v:.1f}')
    lines = [f'# Replay of `{r["bag"]}`', '',
             f'Model `{r["model"]}`, topic `{r["image_topic"]}`, rate x{r["rate"]}; '
             f'{machine_line(r.get("machine"))}.', '',
             '| frames | answered | unanswered | dropped by node | skipped | FPS | '
             'latency p50 / p95 / p99 (ms) | mIoU |',
             '|---|---|---|---|---|---|---|---|',
             f'| {r["num_frames"]} | {r["answered"]} | {r["unanswered"]} | {r["dropped"]} | '
             f'{sum(r["skipped"].values())} | {r["fps"]:.2f} | {fmt(lat["p50"])} / '
             f'{fmt(lat["p95"])} / {fmt(lat["p99"])} | '
             f'{"-" if r["miou"] is None else format(r["miou"], ".4f")} |', '']
    if r.get('phases_ms'):
        ph, load = r['phases_ms'], r['cpu_load']
        lines += [f'CPU load: {load["workers"]} busy processes from {load["start_s"]:g} s to '
                  f'{load["stop_s"]:g} s; node parameters {r["node_parameters"] or "default"}.',
                  '', '| phase | latency p50 / p90 (ms) |', '|---|---|']
        lines += [f'| {k.replace("_", " ")} | {fmt(v["p50"])} / {fmt(v["p90"])} |'
                  for k, v in ph.items()]
        back = r['back_to_rung0_after_load_s']
        lines += ['', f'Back on the most accurate rung {fmt(back)} s after the load stopped.', '']
    if r['per_class_iou']:
        lines += ['| class | IoU |', '|---|---|']
        lines += [f'| {k} | {"-" if v is None else format(v, ".3f")} |'
                  for k, v in r['per_class_iou'].items()]
    return '\n'.join(lines) + '\n'
