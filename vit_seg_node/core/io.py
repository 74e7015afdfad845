"""Atomic file writing: every report, card and model file goes through here.

A reader (or a crash) never sees a half-written file: the text goes to a temporary file in the
same directory, is flushed to disk and renamed over the target.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
import tempfile
from typing import Any, Union

from vit_seg_node.core.errors import UserError


def atomic_write_bytes(path: Union[str, os.PathLike], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parents created); return the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
    except OSError as exc:
        raise UserError(f'cannot write {path}: {exc.strerror or exc}') from None
    try:
        os.chmod(tmp, 0o644)
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: Union[str, os.PathLike], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode('utf-8'))


def finite(obj: Any) -> Any:
    """Return ``obj`` with every NaN or infinite float replaced by None (valid JSON)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def write_json(path: Union[str, os.PathLike], obj: Any) -> Path:
    """Write ``obj`` as indented, strictly valid JSON (non-finite numbers become null)."""
    return atomic_write_text(path, json.dumps(finite(obj), indent=2, allow_nan=False) + '\n')
