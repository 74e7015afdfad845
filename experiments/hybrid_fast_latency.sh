#!/usr/bin/env bash
# Latency of the fast form of hybrid designs, before training (latency does not depend on the
# weights; token-reduction shapes are static), beside the CNN peer: for each training config,
# the model with neighbour merge w0.8 r0.4 at blocks [0, 2], dynamic INT8 of its Linear layers
# (convolutions FP32: static INT8 of the stem needs calibrated, trained weights) and labels at
# half resolution; LRASPP from its
# reference weights with labels at half resolution. One interleaved regimes run.
#   bash experiments/hybrid_fast_latency.sh DATA OUT_JSON CONFIG.yaml [CONFIG.yaml ...]
set -euo pipefail
data=$1 out=$2
shift 2
V=${VENV:-.venv}/bin
w=runs/hybrid_fast_latency
mkdir -p $w
models=()
for cfg in "$@"; do
  name=$(basename "$cfg" .yaml)
  mkdir -p $w/$name
  $V/python -m experiments.untrained "$cfg" "$w/$name"
  $V/vit-seg export --checkpoint $w/$name/model.safetensors --out $w/$name.onnx --frames "$data" \
    --split heldout --num-frames 2 --output labels \
    --reduction '{policy: neighbor, window_first: 0.8, ratio: 0.4, locations: [0, 2]}' > /dev/null
  $V/vit-seg quantize --model $w/$name.onnx --format dynamic --out $w/$name.int8.onnx > /dev/null
  # untrained weights: labels carry no meaning, so the agreement check is not applied
  $V/vit-seg label-stride --model $w/$name.int8.onnx --out $w/$name.fast.onnx --stride 2 \
    --min-agreement 0 > /dev/null
  models+=(--model $w/$name.fast.onnx)
done
bash experiments/lraspp_fast.sh "$data" $w
$V/vit-seg regimes "${models[@]}" --model $w/lraspp.fast.onnx --threads 2-runspin \
  --runs ${RUNS:-100} --json "$out"
