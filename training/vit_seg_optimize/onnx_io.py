"""Reading ONNX files for graph work: the one place a model file is parsed with ``onnx``."""

from __future__ import annotations

import os
from pathlib import Path
import tempfile
from typing import Callable

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


def write_checked(model, out_path: str | os.PathLike, card, check: Callable[[Path], dict],
                  check_key: str, command: str) -> None:
    """Write an edited graph and its ``card`` to ``out_path`` only if ``check`` passes.

    The graph is saved in a temporary folder beside the target, ``check(path)`` runs it (and
    raises UserError on a failure); its report goes in ``card.extra[check_key]``; then the
    model and its card are moved in place atomically. Nothing is left behind on a failure.
    """
    import onnx

    from vit_seg_node.core.card import card_path_for, save_card
    from vit_seg_node.core.io import copy_atomic

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        tmp_model = Path(tmp) / out.name
        onnx.save(model, str(tmp_model))
        card.extra = {**card.extra, check_key: check(tmp_model)}
        card.command = command or card.command
        save_card(card, tmp_model)
        copy_atomic(tmp_model, out)
        copy_atomic(card_path_for(tmp_model), card_path_for(out))
