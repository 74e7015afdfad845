"""vit_seg_optimize: ONNX export, quantization (dynamic, static INT8, Q/DQ, FP16), the benchmark.

Depends on ``vit_seg_train`` and ``vit_seg_node.core``; registers the ``export``, ``quantize``,
``sensitivity`` and ``bench`` subcommands of ``vit-seg``.
"""
