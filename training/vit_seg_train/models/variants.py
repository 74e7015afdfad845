"""Named model variants. Each builds its encoder through ``timm.create_model``.

``pretrained=True`` loads timm's ImageNet weights (needs network access to the hub); the
position embeddings are resampled to ``img_size`` by timm. With ``stem='conv'`` the stem is
new, so only the transformer weights are loaded (non-strict).
"""

from __future__ import annotations

from typing import Any, Sequence

import timm

from vit_seg_train.models.decoders import DECODERS
from vit_seg_train.models.hybrid import build_hybrid, HybridSegmenter
from vit_seg_train.models.registry import register_model
from vit_seg_train.models.segmenter import Segmenter
from vit_seg_train.models.stems import STEMS


def build_segmenter(timm_name: str, num_classes: int, img_size: Sequence[int],
                    stem: str = 'conv', decoder: str = 'mask_transformer',
                    decoder_args: dict[str, Any] | None = None, pretrained: bool = False,
                    drop_path_rate: float = 0.1, reduction: dict[str, Any] | None = None,
                    **encoder_args: Any) -> Segmenter:
    """Build a Segmenter from a timm ViT name, a stem, a decoder and a token reduction."""
    from vit_seg_train.reduction.wiring import attach_reduction

    if stem not in STEMS:
        raise KeyError(f'unknown stem {stem!r}; known: {sorted(STEMS)}')
    if decoder not in DECODERS:
        raise KeyError(f'unknown decoder {decoder!r}; known: {sorted(DECODERS)}')
    encoder = timm.create_model(
        timm_name, pretrained=pretrained, pretrained_strict=(stem == 'patch'),
        img_size=tuple(img_size), num_classes=0, global_pool='', embed_layer=STEMS[stem],
        drop_path_rate=drop_path_rate, **encoder_args)
    dec_args = {'drop_path_rate': 0.0, **(decoder_args or {})}
    head = DECODERS[decoder](embed_dim=encoder.embed_dim, num_classes=num_classes, **dec_args)
    return attach_reduction(Segmenter(encoder, head), reduction, tuple(img_size))


@register_model
def segvit_tiny(**kw: Any) -> Segmenter:
    """ViT-Ti/16 encoder (192-d, 12 blocks, 3 heads)."""
    kw.setdefault('decoder_args', {'d_model': 192, 'num_heads': 3, 'depth': 2})
    return build_segmenter('vit_tiny_patch16_224', **kw)


@register_model
def segvit_small(**kw: Any) -> Segmenter:
    """ViT-S/16 encoder (384-d, 12 blocks, 6 heads)."""
    kw.setdefault('decoder_args', {'d_model': 384, 'num_heads': 6, 'depth': 2})
    return build_segmenter('vit_small_patch16_224', **kw)


@register_model
def segvit_base(**kw: Any) -> Segmenter:
    """ViT-B/16 encoder (768-d, 12 blocks, 12 heads)."""
    kw.setdefault('decoder_args', {'d_model': 768, 'num_heads': 12, 'depth': 2})
    return build_segmenter('vit_base_patch16_224', **kw)


@register_model
def segvit_test(**kw: Any) -> Segmenter:
    """Build a tiny variant for unit tests (32-d, 4 blocks, 2 heads): runs in milliseconds."""
    kw.setdefault('decoder_args', {'d_model': 32, 'num_heads': 2, 'depth': 1})
    kw.setdefault('drop_path_rate', 0.0)
    return build_segmenter('vit_tiny_patch16_224', embed_dim=32, depth=4, num_heads=2, **kw)


@register_model
def segvit_hybrid_tiny(**kw: Any) -> HybridSegmenter:
    """Hybrid: inverted-residual stages to stride 16, 6 ViT blocks (192-d), the skip decoder."""
    return build_hybrid(**kw)


@register_model
def segvit_hybrid_test(**kw: Any) -> HybridSegmenter:
    """Build a tiny hybrid for unit tests (32-d, 2 blocks, narrow stages): runs in milliseconds."""
    kw.setdefault('decoder_args', {'d_model': 16, 'skip_dim': 8, 'depth': 1})
    kw.setdefault('drop_path_rate', 0.0)
    kw.setdefault('conv_widths', (8, 8, 16, 16))
    kw.setdefault('conv_depths', (0, 1, 1, 1))
    return build_hybrid(embed_dim=32, depth=2, num_heads=2, **kw)
