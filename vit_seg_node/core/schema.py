"""Checking a parsed YAML document field by field: types, ranges, lengths, finite numbers.

The model card and the ladder are each described by one function built from these checks, so
that every reader (node, CLI, benchmark, tune) refuses a bad file with the same one line, naming
the key: ``input.mean[1]: must be a finite number, got nan``. Booleans are never taken for
numbers (YAML reads ``yes`` as true), and a value shown in a message is shortened.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

from vit_seg_node.core.errors import UserError

SHOWN_CHARS = 60   # the longest value a message repeats


class SchemaError(UserError):
    """A document does not follow its schema; the message names the key."""


def shorten(value: Any, limit: int = SHOWN_CHARS) -> str:
    """Return ``repr(value)``, cut to ``limit`` characters with the length noted."""
    text = repr(value)
    return text if len(text) <= limit else f'{text[:limit]}... ({len(text)} characters)'


def _fail(key: str, what: str, value: Any) -> SchemaError:
    return SchemaError(f'{key}: must be {what}, got {shorten(value)}')


def is_int(value: Any) -> bool:
    """Return whether ``value`` is an integer (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def integer(value: Any, key: str, low: int, high: int) -> int:
    """Return ``value`` if it is an integer in ``low..high``."""
    if not is_int(value) or not low <= value <= high:
        raise _fail(key, f'an integer in {low}..{high}', value)
    return int(value)


def number(value: Any, key: str, low: float = -math.inf, high: float = math.inf,
           low_open: bool = False) -> float:
    """Return ``value`` as float if it is a finite number in [low, high] (``(low`` if open)."""
    ok = (is_int(value) or isinstance(value, float)) and math.isfinite(value) and \
        (low < value if low_open else low <= value) and value <= high
    if not ok:
        if high == math.inf:
            rng = '' if low == -math.inf else f' {">" if low_open else ">="} {low:g}'
        else:
            rng = f' in {"(" if low_open else "["}{low:g}, {high:g}]'
        raise _fail(key, f'a finite number{rng}', value)
    return float(value)


def boolean(value: Any, key: str) -> bool:
    """Return ``value`` if it is true or false."""
    if not isinstance(value, bool):
        raise _fail(key, 'true or false', value)
    return value


def text(value: Any, key: str, max_len: int = 256, choices: Sequence[str] = (),
         empty: bool = True) -> str:
    """Return ``value`` if it is a string of at most ``max_len`` characters (one of choices)."""
    if choices:
        if not isinstance(value, str) or value not in choices:
            raise _fail(key, f'one of {list(choices)}', value)
        return value
    if not isinstance(value, str) or len(value) > max_len or (not empty and not value):
        what = 'a' if empty else 'a non-empty'
        raise _fail(key, f'{what} string of at most {max_len} characters', value)
    return value


def mapping(value: Any, key: str, allowed: Optional[Sequence[str]] = None) -> dict:
    """Return ``value`` if it is a mapping with string keys (only ``allowed`` ones if given)."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise _fail(key, 'a mapping', value)
    if allowed is not None:
        unknown = sorted(set(value) - set(allowed))
        if unknown:
            prefix = f'{key}.' if key else ''
            raise SchemaError(f'{prefix}{shorten(unknown[0])[1:-1]}: unknown key (known: '
                              f'{", ".join(allowed)})')
    return value


def sequence(value: Any, key: str, min_len: int, max_len: int) -> list:
    """Return ``value`` if it is a list of ``min_len..max_len`` items."""
    if not isinstance(value, list):
        raise _fail(key, f'a list of {min_len}..{max_len} items', value)
    if not min_len <= len(value) <= max_len:
        raise SchemaError(f'{key}: must have {min_len}..{max_len} items, has {len(value)}')
    return value


def required(doc: dict, name: str, prefix: str = '') -> Any:
    """Return ``doc[name]``; SchemaError naming the key when it is missing."""
    if name not in doc:
        raise SchemaError(f'{prefix}{name}: missing')
    return doc[name]
