"""Atomic file writing: every report, card and model file goes through here.

A reader (or a crash) never sees a half-written file: the text goes to a temporary file in the
same directory, is flushed to disk and renamed over the target. Also the one file digest.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
import tempfile
from typing import Any, Union

import yaml

from vit_seg_node.core.errors import UserError
from vit_seg_node.core.schema import shorten


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


def copy_atomic(src: Union[str, os.PathLike], dst: Union[str, os.PathLike]) -> Path:
    """Copy a file so that ``dst`` is either the old file or the whole new one."""
    try:
        data = Path(src).read_bytes()
    except OSError as exc:
        raise UserError(f'cannot read {src}: {exc.strerror or exc}') from None
    return atomic_write_bytes(dst, data)


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


class _NoAliasLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors/aliases (no 'YAML bomb') and without duplicate keys.

    A key given twice is refused rather than silently taking the last value.
    """

    def compose_node(self, parent, index):
        """Refuse an alias; otherwise compose as usual."""
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, 'aliases (*name) are not allowed',
                                              self.peek_event().start_mark)
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        """Refuse a mapping that names a key twice; otherwise construct as usual."""
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if not isinstance(key, (str, int, float)):
                    continue
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f'duplicate key {shorten(key)}', key_node.start_mark)
                seen.add(key)
        return super().construct_mapping(node, deep)


def load_yaml(path: Union[str, os.PathLike], what: str = 'file',
              max_bytes: int = 1 << 20) -> Any:
    """Read a small YAML document safely: no code, no aliases, at most ``max_bytes``, UTF-8.

    Any problem is one UserError naming ``what`` and the path.
    """
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > max_bytes:
            raise UserError(f'{what} {p} is {size} bytes, more than {max_bytes}')
        text = p.read_bytes().decode('utf-8')
        return yaml.load(text, Loader=_NoAliasLoader)
    except UserError:
        raise
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else \
            str(exc).replace('\n', ' ')
        raise UserError(f'cannot read {what} {p}: {reason}') from None


def load_json(path: Union[str, os.PathLike], what: str = 'file') -> Any:
    """Read a JSON document; a missing, unreadable or malformed file is one UserError."""
    p = Path(path)
    try:
        return json.loads(p.read_bytes().decode('utf-8'))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise UserError(f'cannot read {what} {p}: {reason}') from None


def file_digest(path: Union[str, os.PathLike], length: int = 16) -> str:
    """Return the first ``length`` hex digits of the file's SHA-256."""
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()[:length]
