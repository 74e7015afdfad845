"""Segmentation models: registry of named variants, stems, decoders, the segmenter, peers."""

from vit_seg_train.models.registry import create_model, list_models, register_model  # noqa: F401
from vit_seg_train.models import peers, variants  # noqa: F401  (registers the named variants)
