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

.PHONY: setup demo test lint bench bench-val models reference tune clean-venv

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
              d0a2cb3:training/reference/heldout_hybrid_c0136d4w_e150_cpu/model.safetensors
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

# The shipped fast model: the fine-tuned neighbour-merge checkpoint, exported, quantized with the
# allocated plan, scored on CamVid val (the score goes into its card). Needs the dataset.
CAMVID ?= ../shared/datasets/camvid
NB_REF := training/reference/camvid_vit_tiny_neighbor
models: setup reference
	$(VENV)/bin/vit-seg export --checkpoint $(NB_REF)/model.safetensors --out runs/models/fast_fp32.onnx \
	  --frames $(CAMVID) --split val --num-frames 4 --name camvid_vit_tiny_neighbor --metrics $(NB_REF)/val_eval.json
	$(VENV)/bin/vit-seg quantize --model runs/models/fast_fp32.onnx --format dynamic \
	  --plan docs/results/quant/sensitivity.json --calib $(CAMVID) --out vit_seg_node/data/models/fast.onnx
	$(VENV)/bin/vit-seg eval --model vit_seg_node/data/models/fast.onnx --data $(CAMVID) --split val --record
	$(VENV)/bin/vit-seg export --checkpoint training/reference/camvid_vit_tiny/model.safetensors \
	  --out runs/models/mid_fp32.onnx --frames $(CAMVID) --split val --num-frames 4 \
	  --name camvid_vit_tiny_nb_w06r025 --reduction '{policy: neighbor, window_first: 0.6, ratio: 0.25, locations: [1, 3, 6]}'
	$(VENV)/bin/vit-seg quantize --model runs/models/mid_fp32.onnx --format dynamic \
	  --plan docs/results/quant/sensitivity.json --calib $(CAMVID) --split train --out vit_seg_node/data/models/mid.onnx
	$(VENV)/bin/vit-seg eval --model vit_seg_node/data/models/mid.onnx --data $(CAMVID) --split val --record

# The fast model tuned on this machine (plan and threads chosen beside a busy process, cached in
# runs/tuned/<key>/): point the node at it with model_path. Needs the dataset.
tune: setup reference
	$(VENV)/bin/vit-seg export --checkpoint $(NB_REF)/model.safetensors --out runs/models/fast_fp32.onnx \
	  --frames $(CAMVID) --split heldout --num-frames 4 --name camvid_vit_tiny_neighbor
	$(VENV)/bin/vit-seg tune --model runs/models/fast_fp32.onnx --data $(CAMVID) --out runs/tuned

clean-venv:
	rm -rf $(VENV)
