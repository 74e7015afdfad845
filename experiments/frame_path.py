"""The node's per-frame steps as a camera paces them: each timed 50 ms after the last frame.

python -m experiments.frame_path --frames ../shared/datasets/camvid \
    --out docs/results/frame_path.json

A loop over real 480x360 frames, one every ``--gap`` seconds, with an inference of the model
between frames (so the caches hold what they hold in the node), timing the alternatives of each
step in rotation: taking a frame (rclpy's ``deserialize_message`` against ``ros.cdr`` reading it
in place), pre-processing (``preprocess`` with fresh arrays against ``Preprocessor`` with kept
buffers; its resize and its normalisation alone), bringing the network-size labels back to the
frame's size (OpenCV's nearest-neighbour resize against ``restore_labels``' row gather), and
inference itself (called straight out of the sleep against right after
pre-processing). Writes the medians with the machine.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import Image

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.core.io import write_json
from vit_seg_node.core.machine import machine_record
from vit_seg_node.core.processing import fit_geometry, normalize, preprocess, Preprocessor, \
    resize_to_input, restore_labels, to_labels
from vit_seg_node.pipeline import SegmentationPipeline
from vit_seg_node.ros import cdr
from vit_seg_node.ros.convert import fill_image


def main(argv: list[str] | None = None) -> int:
    """Time each alternative in rotation; write the medians."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--frames', required=True)
    ap.add_argument('--split', default='val')
    ap.add_argument('--model', default='vit_seg_node/data/models/fast.onnx')
    ap.add_argument('--runs', type=int, default=60, help='frames per alternative')
    ap.add_argument('--gap', type=float, default=0.05)
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    ds = SegmentationDataset(a.frames, a.split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(5, len(ds)))]
    wire = []
    for f in frames:
        m = Image()
        fill_image(m, f, 'rgb8', m.header)
        wire.append(serialize_message(m))
    pipe = SegmentationPipeline(a.model, threads=2)
    prep = Preprocessor(pipe.card)
    card = pipe.card
    x0 = preprocess(frames[0], card)[0]
    labels = to_labels(pipe.backend.infer(x0), card.output_kind)[0].copy()
    h, w = frames[0].shape[:2]
    geo = fit_geometry(h, w, card.input_height, card.input_width, card.resize)
    resized = np.empty((card.input_height, card.input_width, 3), np.uint8)
    batch = np.empty((1, 3, card.input_height, card.input_width), np.float32)
    planes = [np.empty(resized.shape[:2], np.uint8) for _ in range(3)]
    steps = {
        'take: rclpy deserialize_message': lambda i: deserialize_message(wire[i], Image),
        'take: ros.cdr.parse_image (in place)': lambda i: cdr.parse_image(wire[i]),
        'pre-process: fresh arrays': lambda i: preprocess(frames[i], pipe.card),
        'pre-process: kept buffers (Preprocessor)': lambda i: prep(frames[i]),
        'pre-process: its resize alone': lambda i: resize_to_input(frames[i], card, resized),
        'pre-process: its normalisation alone': lambda i: normalize(resized[None], card, batch,
                                                                    planes),
        'labels to the frame size: cv2.resize nearest': lambda i: cv2.resize(
            labels, (w, h), interpolation=cv2.INTER_NEAREST),
        'labels to the frame size: restore_labels (row gather)':
            lambda i: restore_labels(labels, geo),
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    times['infer: straight out of the sleep'] = []
    times['infer: right after pre-processing'] = []
    for r in range(a.runs + 3):
        for k, step in steps.items():
            i = r % len(frames)
            time.sleep(a.gap)
            pipe.backend.infer(x0)              # the caches as the node leaves them
            time.sleep(a.gap)
            t = time.perf_counter()
            step(i)
            if r >= 3:
                times[k].append((time.perf_counter() - t) * 1e3)
        time.sleep(a.gap)
        t = time.perf_counter()
        pipe.backend.infer(x0)
        cold = (time.perf_counter() - t) * 1e3
        time.sleep(a.gap)
        batch, _ = prep(frames[r % len(frames)])
        t = time.perf_counter()
        pipe.backend.infer(batch)
        warm = (time.perf_counter() - t) * 1e3
        if r >= 3:
            times['infer: straight out of the sleep'].append(cold)
            times['infer: right after pre-processing'].append(warm)
    report = {'model': a.model, 'gap_s': a.gap, 'runs': a.runs, 'resolution': '480x360',
              'median_ms': {k: float(np.median(v)) for k, v in times.items()},
              'machine': machine_record(2)}
    for k, v in report['median_ms'].items():
        print(f'{k}: {v:.3f} ms')
    write_json(a.out, report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
