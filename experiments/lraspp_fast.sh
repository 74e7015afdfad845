#!/usr/bin/env bash
# The CNN peer in the form the hybrids' fast forms are timed beside: the held-out LRASPP
# reference exported with labels as output, at half resolution (`vit-seg label-stride --stride 2`,
# checked against the graph it edits). Writes WORK_DIR/lraspp.fast.onnx.
#   bash experiments/lraspp_fast.sh DATA WORK_DIR [CHECKPOINT]
# CHECKPOINT: another LRASPP run's weights (another seed); default the reference.
set -euo pipefail
data=$1 w=$2 ckpt=${3:-training/reference/heldout_lraspp_mbv3/model.safetensors}
V=${VENV:-.venv}/bin
mkdir -p "$w"
$V/vit-seg export --checkpoint "$ckpt" \
  --out "$w/lraspp.onnx" --frames "$data" --split heldout --num-frames 2 --output labels > /dev/null
$V/vit-seg label-stride --model "$w/lraspp.onnx" --out "$w/lraspp.fast.onnx" --stride 2 \
  --frames "$data" --split heldout > /dev/null
