"""Three ways to bring a 480x360 frame to a 480x352 network, and what each costs and scores.

    python -m experiments.resize_options --frames ../shared/datasets/camvid \
        --out docs/results/resize_options.json

Cost, cache-cold (40 MB touched before each call, as an inference does), alternatives in
rotation: OpenCV's bilinear resize (what ``core.processing`` does), a gather of the nearest rows
(8 of 360 dropped), and the bilinear resize as an ONNX Runtime ``Resize`` on the uint8 frame
(what moving it into the graph would cost; 2 threads, a one-operator graph). Score: ``fast.onnx``
on ``val`` and on the held-out drive with its input made by the bilinear resize and by the row
gather (the same model, the same frames).
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from vit_seg_node.core.datasets import SegmentationDataset
from vit_seg_node.core.io import write_json
from vit_seg_node.core.machine import machine_record
from vit_seg_node.core.metrics import ConfusionMatrix
from vit_seg_node.core.processing import fit_geometry, model_input, nearest_rows, restore_labels, \
    to_labels
from vit_seg_node.pipeline import SegmentationPipeline

SRC, DST = (360, 480), (352, 480)


def resize_graph():
    """Return an ONNX Runtime session resizing 1x360x480x3 uint8 to 1x352x480x3, bilinear."""
    import onnxruntime as ort
    from onnx import helper, numpy_helper, TensorProto

    sizes = numpy_helper.from_array(np.array([1, *DST, 3], np.int64), 'sizes')
    graph = helper.make_graph(
        [helper.make_node('Resize', ['x', '', '', 'sizes'], ['y'], mode='linear',
                          coordinate_transformation_mode='half_pixel')], 'resize',
        [helper.make_tensor_value_info('x', TensorProto.UINT8, [1, *SRC, 3])],
        [helper.make_tensor_value_info('y', TensorProto.UINT8, [1, *DST, 3])], [sizes])
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)])
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=['CPUExecutionProvider'])


def costs(frames: list[np.ndarray], runs: int) -> dict:
    """Return the median cache-cold ms of each way, in rotation."""
    out = np.empty((*DST, 3), np.uint8)
    rows = nearest_rows(SRC[0], DST[0])
    sess = resize_graph()
    ways = {
        'opencv bilinear': lambda f: cv2.resize(f, DST[::-1], dst=out,
                                                interpolation=cv2.INTER_LINEAR),
        'nearest rows (gather)': lambda f: np.take(f, rows, axis=0, out=out, mode='clip'),
        'onnxruntime Resize (in the graph)': lambda f: sess.run(None, {'x': f[None]}),
    }
    junk = np.ones(40_000_000 // 8)
    times: dict[str, list[float]] = {k: [] for k in ways}
    for r in range(runs + 3):
        for k, way in ways.items():
            junk += 1.0
            t = time.perf_counter()
            way(frames[r % len(frames)])
            if r >= 3:
                times[k].append((time.perf_counter() - t) * 1e3)
    return {k: float(np.median(v)) for k, v in times.items()}


def scores(root: str, split: str) -> dict:
    """Return ``fast.onnx``'s mIoU on ``split`` with bilinear and with nearest-row inputs."""
    pipe = SegmentationPipeline('fast', threads=2)
    card = pipe.card
    rows = nearest_rows(SRC[0], DST[0])
    cms = {k: ConfusionMatrix(card.num_classes, card.ignore_index) for k in ('bilinear', 'rows')}
    ds = SegmentationDataset(root, split, None, cache=False)
    for i in range(len(ds)):
        image, label = ds.load(i)[:2]
        if image.shape[:2] != SRC:
            continue
        geo = fit_geometry(*SRC, *DST, 'stretch')
        for k, resized in (('bilinear', cv2.resize(image, DST[::-1])),
                           ('rows', np.take(image, rows, axis=0))):
            out = pipe.backend.infer(model_input(resized[None], card))
            cms[k].update(restore_labels(to_labels(out, card.output_kind)[0], geo), label)
    return {k: cm.miou() for k, cm in cms.items()}


def main(argv: list[str] | None = None) -> int:
    """Time the three ways, score the two host ones; write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--frames', required=True)
    ap.add_argument('--runs', type=int, default=100)
    ap.add_argument('--out', required=True)
    a = ap.parse_args(argv)
    ds = SegmentationDataset(a.frames, 'val', None, cache=False)
    frames = [ds.load(i)[0] for i in range(4)]
    report = {'cold_ms': costs(frames, a.runs),
              'miou': {split: scores(a.frames, split) for split in ('val', 'heldout')},
              'machine': machine_record(2)}
    for k, v in report['cold_ms'].items():
        print(f'{k}: {v:.3f} ms')
    for split, row in report['miou'].items():
        print(f'{split}: mIoU bilinear {row["bilinear"]:.4f}, nearest rows {row["rows"]:.4f}')
    write_json(a.out, report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
