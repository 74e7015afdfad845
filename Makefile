# Two commands on a fresh machine:  `make demo` (the main job)  and  `make test` (the test suite).
# Both first run `make setup`: an idempotent step that creates .venv in the repo (reusing a valid
# one whose requirements have not changed) and installs everything, this package included.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
REQS   := requirements/runtime.txt requirements/training.txt requirements/test.txt
STAMP  := $(VENV)/.setup-stamp
DEMO_BAG ?= vit_seg_node/data/bags/camvid_val_sample
DEMO_OUT ?= runs/demo

.PHONY: setup demo test lint bench bench-val models vit-models reference tune clean-venv

setup:
	@set -e; \
	want="$$(cat $(REQS) requirements/ros.txt setup.py | sha256sum | cut -c1-16)-ros:$${ROS_DISTRO:-wheels}"; \
	if [ -x $(PY) ] && $(PY) -c 'import sys' 2>/dev/null && [ "$$(cat $(STAMP) 2>/dev/null)" = "$$want" ]; then \
	  echo "setup: $(VENV) is up to date"; exit 0; fi; \
	if ! { [ -x $(PY) ] && $(PY) -c 'import sys' 2>/dev/null; }; then \
	  rm -rf $(VENV); \
	  if [ -n "$${ROS_DISTRO:-}" ]; then $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else $(PYTHON) -m venv $(VENV); fi; fi; \
	$(PY) -m pip install -q --upgrade pip setuptools wheel; \
	ros=requirements/ros.txt; [ -n "$${ROS_DISTRO:-}" ] && { echo "setup: ROS_DISTRO=$$ROS_DISTRO, using the sourced rclpy"; ros=; }; \
	$(PY) -m pip install -q $(addprefix -r ,$(REQS)) $${ros:+-r $$ros}; \
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .; \
	test -x $(VENV)/bin/vit-seg && test -x $(VENV)/bin/vit_seg_node; \
	echo "$$want" > $(STAMP); echo "setup: $(VENV) ready"

demo: setup
	$(VENV)/bin/vit-seg demo --out $(DEMO_OUT)

test: setup
	$(PY) -m pytest -q test

lint: setup
	$(PY) -m flake8 vit_seg_node training test launch setup.py

# The reference checkpoints are kept in git history, not in the tree (see .gitignore): restore them.
# COMMIT:PATH pairs
REF_FILES  := d5c1ef3:training/reference/camvid_vit_tiny/model.safetensors \
              d5c1ef3:training/reference/camvid_vit_tiny_neighbor/model.safetensors \
              d5c1ef3:training/reference/camvid_vit_tiny/stage1_model.safetensors \
              3dc6818:training/reference/heldout_vit_tiny_cpu_crops/model.safetensors \
              d5bf706:training/reference/heldout_segformer_b0/model.safetensors \
              9c68a47:training/reference/heldout_hybrid_tiny_cpu/model.safetensors \
              a2d2017:training/reference/heldout_hybrid_c0134d4_cpu/model.safetensors \
              0f85469:training/reference/heldout_hybrid_c0136d4w_cpu/model.safetensors \
              d0a2cb3:training/reference/heldout_hybrid_c0136d4w_e150_cpu/model.safetensors \
              cd3e86a:training/reference/heldout_hybrid_c0136d4w_e150_adapted/model.safetensors \
              ebdb23b:training/reference/heldout_hybrid_c0136d4w_e150_fine/model.safetensors \
              f442e81:training/reference/heldout_hybrid_c0136d4w_e150_branch/model.safetensors \
              f442e81:training/reference/heldout_lraspp_mbv3_s1/model.safetensors \
              fb4eca7:training/reference/heldout_hybrid_c0136d4w_e150_narrow/model.safetensors \
              5a0d6dc:training/reference/heldout_hybrid_c0136d4w_e150_s1_narrow/model.safetensors \
              8ccb337:training/reference/camvid_hybrid_c0136d4w_base/model.safetensors \
              8ccb337:training/reference/camvid_hybrid_c0136d4w/model.safetensors \
              26e3a68:training/reference/camvid_hybrid_c0136d4w_fine/model.safetensors
