#!/usr/bin/env bash
# The hybrid family's levers on the held-out protocol, side by side on one lent GPU, plus the
# shipped forms trained on all labelled frames (train+val) with a fixed step count.
#   bash experiments/hybrid_screen.sh DATA OUT BUDGET_S HARD_TIMEOUT_S [extra gpu_train args]
# Every run: fit -> selected on heldout (0006R0), except all_*: train+val, last weights.
set -euo pipefail
data=$1 out=$2 budget=$3 hard=$4; shift 4
H=training/configs/heldout/hybrid_tiny.yaml
V=training/configs/heldout/vit_tiny.yaml
CP='{classes: [Pole, SignSymbol, Pedestrian, Bicyclist], prob: 0.5}'
python3 experiments/gpu_train.py --data "$data" --out "$out" --budget "$budget" \
  --hard-timeout "$hard" \
  --run hyb=$H \
  --run hyb_noskip=$H --set 'hyb_noskip:model.decoder_args={skip_dim: 0}' \
  --run hyb_conv0=$H --set 'hyb_conv0:model.conv_depths=[0, 1, 2, 0]' \
  --run hyb_conv4=$H --set 'hyb_conv4:model.conv_depths=[1, 2, 3, 4]' \
  --run hyb_c0134d4=$H --set 'hyb_c0134d4:model.conv_depths=[0, 1, 3, 4]' \
  --set 'hyb_c0134d4:model.conv_widths=[16, 24, 48, 128]' --set 'hyb_c0134d4:model.depth=4' \
  --run hyb_nodistill=$H --set 'hyb_nodistill:train.distill=null' \
  --run hyb_cp=$H --set "hyb_cp:data.copy_paste=$CP" \
  --set 'hyb_cp:data.rare_class_sampling={temperature: 0.01}' \
  --run hyb_small=$H --set 'hyb_small:model.embed_dim=160' --set 'hyb_small:model.num_heads=5' \
  --set 'hyb_small:model.mlp_ratio=3' \
  --run vit=$V --set 'vit:data.pipeline=device' --set 'vit:train.num_workers=0' \
  --set 'vit:train.distill={teacher: training/reference/heldout_lraspp_mbv3/model.safetensors, weight: 1.0, temperature: 2.0}' \
  --run all_hyb=$H --set 'all_hyb:data.train_split=all' \
  --run all_hyb_small=$H --set 'all_hyb_small:data.train_split=all' \
  --set 'all_hyb_small:model.embed_dim=160' --set 'all_hyb_small:model.num_heads=5' \
  --set 'all_hyb_small:model.mlp_ratio=3' \
  --final all_hyb all_hyb_small "$@"
