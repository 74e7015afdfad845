"""``vit-seg train``: registered into ``vit-seg`` through the ``vit_seg.commands`` entry points."""

from __future__ import annotations

import argparse
import json


def cmd_train(a: argparse.Namespace) -> int:
    """Train from a config (resumable)."""
    from vit_seg_train.train import train

    print(json.dumps(train(a.config, resume=a.resume)))
    return 0


def register(sub) -> None:
    """Add the training subcommands to ``vit-seg``'s subparsers."""
    p = sub.add_parser('train', help='train a model from a YAML config')
    p.add_argument('--config', required=True)
    p.add_argument('--resume', action='store_true', help='continue from output_dir/last.pt')
    p.set_defaults(func=cmd_train)
