"""Write a seeded, untrained model of a training config as a checkpoint (latency work only).

    python -m experiments.untrained CONFIG.yaml OUT_DIR

Latency does not depend on the weights (token-reduction shapes are static), so a design can be
timed before it is trained: OUT_DIR gets ``config.yaml`` and ``model.safetensors``.
"""

from __future__ import annotations

import sys

import torch
from safetensors.torch import save_file

from vit_seg_train.config import build_model, load_config, save_config


def main(argv: list[str] | None = None) -> int:
    """Build the config's model with seed 0 and write it as a checkpoint."""
    config, out = (argv if argv is not None else sys.argv[1:])[:2]
    cfg = load_config(config)
    torch.manual_seed(0)
    model = build_model(cfg)
    cfg['output_dir'] = out
    save_config(cfg, f'{out}/config.yaml')
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              f'{out}/model.safetensors')
    return 0


if __name__ == '__main__':
    sys.exit(main())
