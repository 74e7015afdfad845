"""A registry of named model variants, timm-style: ``create_model(name, **overrides)``."""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its function name."""
    if fn.__name__ in _REGISTRY:
        raise ValueError(f'model {fn.__name__!r} registered twice')
    _REGISTRY[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Return the registered variant names."""
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the variant ``name``; keyword arguments override its defaults."""
    if name not in _REGISTRY:
        raise KeyError(f'unknown model {name!r}; known: {", ".join(list_models())}')
    return _REGISTRY[name](**kwargs)
