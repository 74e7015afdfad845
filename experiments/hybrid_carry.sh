#!/usr/bin/env bash
# The trained hybrid carried through token reduction and mixed precision on the held-out protocol.
#   bash experiments/hybrid_carry.sh DATA OUT_DIR [RUN_DIR]
# RUN_DIR (a finished `vit-seg train --config training/configs/heldout/hybrid_tiny_cpu.yaml`
# run) is first published to training/reference/heldout_hybrid_tiny_cpu (FP16 weights, records).
# Then: the dense FP32 export, its per-group INT8 sensitivity and plan on the held-out frames
# (OUT_DIR/sensitivity.json, the `mixed` variants' plan), and the benchmark grid of
# training/configs/bench_hybrid_heldout.yaml (variants, baselines and peers, the regimes) in OUT_DIR.
set -euo pipefail
data=$1 out=$2 run=${3:-}
V=${VENV:-.venv}/bin
ref=training/reference/heldout_hybrid_tiny_cpu
w=runs/hybrid_carry
mkdir -p "$out" $w
[ -n "$run" ] && $V/python -m vit_seg_train.publish "$run" $ref
make -s reference
$V/python -m pip install -q -r requirements/peers.txt
$V/vit-seg export --checkpoint $ref/model.safetensors --out $w/hybrid.onnx --frames "$data" \
  --split heldout --num-frames 2 > /dev/null
$V/vit-seg sensitivity --model $w/hybrid.onnx --data "$data" --split heldout \
  --calib-split fit --json "$out/sensitivity.json"
$V/vit-seg bench --config training/configs/bench_hybrid_heldout.yaml --out "$out"
