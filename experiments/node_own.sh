#!/usr/bin/env bash
# The node's own work per frame (receive-to-publish minus inference, and its stages) with the
# float model, the same model with its normalisation folded into the graph (uint8 frames in), and
# that one arg-maxing at half the input's resolution (vit-seg label-stride), under both executors,
# in interleaved repeats (the host drifts; compare within one run).
#   bash experiments/node_own.sh DATA OUT_DIR [REPEATS]
# MODEL: the float form (labels at the input's resolution); default runs/models/fast_mixed.onnx,
# the shipped fast model before its label stride (`make models` writes it).
# Writes OUT_DIR/{float,folded,strided}_{single,events}_K.json (vit-seg bench-node reports) and
# OUT_DIR/summary.json (medians over repeats, the CPU).
set -euo pipefail
data=$1 out=$2 reps=${3:-2}
V=${VENV:-.venv}/bin
float_model=${MODEL:-runs/models/fast_mixed.onnx}
mkdir -p "$out"
mkdir -p runs/node_own
$V/vit-seg fold-input --model "$float_model" --out runs/node_own/fast_folded.onnx > /dev/null
$V/vit-seg label-stride --model runs/node_own/fast_folded.onnx --out runs/node_own/fast_strided.onnx \
  --stride 2 --frames "$data" > /dev/null
for k in $(seq 1 "$reps"); do
  for model in float folded strided; do
    m=$float_model
    [ $model != float ] && m=runs/node_own/fast_$model.onnx
    for ex in single events; do
      $V/vit-seg bench-node --frames "$data" --model "$m" --runs 60 --executor $ex \
        --json "$out/${model}_${ex}_$k.json" | tail -2 | head -1 | sed "s/^/$model $ex $k: /"
    done
  done
done
$V/python - "$out" <<'PY'
import json, sys, glob, statistics
from pathlib import Path
from vit_seg_node.core.io import write_json
from vit_seg_node.core.machine import machine_record
out = Path(sys.argv[1])
rows = {}
for f in sorted(out.glob('*_*_*.json')):
    model, ex, _ = f.stem.split('_')
    r = json.loads(f.read_text())
    row = rows.setdefault(f'{model}_{ex}', {'runs': 0, 'stages': {}, 'raw': [], 'e2e': []})
    row['runs'] += 1
    row['raw'].append(r['raw_infer_ms']['p50'])
    row['e2e'].append(r['node_end_to_end_ms']['p50'])
    for k, v in r['node_stages_p50_ms'].items():
        row['stages'].setdefault(k, []).append(v)
summary = {k: {'repeats': v['runs'], 'raw_infer_p50_ms': statistics.median(v['raw']),
               'node_end_to_end_p50_ms': statistics.median(v['e2e']),
               'stages_p50_ms': {s: statistics.median(x) for s, x in v['stages'].items()}}
           for k, v in rows.items()}
summary['machine'] = machine_record(2)
write_json(out / 'summary.json', summary)
for k, v in summary.items():
    if k != 'machine':
        print(k, 'own %.2f' % v['stages_p50_ms']['own'], v['stages_p50_ms'])
PY
