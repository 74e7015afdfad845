#!/usr/bin/env bash
# Latency of the hybrid family's forms beside the CNN peer on this CPU, before any training
# (latency does not depend on the weights; token-reduction shapes are static), and the share of
# its time spent in the transformer blocks (the most a token reduction can save).
#   bash experiments/hybrid_latency.sh DATA OUT_JSON
# Forms: dense FP32, dense mixed INT8 (Linear layers dynamic INT8, convolutions FP32), neighbour
# merge w0.7 r0.3 and w0.8 r0.4 at blocks [0, 2] + mixed INT8; LRASPP from its reference weights.
set -euo pipefail
data=$1 out=$2
V=${VENV:-.venv}/bin
w=runs/hybrid_latency
mkdir -p $w/untrained
$V/python -m experiments.untrained training/configs/heldout/hybrid_tiny.yaml "$w/untrained"
ck=$w/untrained/model.safetensors
exp() { $V/vit-seg export --checkpoint "$1" --out "$2" --frames "$data" --split heldout \
          --num-frames 2 ${3:+--reduction "$3"} > /dev/null; }
exp $ck $w/hybrid.onnx
exp $ck $w/hybrid_nb07.onnx '{policy: neighbor, window_first: 0.7, ratio: 0.3, locations: [0, 2]}'
exp $ck $w/hybrid_nb08.onnx '{policy: neighbor, window_first: 0.8, ratio: 0.4, locations: [0, 2]}'
exp training/reference/heldout_lraspp_mbv3/model.safetensors $w/lraspp.onnx
for m in hybrid hybrid_nb07 hybrid_nb08; do
  $V/vit-seg quantize --model $w/$m.onnx --format dynamic --out $w/$m.int8.onnx > /dev/null
done
$V/vit-seg regimes --model $w/hybrid.onnx --model $w/hybrid.int8.onnx \
  --model $w/hybrid_nb07.int8.onnx --model $w/hybrid_nb08.int8.onnx --model $w/lraspp.onnx \
  --threads 1 2-runspin --runs ${RUNS:-30} --json "$out"
for m in hybrid hybrid.int8 hybrid_nb07.int8; do     # time per part: stem, blocks, decoder
  $V/python -m vit_seg_optimize.profile $w/$m.onnx --runs ${RUNS:-30} --threads 1
done | tee "${out%.json}.profile.txt"
