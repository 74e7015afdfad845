#!/usr/bin/env bash
# Underfitting or overfitting? Each checkpoint scored on the frames it was fitted on (`fit`) and
# on the held-out drive (`heldout`), whole frames at the network input, the deployment path.
#   bash experiments/fit_gap.sh DATA OUT_DIR CHECKPOINT.safetensors [CHECKPOINT ...]
# Writes OUT_DIR/NAME.{fit,heldout}.json (NAME: the checkpoint's folder) and prints one line per
# checkpoint: fit mIoU, held-out mIoU, their gap.
set -euo pipefail
data=$1 out=$2
shift 2
V=${VENV:-.venv}/bin
mkdir -p "$out"
for ckpt in "$@"; do
  name=$(basename "$(dirname "$ckpt")")
  for split in fit heldout; do
    $V/vit-seg eval --checkpoint "$ckpt" --data "$data" --split $split --threads 2 \
      --json "$out/$name.$split.json" > /dev/null
  done
  $V/python - "$out/$name" <<'PY'
import json, sys
fit, held = (json.load(open(f'{sys.argv[1]}.{s}.json'))['miou'] for s in ('fit', 'heldout'))
print(f'{sys.argv[1].rsplit("/", 1)[-1]}: fit {fit:.4f}  heldout {held:.4f}  gap {fit - held:.4f}')
PY
done