reference:
	@for r in $(REF_FILES); do f=$${r#*:}; [ -s $$f ] || git show $$r > $$f; done; \
	  echo "reference checkpoints in training/reference/ (from git history)"

# The benchmark of record: the protocol reference's variants scored on the held-out drive.
bench: setup reference
	$(PY) -m pip install -q -r requirements/peers.txt
	$(VENV)/bin/vit-seg bench --config training/configs/bench_heldout.yaml --out docs/results/heldout_bench

# The grid of the shipped models' reference (trained on train + val), scored on val (seen).
bench-val: setup reference
	$(VENV)/bin/vit-seg bench --config training/configs/bench_camvid.yaml --out docs/results

# The shipped models (`vit-seg models`): the hybrid trained on every labelled frame (SHIP_REF:
# training/configs/ship/hybrid_c0136d4w_all.yaml, then its decoder by hybrid_c0136d4w_all_adapt.yaml;
# the stride-4 refinement, camvid_hybrid_c0136d4w_fine, is not shipped), each scored on val -- drive
# 0016E5, whose frames it was trained on: a check of the export, not of generalization (that is
# the held-out protocol's). default.onnx FP32; mid.onnx the mixed INT8 plan; fast.onnx neighbour
# merge w0.8 r0.4 + the plan. All three arg-max at 1/2 of the input (a ladder's rungs share one mask size).
# Reduction and plan are the ones selected on the protocol
# (docs/results/hybrid_fast_form_c0136d4w_e150/). Needs the dataset.
CAMVID ?= ../shared/datasets/camvid
SHIP_REF := training/reference/camvid_hybrid_c0136d4w
SHIP_PLAN := docs/results/hybrid_fast_form_c0136d4w_e150/heldout_hybrid_c0136d4w_e150_cpu.sensitivity.json
SHIP_NB := {policy: neighbor, window_first: 0.8, ratio: 0.4, locations: [0, 2]}
M := vit_seg_node/data/models
W := runs/models
EXPORT := $(VENV)/bin/vit-seg export --checkpoint $(SHIP_REF)/model.safetensors --frames $(CAMVID) \
  --split val --num-frames 4
QUANTIZE := $(VENV)/bin/vit-seg quantize --format dynamic --plan $(SHIP_PLAN) --calib $(CAMVID) --split train
STRIDE2 := $(VENV)/bin/vit-seg label-stride --stride 2 --frames $(CAMVID) --split val
RECORD := $(VENV)/bin/vit-seg eval --data $(CAMVID) --split val --record
models: setup reference
	$(EXPORT) --out $(W)/default_fp32.onnx --name camvid_hybrid
	$(STRIDE2) --model $(W)/default_fp32.onnx --out $(M)/default.onnx
	$(RECORD) --model $(M)/default.onnx
	$(EXPORT) --out $(W)/mid_fp32.onnx --name camvid_hybrid_mixed
	$(QUANTIZE) --model $(W)/mid_fp32.onnx --out $(W)/mid_mixed.onnx
	$(STRIDE2) --model $(W)/mid_mixed.onnx --out $(M)/mid.onnx
	$(RECORD) --model $(M)/mid.onnx
	$(EXPORT) --out $(W)/fast_fp32.onnx --name camvid_hybrid_fast --reduction '$(SHIP_NB)'
	$(QUANTIZE) --model $(W)/fast_fp32.onnx --out $(W)/fast_mixed.onnx
	$(STRIDE2) --model $(W)/fast_mixed.onnx --out $(M)/fast.onnx
	$(RECORD) --model $(M)/fast.onnx

# The plain ViT's FP32 and fast models (camvid_vit_tiny, camvid_vit_tiny_neighbor: the reduction
# w0.7 r0.3 is in its reference's config, the precision plan docs/results/quant/), which earlier
# figures in docs/ name; rebuilt from their references into runs/models/vit/. Needs the dataset.
VIT := runs/models/vit
vit-models: setup reference
	$(VENV)/bin/vit-seg export --checkpoint training/reference/camvid_vit_tiny/model.safetensors \
	  --out $(VIT)/default.onnx --frames $(CAMVID) --split val --num-frames 4 --name camvid_vit_tiny
	$(VENV)/bin/vit-seg export --checkpoint training/reference/camvid_vit_tiny_neighbor/model.safetensors \
	  --out $(VIT)/fast_fp32.onnx --frames $(CAMVID) --split val --num-frames 4 \
	  --name camvid_vit_tiny_neighbor
	$(VENV)/bin/vit-seg quantize --model $(VIT)/fast_fp32.onnx --format dynamic \
	  --plan docs/results/quant/sensitivity.json --calib $(CAMVID) --out $(VIT)/fast.onnx

# The fast model tuned on this machine (plan and threads chosen beside a busy process, cached in
# runs/tuned/<key>/): point the node at it with model_path. Needs the dataset.
tune: setup reference
	$(EXPORT) --out $(W)/fast_fp32.onnx --name camvid_hybrid_fast --reduction '$(SHIP_NB)'
	$(VENV)/bin/vit-seg tune --model $(W)/fast_fp32.onnx --data $(CAMVID) --out runs/tuned

clean-venv:
	rm -rf $(VENV)
