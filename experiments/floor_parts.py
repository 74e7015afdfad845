"""Where a frame's round trip through the node goes, hop by hop, from DDS's own timestamps.

python -m experiments.floor_parts --frames ../shared/datasets/camvid \
    --model vit_seg_node/data/models/fast.onnx --out docs/results/floor_parts.json

The same client as ``vit-seg bench-node`` (480x360 rgb8 frames serialized in advance, one in
flight, one every 50 ms) sends frames to the model-free relay and to the node, each under the
single-threaded and the events executor, and to the node whose ONNX Runtime pool keeps
spinning after each run (ONNX Runtime's default; the backend stops it), the order rotating
over rounds. Relay and node are the package's own classes with clock readings added (this
module, started as their process): the reception time Fast DDS gives the frame, the
subscription callback's entry, the worker's start and the moment before publishing go back to
the client in the mask's ``frame_id``; the client adds the mask's reception time in its DDS
reader and its callback's entry. All readings are the system clock of one machine. Reception
times reach only callbacks that take message info, which rclpy 7.1's events executor does not
run: under it a part is timed from publish call to callback.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from types import SimpleNamespace
from typing import Any, Optional

import numpy as np

# Each part: (name, from, to) over the readings t0 (client publishes), t1 (publish returned),
# rx (the node's DDS reader has the frame), cb (its callback starts), w0 (the worker starts),
# w1 (about to publish), mask_rx (the client's DDS reader has the mask), done (its callback).
PARTS = (('publish_call', 't0', 't1'), ('to_node_dds', 't0', 'rx'),
         ('node_dispatch', 'rx', 'cb'), ('to_node_callback', 't0', 'cb'),
         ('hand_off', 'cb', 'w0'), ('node_work', 'w0', 'w1'),
         ('to_client_dds', 'w1', 'mask_rx'), ('client_dispatch', 'mask_rx', 'done'),
         ('to_client_callback', 'w1', 'done'), ('round_trip', 't0', 'done'))
NAMES = tuple(p[0] for p in PARTS)
KINDS = ('relay single', 'node single', 'relay events', 'node events',
         'node events spin-after-run')
SPIN_AFTER_RUN = 'FLOOR_PARTS_SPIN_AFTER_RUN'   # read by the node process


def _stamped_header(header, stamps: list[int]):
    """Return ``header`` with the clock readings so far as its frame_id."""
    return SimpleNamespace(stamp=header.stamp, frame_id=','.join(map(str, stamps)))


def _arrival(info: Optional[dict]) -> list[int]:
    """Return [DDS reception (0 without message info), callback entry] in ns."""
    return [info['received_timestamp'] if info else 0, time.time_ns()]


def _without_info(callback):
    """Return ``callback(self, msg, info)`` as a one-argument callback (no message info)."""
    return lambda self, msg: callback(self, msg, None)


def _camera_without_info(callback):
    """Return ``callback(self, cam, msg, info)`` without message info."""
    return lambda self, cam, msg: callback(self, cam, msg, None)


def node_classes(with_info: bool):
    """Return the relay and the node with clock readings; imports rclpy, so only when run.

    ``with_info``: their image callbacks take message info (the single executor only).
    """
    from sensor_msgs.msg import Image

    from vit_seg_node.ros.convert import from_serialized, mask_message
    from vit_seg_node.ros.node import SegmentationNode
    from vit_seg_node.ros.relay import RelayNode

    class StampedRelay(RelayNode):
        def _on_frame(self, msg: Any, info: Optional[dict]) -> None:
            self._stamps = _arrival(info)
            self._worker.offer(msg)

        def _answer(self, msg: Any) -> None:
            stamps = self._stamps + [time.time_ns()]
            msg = from_serialized(msg, Image)
            labels = np.zeros((int(msg.height), int(msg.width)), np.uint8)
            header = _stamped_header(msg.header, stamps + [time.time_ns()])
            self.pub_mask.publish(mask_message(labels, header, True))

    class StampedNode(SegmentationNode):
        def _on_frame(self, cam, msg: Any, info: Optional[dict]) -> None:
            self._stamps = _arrival(info)
            super()._on_frame(cam, msg)

        def _process(self, cam, msg: Any, received: float) -> None:
            self._stamps.append(time.time_ns())
            super()._process(cam, msg, received)

        def _publish(self, cam, header, labels, rgb, geo) -> None:
            super()._publish(cam, _stamped_header(header, self._stamps + [time.time_ns()]),
                             labels, rgb, geo)

    if not with_info:       # rclpy passes message info to callbacks that take two arguments
        StampedRelay._on_frame = _without_info(StampedRelay._on_frame)
        StampedNode._on_frame = _camera_without_info(StampedNode._on_frame)
    return StampedRelay, StampedNode


def run_process(argv: list[str]) -> int:
    """Run the node process: the node when a model is given, else the relay."""
    from vit_seg_node.ros.spin import run_node

    if os.environ.get(SPIN_AFTER_RUN) == '1':   # ONNX Runtime's default: the pool spins on
        from vit_seg_node.backends import onnxruntime_backend as ob

        ob.make_session = functools.partial(ob.make_session, spin_after_run=True)
    relay, node = node_classes('executor:=events' not in argv)
    with_model = any(a.startswith('model_path:=') for a in argv)
    return run_node(node if with_model else relay, ['floor_parts'] + argv)


def stamped_session(model, frames, domain: int, executor: str):
    """Return a ``NodeSession`` whose client records the clock readings of each frame."""
    from vit_seg_node.eval.node_overhead import NodeSession
    from vit_seg_node.ros import cdr

    class StampedSession(NodeSession):
        def _on_mask(self, msg: bytes, info: Optional[dict]) -> None:
            now = _arrival(info)
            node = [int(s) for s in cdr.parse_image(msg).header.frame_id.split(',')]
            self._record = node + now
            self._got.set()

        def parts(self, runs: int, gap_s: float) -> list[dict[str, float]]:
            out = []
            for _ in range(runs):
                self._got.clear()
                t0 = time.time_ns()
                self.pub.publish(self.msgs[self._sent % len(self.msgs)])
                t1 = time.time_ns()
                self._sent += 1
                if self._got.wait(10):
                    at = dict(zip(('rx', 'cb', 'w0', 'w1', 'mask_rx', 'done'), self._record),
                              t0=t0, t1=t1)
                    out.append({name: (at[b] - at[a]) / 1e6 for name, a, b in PARTS
                                if at[a] and at[b]})
                time.sleep(gap_s)
            return out

    if executor == 'events':
        StampedSession._on_mask = _without_info(StampedSession._on_mask)
    return StampedSession(model, frames, 2, domain, module='experiments.floor_parts',
                          executor=executor)


def main(argv: list[str] | None = None) -> int:
    """Alternate rounds through the relay and the node; write the medians of each part."""
    argv = sys.argv[1:] if argv is None else argv
    if '--ros-args' in argv:
        return run_process(argv)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--frames', required=True, help='dataset root')
    ap.add_argument('--split', default='val')
    ap.add_argument('--model', required=True, help='the node\'s model')
    ap.add_argument('--rounds', type=int, default=3)
    ap.add_argument('--runs', type=int, default=60)
    ap.add_argument('--gap', type=float, default=0.05)
    ap.add_argument('--domain-id', type=int, default=76)
    ap.add_argument('--out')
    a = ap.parse_args(argv)

    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.core.io import write_json
    from vit_seg_node.core.machine import machine_record

    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(5, len(ds)))]
    kinds = list(KINDS)
    rows: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
    blocks = []
    for rnd in range(a.rounds):
        for kind in kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]:
            who, executor = kind.split()[:2]
            os.environ[SPIN_AFTER_RUN] = '1' if kind.endswith('spin-after-run') else '0'
            with stamped_session(a.model if who == 'node' else None, frames, a.domain_id,
                                 executor) as session:
                got = session.parts(a.runs, a.gap)
            rows[kind] += got
            blocks.append({'round': rnd, 'kind': kind, 'answered': len(got),
                           'p50_ms': medians(got)})
            print(f'round {rnd} {kind}: ' + ', '.join(f'{p} {v:.2f}' for p, v in
                                                      blocks[-1]['p50_ms'].items()), flush=True)
    if a.out:
        write_json(a.out, {'what': 'median ms of each part of a round trip through the relay '
                                   'and the node, 480x360 rgb8 frames in, mono8 masks out',
                           'parts': {name: f'{x} -> {y}' for name, x, y in PARTS},
                           'model': a.model, 'rounds': a.rounds, 'runs': a.runs,
                           'gap_s': a.gap, 'summary': {k: medians(v) for k, v in rows.items()},
                           'blocks': blocks, 'machine': machine_record(2)})
    return 0


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    """Return the median of each part over the frames that have it."""
    out = {}
    for name in NAMES:
        v = [r[name] for r in rows if name in r]
        if v:
            out[name] = round(float(np.median(v)), 3)
    return out


if __name__ == '__main__':
    sys.exit(main())
