"""Segmentation models: registry of named variants, stems, decoders, the segmenter, peers."""

from training.models.registry import create_model, list_models, register_model  # noqa: F401
from training.models import peers, variants  # noqa: F401  (registers the named variants)
