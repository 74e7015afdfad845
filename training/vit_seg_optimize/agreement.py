"""Label agreement of precision variants of a model with its FP32 form.

``python -m vit_seg_optimize.agreement --reference M.onnx --models A.onnx B.onnx --data DIR
--limit 3 [--json OUT]``: runs every model (ONNX Runtime CPU, cards beside them) on the first
``limit`` frames of a split and reports the fraction of pixels whose label equals the
reference's. Used for the FP16-typed TensorRT forms, which this CPU can run but not speed up.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

import numpy as np


def agreement(reference: str, models: list[str], data: str, split: str = 'val',
              limit: int = 3) -> dict[str, float]:
    """Return ``model -> fraction of pixels labelled as by the reference`` on ``limit`` frames."""
    from vit_seg_node.core.datasets import SegmentationDataset
    from vit_seg_node.backends.base import create_backend
    from vit_seg_node.core.card import load_card
    from vit_seg_node.core.processing import postprocess, preprocess

    ds = SegmentationDataset(data, split, None, cache=False)
    frames = [ds.load(i)[0] for i in range(min(limit, len(ds)))]

    def labels(path: str) -> np.ndarray:
        c = load_card(path)         # any input form; a batch of N gets the frame N times
        backend = create_backend(path, c, threads=0)
        out = []
        for f in frames:            # at the frame's size, whatever the model's output stride
            x, geo = preprocess(f, c)
            out.append(postprocess(backend.infer(np.repeat(x, c.batch, 0))[:1], geo, c))
        return np.stack(out)
    ref = labels(reference)
    return {m: float(np.mean(labels(m) == ref)) for m in models}


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--reference', required=True)
    ap.add_argument('--models', nargs='+', required=True)
    ap.add_argument('--data', required=True)
    ap.add_argument('--split', default='val')
    ap.add_argument('--limit', type=int, default=3)
    ap.add_argument('--json')
    a = ap.parse_args(argv)
    rep = agreement(a.reference, a.models, a.data, a.split, a.limit)
    for m, v in rep.items():
        print(f'{m}: {100 * v:.1f} % of the labels as {a.reference}')
    if a.json:
        from vit_seg_node.core.io import write_json

        write_json(a.json, {'reference': a.reference, 'frames': a.limit, 'agreement': rep})
    return 0


if __name__ == '__main__':
    sys.exit(main())
