#!/usr/bin/env bash
# Labels at half resolution (vit-seg label-stride) for models of the benchmark of record: each
# model and its stride-2 form scored on the held-out drive and timed in one interleaved regimes
# run, so that the comparison between models stays fair (every graph here ends in the same
# float resize of its logits before the arg-max).
#   bash experiments/label_stride_peers.sh DATA OUT_DIR MODEL.onnx [MODEL.onnx ...]
# (the models of `make bench` are in runs/bench_models/). Writes OUT_DIR/NAME{,_s2}.json
# (vit-seg eval on heldout), OUT_DIR/regimes.{json,md} and OUT_DIR/summary.json.
set -euo pipefail
data=$1 out=$2
shift 2
V=${VENV:-.venv}/bin
mkdir -p "$out" runs/label_stride_peers
models=()
for m in "$@"; do
  name=$(basename "$m" .onnx)
  s2=runs/label_stride_peers/${name}_s2.onnx
  $V/vit-seg label-stride --model "$m" --out "$s2" --stride 2 --frames "$data" --split heldout \
    > /dev/null
  for x in "$m" "$s2"; do
    $V/vit-seg eval --model "$x" --data "$data" --split heldout \
      --json "$out/$(basename "$x" .onnx).json" > /dev/null
  done
  models+=(--model "$m" --model "$s2")
done
$V/vit-seg regimes "${models[@]}" --threads 2-runspin --runs 200 --json "$out/regimes.json"
$V/python - "$out" <<'PY'
import json, sys
from pathlib import Path
from vit_seg_node.core.io import write_json
from vit_seg_node.core.machine import machine_record
out = Path(sys.argv[1])
reg = json.loads((out / 'regimes.json').read_text())
rows = {}
for m, cells in reg['models'].items():
    name = Path(m).stem
    rows[name] = {'heldout_miou': json.loads((out / f'{name}.json').read_text())['miou'],
                  'p50_ms': {k: v['p50'] for k, v in cells.items()}}
write_json(out / 'summary.json', {'machine': machine_record(2), 'models': rows})
for name, row in rows.items():
    print(f'{name}: heldout mIoU {row["heldout_miou"]:.4f}, p50 ms',
          {k: round(v, 1) for k, v in row['p50_ms'].items()})
PY
