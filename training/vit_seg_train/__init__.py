"""vit_seg_train: PyTorch training of segmentation ViTs (timm), token reduction, fake quantization.

Depends on ``vit_seg_node.core`` only; registers the ``torch`` backend and the ``train``
subcommand of ``vit-seg`` through entry points.
"""
