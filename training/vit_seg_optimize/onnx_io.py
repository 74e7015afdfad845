"""Reading ONNX files for graph work: the one place a model file is parsed with ``onnx``."""

from __future__ import annotations

import os
from pathlib import Path

from vit_seg_node.core.errors import UserError


def load_onnx(path: str | os.PathLike, weights: bool = True):
    """Return the ``onnx.ModelProto`` of ``path``; a missing or unparsable file is a UserError.

    ``weights=False`` skips external weight files (enough to read the graph's structure).
    """
    import onnx

    p = Path(path)
    if not p.is_file():
        raise UserError(f'ONNX model not found: {p}')
    try:
        return onnx.load(str(p), load_external_data=weights)
    except Exception as exc:   # protobuf's DecodeError and friends
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f'cannot read ONNX model {p}: {reason}') from None
