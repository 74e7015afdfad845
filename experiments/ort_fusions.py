"""ONNX Runtime's transformer optimizer on the shipped models: what it fuses, whether it helps.

python experiments/ort_fusions.py --model vit_seg_node/data/models/default.onnx \
    --model vit_seg_node/data/models/fast.onnx --frames DIR --out DIR --json J

For each model: ``onnxruntime.transformers.optimizer.optimize_model`` (``model_type='vit'``, heads
and width detected from the graph, offline fusions only; the session adds its own at load), the
fused file with a copy of the card beside it, the fusions it made, the operator counts of the graph
ONNX Runtime actually runs (session-optimised, ``ORT_ENABLE_ALL``) before and after, and the
label agreement of the two on real frames. Time them with ``vit-seg regimes --model A --model
A_fused ...`` and per operator with ``python -m vit_seg_optimize.profile``.
"""

from __future__ import annotations

import argparse
import collections
import os
from pathlib import Path
import shutil
import sys
import tempfile

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / 'training'), str(ROOT)]

from vit_seg_node.core.card import card_path_for  # noqa: E402
from vit_seg_node.core.datasets import spread_frames  # noqa: E402
from vit_seg_node.core.io import write_json  # noqa: E402
from vit_seg_node.pipeline import SegmentationPipeline  # noqa: E402


def session_graph_ops(model: str) -> dict[str, int]:
    """Return the operator counts of the graph an ``ORT_ENABLE_ALL`` session runs."""
    with tempfile.TemporaryDirectory() as d:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.optimized_model_filepath = os.path.join(d, 'opt.onnx')
        so.log_severity_level = 3
        ort.InferenceSession(model, so, providers=['CPUExecutionProvider'])
        g = onnx.load(so.optimized_model_filepath).graph
    return dict(collections.Counter(n.op_type for n in g.node).most_common())


def fuse(model: str, out_dir: Path) -> tuple[Path, dict[str, int]]:
    """Write ``<stem>_fused.onnx`` (and its card) to ``out_dir``; return it and the fusions."""
    from onnxruntime.transformers.optimizer import optimize_model

    opt = optimize_model(model, model_type='vit', num_heads=0, hidden_size=0, opt_level=0)
    out = out_dir / f'{Path(model).stem}_fused.onnx'
    opt.save_model_to_file(str(out))
    shutil.copy(card_path_for(model), card_path_for(out))
    return out, {k: v for k, v in opt.get_fused_operator_statistics().items() if v}


def main(argv=None) -> int:
    """Fuse each model, compare graphs and labels, write the report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--model', action='append', required=True)
    ap.add_argument('--frames', required=True, help='dataset root (labels compared on its frames)')
    ap.add_argument('--split', default='heldout')
    ap.add_argument('--num-frames', type=int, default=12)
    ap.add_argument('--out', required=True, help='folder for the fused models')
    ap.add_argument('--json', required=True)
    a = ap.parse_args(argv)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    frames = spread_frames(a.frames, a.split, a.num_frames)
    report = {}
    for model in a.model:
        fused, stats = fuse(model, out_dir)
        ref = SegmentationPipeline(model, threads=2)
        new = SegmentationPipeline(str(fused), threads=2)
        agree = float(np.mean([np.mean(ref(f).labels == new(f).labels) for f in frames]))
        before, after = session_graph_ops(model), session_graph_ops(str(fused))
        report[Path(model).name] = {
            'fused_file': str(fused), 'fusions': stats, 'label_agreement': agree,
            'frames': len(frames), 'split': a.split,
            'session_nodes_before': sum(before.values()),
            'session_nodes_after': sum(after.values()),
            'session_ops_before': before, 'session_ops_after': after}
        print(f'{model}: fusions {stats}; session graph {sum(before.values())} -> '
              f'{sum(after.values())} nodes; label agreement {agree:.5f}')
    write_json(a.json, report)
    return 0


if __name__ == '__main__':
    sys.exit(main())
