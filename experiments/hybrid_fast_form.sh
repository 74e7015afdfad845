#!/usr/bin/env bash
# The fast form of trained hybrids, scored and timed beside the CNN peer's, all with labels at
# half resolution. For each hybrid checkpoint (config.yaml beside it): per-group INT8 sensitivity
# of the dense export on the held-out drive and its plan (OUT_DIR/NAME.sensitivity.json), the
# export with neighbour merge w0.8 r0.4 at blocks [0, 2], the plan applied (ONNX Runtime dynamic
# INT8, static parts calibrated on `fit`), `vit-seg label-stride --stride 2` (checked against the
# graph it edits); then every fast form and LRASPP's (FP32, stride 2) scored on the held-out drive
# (OUT_DIR/NAME.fast.json) and timed in one interleaved `vit-seg regimes` run (OUT_DIR/regimes.*).
#   bash experiments/hybrid_fast_form.sh DATA OUT_DIR CHECKPOINT.safetensors [CHECKPOINT ...]
# NAME: the checkpoint's folder. Run from the repository root after `make reference`.
# THREADS (default 2-runspin), REPEATS (default 1) and RUNS (default 100; 0: score only, no
# timing) pass to `vit-seg regimes`. PLAN: one sensitivity report whose plan every checkpoint
# takes, none measured (for checkpoints adapted with the reduction attached, whose own export is
# not the dense model). PEER: the LRASPP checkpoint scored and timed beside them (default the
# held-out reference; `none`: no peer).
set -euo pipefail
data=$1 out=$2
shift 2
V=${VENV:-.venv}/bin
w=runs/hybrid_fast_form
mkdir -p "$out" $w
NB='{policy: neighbor, window_first: 0.8, ratio: 0.4, locations: [0, 2]}'
models=()
for ckpt in "$@"; do
  name=$(basename "$(dirname "$ckpt")")
  plan=${PLAN:-$out/$name.sensitivity.json}
  if [ -z "${PLAN:-}" ]; then
    $V/vit-seg export --checkpoint "$ckpt" --out $w/$name.onnx --frames "$data" --split heldout \
      --num-frames 2 > /dev/null
    $V/vit-seg sensitivity --model $w/$name.onnx --data "$data" --split heldout \
      --calib-split fit --json "$plan" > /dev/null
  fi
  $V/vit-seg export --checkpoint "$ckpt" --out $w/$name.nb.onnx --frames "$data" \
    --split heldout --num-frames 2 --output labels --reduction "$NB" > /dev/null
  $V/vit-seg quantize --model $w/$name.nb.onnx --format dynamic --out $w/$name.nb.mixed.onnx \
    --plan "$plan" --calib "$data" --split fit > /dev/null
  $V/vit-seg label-stride --model $w/$name.nb.mixed.onnx --out $w/$name.fast.onnx --stride 2 \
    --frames "$data" --split heldout > /dev/null
  models+=($w/$name.fast.onnx)
done
if [ "${PEER:-}" != none ]; then
  bash experiments/lraspp_fast.sh "$data" $w ${PEER:-}
  models+=($w/lraspp.fast.onnx)
fi
for m in "${models[@]}"; do
  $V/vit-seg eval --model "$m" --data "$data" --split heldout --threads 2 \
    --json "$out/$(basename "$m" .onnx).json" | sed -n 1p
done
[ "${RUNS:-100}" = 0 ] && exit 0
args=()
for m in "${models[@]}"; do args+=(--model "$m"); done
$V/vit-seg regimes "${args[@]}" --threads ${THREADS:-2-runspin} --runs ${RUNS:-100} \
  --repeats ${REPEATS:-1} --json "$out/regimes.json"
