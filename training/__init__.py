"""Offline tools for vit_seg_node: data, models, training, evaluation, export (pure PyTorch + timm).

Nothing here imports ROS. ``training`` may use ``vit_seg_node.runtime`` (card, metrics,
processing); the reverse happens only inside the torch backend, lazily.
"""
