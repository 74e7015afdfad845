#!/usr/bin/env bash
# Arg-max at 1/stride of the input (vit-seg label-stride) on one model: mIoU on val and on the
# held-out drive for strides 1, 2 and 4, and their latency in one interleaved regimes run.
#   bash experiments/label_stride.sh DATA OUT_DIR
# MODEL: a model with labels at the input's resolution; default runs/models/fast_mixed.onnx, the
# shipped fast model before its label stride (`make models` writes it; `make vit-models` writes
# the plain ViT's, runs/models/vit/fast.onnx).
# Writes OUT_DIR/s{1,2,4}_{val,heldout}.json (vit-seg eval), OUT_DIR/regimes.{json,md} and
# OUT_DIR/summary.json (mIoU per stride and split, p50 ms per regime, the CPU).
set -euo pipefail
data=$1 out=$2
V=${VENV:-.venv}/bin
model=${MODEL:-runs/models/fast_mixed.onnx}
mkdir -p "$out" runs/label_stride
cp "$model" runs/label_stride/fast_s1.onnx
cp "${model%.onnx}.card.yaml" runs/label_stride/fast_s1.card.yaml
for s in 2 4; do
  $V/vit-seg label-stride --model "$model" \
    --out runs/label_stride/fast_s$s.onnx --stride $s --frames "$data" > /dev/null
done
for s in 1 2 4; do
  for split in val heldout; do
    $V/vit-seg eval --model runs/label_stride/fast_s$s.onnx --data "$data" --split $split \
      --json "$out/s${s}_$split.json" > /dev/null
  done
done
$V/vit-seg regimes --model runs/label_stride/fast_s1.onnx --model runs/label_stride/fast_s2.onnx \
  --model runs/label_stride/fast_s4.onnx --threads 2-runspin --runs 200 --json "$out/regimes.json"
$V/python - "$out" <<'PY'
import json, sys
from pathlib import Path
from vit_seg_node.core.io import write_json
from vit_seg_node.core.machine import machine_record
out = Path(sys.argv[1])
reg = json.loads((out / 'regimes.json').read_text())
summary = {'machine': machine_record(2), 'strides': {}}
for s in (1, 2, 4):
    row = {split: json.loads((out / f's{s}_{split}.json').read_text())['miou']
           for split in ('val', 'heldout')}
    summary['strides'][s] = row
summary['p50_ms'] = {Path(m).stem: {k: v['p50'] for k, v in cells.items()}
                     for m, cells in reg['models'].items()}
write_json(out / 'summary.json', summary)
for s, row in summary['strides'].items():
    print(f'stride {s}: mIoU val {row["val"]:.4f}, heldout {row["heldout"]:.4f},',
          summary['p50_ms'][f'fast_s{s}'])
PY
