"""The training loop: AdamW, warm-up + cosine/poly, weighted CE, clipping, AMP, exact resume, DDP.

Exact resume: the data order of epoch ``e`` is a permutation drawn from ``(seed, e)``, every
augmentation from ``(seed, e, index)``, the global torch RNG (drop-path) is checkpointed, and the
DataLoader has its own generator. A run killed at any point and resumed from its last checkpoint
replays the same steps and ends with bit-identical weights (on the same device and thread count).
Multi-GPU: launch with ``torchrun --nproc_per_node N -m vit_seg_train.train --config CFG``.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
import shlex
import sys
import time
from typing import Any, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from vit_seg_train.config import build_model, card_from_config, load_config, save_config
from vit_seg_node.core.datasets import (class_frequencies, median_frequency_weights,
                                        SegmentationDataset)
from vit_seg_train.evaluate import evaluate_model
from vit_seg_train.fakequant import plain_state_dict
from vit_seg_train.transforms import TrainTransform
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import atomic_write_text

LAST = 'last.pt'
BEST = 'best.safetensors'


def _dist_info() -> tuple[int, int, int]:
    world = int(os.environ.get('WORLD_SIZE', '1'))
    rank = int(os.environ.get('RANK', '0'))
    local = int(os.environ.get('LOCAL_RANK', '0'))
    return world, rank, local


def lr_lambda(cfg_train: dict[str, Any], total_steps: int):
    """Return step -> LR multiplier: linear warm-up then cosine or poly(0.9) decay."""
    warm = int(cfg_train['warmup_steps'])
    floor = float(cfg_train['min_lr']) / float(cfg_train['lr'])
    kind = cfg_train['schedule']
    if kind not in ('cosine', 'poly'):
        raise UserError(f'unknown schedule {kind!r} (cosine or poly)')

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        decay = 0.5 * (1 + math.cos(math.pi * t)) if kind == 'cosine' else (1 - t) ** 0.9
        return floor + (1 - floor) * decay
    return f


def epoch_batches(n: int, batch: int, seed: int, epoch: int, world: int = 1,
                  rank: int = 0) -> list[list[tuple[int, int]]]:
    """Return this rank's batches of ``(epoch, index)`` keys for one epoch (drop last)."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    per_step = batch * world
    steps = n // per_step
    out = []
    for s in range(steps):
        lo = s * per_step + rank * batch
        out.append([(epoch, i) for i in perm[lo:lo + batch]])
    return out


def set_train_mode(model: nn.Module, freeze_bn: bool) -> None:
    """Train mode; with ``freeze_bn`` BatchNorm keeps its running statistics (fine-tuning)."""
    model.train()
    if freeze_bn:
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _collate(items):
    xs, ys = zip(*items)
    return torch.stack(xs), torch.stack(ys)


class CsvLog:
    """Append-only CSV of scalars; on resume rows past the checkpoint's step are dropped."""

    FIELDS = ['step', 'epoch', 'loss', 'lr', 'val_miou', 'val_pixel_acc', 'seconds']

    def __init__(self, path: Path, resume_step: Optional[int]) -> None:
        self.path = path
        rows = []
        if resume_step is not None and path.exists():
            with open(path, newline='') as f:
                rows = [r for r in csv.DictReader(f) if int(r['step']) <= resume_step]
        with open(path, 'w', newline='') as f:
            w = csv.DictWriter(f, self.FIELDS)
            w.writeheader()
            w.writerows(rows)

    def write(self, **row: Any) -> None:
        """Append one row."""
        with open(self.path, 'a', newline='') as f:
            csv.DictWriter(f, self.FIELDS).writerow({k: row.get(k, '') for k in self.FIELDS})


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (tmp file + rename): a kill never leaves a torn file."""
    tmp = path.with_name(path.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)


def resolve(cfg: dict[str, Any], train_set: SegmentationDataset) -> dict[str, Any]:
    """Fill in values computed from the data (class weights) so the config is self-contained."""
    d = cfg['data']
    if isinstance(d['class_weights'], str):
        if d['class_weights'] == 'median_frequency':
            freq = class_frequencies([train_set.load(i)[1] for i in range(len(train_set))],
                                     len(d['classes']))
            d['class_weights'] = [round(float(w), 6) for w in
                                  median_frequency_weights(freq, d['max_class_weight'])]
        elif d['class_weights'] == 'none':
            d['class_weights'] = [1.0] * len(d['classes'])
        else:
            raise UserError(f'unknown class_weights {d["class_weights"]!r}')
    cfg['resolved'] = True
    return cfg


def train(config_path: str, resume: bool = False, overrides: Optional[dict] = None) -> dict:
    """Train from a config file; return the final summary (best val mIoU, steps, seconds)."""
    cfg = load_config(config_path)
    if overrides:
        from vit_seg_train.config import _merge
        cfg = _merge(cfg, overrides)
    world, rank, local = _dist_info()
    if world > 1:
        dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
    device = f'cuda:{local}' if torch.cuda.is_available() else 'cpu'
    if device.startswith('cuda'):
        torch.cuda.set_device(local)
    tc = cfg['train']
    if tc['threads']:
        torch.set_num_threads(int(tc['threads']))
    out = Path(cfg['output_dir'])
    last = out / LAST
    if last.exists() and not resume:
        raise UserError(f'{last} exists: pass --resume to continue it, or choose another '
                        f'output_dir')
    if resume and last.exists():
        # The resolved config saved beside the checkpoint wins: rebuild from it, not from flags.
        saved = load_config(out / 'config.yaml')
        saved['train']['epochs'] = cfg['train']['epochs']  # allow extending a finished run
        cfg = saved
        tc = cfg['train']
    out.mkdir(parents=True, exist_ok=True)

    d = cfg['data']
    card = card_from_config(cfg, name=Path(cfg['output_dir']).name)
    transform = TrainTransform(crop=d.get('crop') or cfg['model']['img_size'], mean=d['mean'],
                               std=d['std'], ignore_index=d['ignore_index'], seed=cfg['seed'],
                               scale_range=d['scale_range'], jitter=d['jitter'],
                               stretch=d.get('stretch', False), size=cfg['model']['img_size'])
    train_set = SegmentationDataset(d['root'], d['train_split'], transform, cache=d['cache'])
    val_set = SegmentationDataset(d['root'], d['val_split'], None, cache=d['cache'])
    if not cfg.get('resolved'):
        cfg = resolve(cfg, train_set)
    cfg['command'] = ' '.join(shlex.quote(a) for a in sys.argv)
    if rank == 0:
        save_config(cfg, out / 'config.yaml')

    torch.manual_seed(cfg['seed'])
    model = build_model(cfg)
    if tc.get('init_from') and not (resume and last.exists()):
        from vit_seg_train.checkpoint import load_state_dict

        model.load_state_dict(load_state_dict(tc['init_from']), strict=True)
    if tc.get('fake_quant'):
        # decoder adaptation / QAT under INT8 fake quantization (vit_seg_train.fakequant); the
        # scales
        # are calibrated once here, or come back with the model state on resume
        from vit_seg_train.fakequant import calibrate_on_split, quantize_model

        fq = tc['fake_quant']
        quantize_model(model, fq.get('plan'), calibrator=fq.get('calibrator', 'minmax'))
        if not (resume and last.exists()):
            calibrate_on_split(model, d['root'], d['train_split'], card, int(fq.get('frames', 16)))
    model = model.to(device)
    if tc.get('trainable', 'all') == 'decoder':    # decoder adaptation: the encoder is frozen
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    elif tc.get('trainable', 'all') != 'all':
        raise UserError(f'train.trainable must be all or decoder, got {tc["trainable"]!r}')
    teacher = build_teacher(cfg, device) if tc.get('distill') else None
    steps_per_epoch = len(train_set) // (tc['batch_size'] * world)
    if steps_per_epoch == 0:
        raise UserError(f'{len(train_set)} training frames cannot fill one batch of '
                        f'{tc["batch_size"] * world}')
    total = tc['epochs'] * steps_per_epoch
    if tc['max_steps']:
        total = min(total, int(tc['max_steps']))
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or n.endswith(('pos_embed', 'cls_token', 'cls_emb')) else
         decay).append(p)
    opt = torch.optim.AdamW([{'params': decay, 'weight_decay': tc['weight_decay']},
                             {'params': no_decay, 'weight_decay': 0.0}], lr=tc['lr'])
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(tc, total))
    weights = torch.tensor(d['class_weights'], dtype=torch.float32, device=device)
    step, best, t_used = 0, -1.0, 0.0
    if resume and last.exists():
        ck = torch.load(last, map_location='cpu', weights_only=True)
        model.load_state_dict(ck['model'])
        opt.load_state_dict(ck['optimizer'])
        sched.load_state_dict(ck['scheduler'])
        torch.set_rng_state(ck['rng_cpu'])
        if device.startswith('cuda') and 'rng_cuda' in ck:
            torch.cuda.set_rng_state(ck['rng_cuda'])
        step, best, t_used = int(ck['step']), float(ck['best']), float(ck['seconds'])
    log = CsvLog(out / 'metrics.csv', step if resume else None) if rank == 0 else None
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[local] if device != 'cpu' else
                                              None) if world > 1 else model
    use_amp = tc['amp'] == 'bf16' or (tc['amp'] == 'auto' and device.startswith('cuda'))
    amp_dtype = torch.bfloat16 if use_amp else None
    loader_gen = torch.Generator().manual_seed(cfg['seed'])

    def state() -> dict[str, Any]:
        s = {'model': model.state_dict(), 'optimizer': opt.state_dict(),
             'scheduler': sched.state_dict(), 'rng_cpu': torch.get_rng_state(), 'step': step,
             'best': best, 'seconds': t_used + time.time() - t_start}
        if device.startswith('cuda'):
            s['rng_cuda'] = torch.cuda.get_rng_state()
        return s

    def batches(epoch: int, skip: int) -> Iterator:
        keys = epoch_batches(len(train_set), tc['batch_size'], cfg['seed'], epoch, world, rank)
        return iter(torch.utils.data.DataLoader(
            train_set, batch_sampler=keys[skip:], num_workers=tc['num_workers'],
            collate_fn=_collate, generator=loader_gen, pin_memory=device != 'cpu',
            persistent_workers=False))

    t_start = time.time()
    progress = _progress(total, step, disable=rank != 0)
    while step < total:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        set_train_mode(model, tc.get('freeze_bn', False))
        for x, y in batches(epoch, in_epoch):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device_type=device.split(':')[0], dtype=amp_dtype or torch.float32,
                                enabled=use_amp):
                logits = ddp(x).float()
            loss = F.cross_entropy(logits, y, weight=weights, ignore_index=d['ignore_index'])
            if teacher is not None:
                with torch.no_grad():
                    target = teacher(x).float()
                loss = loss + distillation_loss(logits, target, tc['distill'])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tc['grad_clip']:
                nn.utils.clip_grad_norm_(model.parameters(), tc['grad_clip'])
            opt.step()
            sched.step()
            step += 1
            progress.update(1)
            if rank == 0 and (step % tc['log_every'] == 0 or step == total):
                log.write(step=step, epoch=epoch, loss=f'{loss.item():.5f}',
                          lr=f'{sched.get_last_lr()[0]:.3e}',
                          seconds=f'{t_used + time.time() - t_start:.1f}')
                progress.set_postfix(loss=f'{loss.item():.3f}', epoch=epoch)
            epoch_end = step % steps_per_epoch == 0
            if epoch_end and ((epoch + 1) % tc['eval_every'] == 0 or step == total):
                if rank == 0:
                    rep = evaluate_model(model, val_set, card, device, amp_dtype=amp_dtype)
                    log.write(step=step, epoch=epoch, val_miou=f'{rep["miou"]:.5f}',
                              val_pixel_acc=f'{rep["pixel_acc"]:.5f}',
                              seconds=f'{t_used + time.time() - t_start:.1f}')
                    progress.write(f'epoch {epoch} step {step}: val mIoU {rep["miou"]:.4f}')
                    if rep['miou'] > best:
                        best = rep['miou']
                        save_file({k: v.detach().cpu().contiguous() for k, v in
                                   plain_state_dict(model).items()}, str(out / BEST))
                        atomic_write_text(out / 'best.json', json.dumps(
                            {'step': step, 'epoch': epoch, **rep}, indent=2))
                    set_train_mode(model, tc.get('freeze_bn', False))
            if rank == 0 and (step % tc['checkpoint_every'] == 0 or epoch_end or step == total):
                save_checkpoint(last, state())
            if world > 1 and epoch_end:
                dist.barrier()
            if step >= total:
                break
    progress.close()
    summary = {'best_val_miou': best, 'steps': step, 'seconds': t_used + time.time() - t_start,
               'device': torch.cuda.get_device_name(local) if device != 'cpu' else 'cpu'}
    if rank == 0:
        atomic_write_text(out / 'summary.json', json.dumps(summary, indent=2))
    if world > 1:
        dist.destroy_process_group()
    return summary


def build_teacher(cfg: dict[str, Any], device: str) -> nn.Module:
    """Return the frozen unreduced model that a reduced model is distilled from."""
    from vit_seg_train.checkpoint import load_state_dict

    dc = cfg['train']['distill']
    src = dc.get('teacher') or cfg['train'].get('init_from')
    if not src:
        raise UserError('train.distill needs distill.teacher or train.init_from')
    tcfg = json.loads(json.dumps(cfg))
    tcfg['model']['reduction'] = {'policy': 'none'}
    teacher = build_model(tcfg)
    teacher.load_state_dict(load_state_dict(src), strict=True)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.to(device).eval()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, dc: dict) -> torch.Tensor:
    """Return ``weight * T^2 * KL(teacher || student)`` per pixel (Hinton et al., 2015)."""
    t = float(dc.get('temperature', 1.0))
    kl = F.kl_div(F.log_softmax(student / t, 1), F.log_softmax(teacher / t, 1), reduction='none',
                  log_target=True).sum(1).mean()
    return float(dc.get('weight', 1.0)) * t * t * kl


def _progress(total: int, initial: int, disable: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=disable, dynamic_ncols=True,
                mininterval=5.0, file=sys.stderr)


def main(argv: Optional[list[str]] = None) -> int:
    """Entry point for ``python -m vit_seg_train.train`` (used by torchrun)."""
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--config', required=True)
    ap.add_argument('--resume', action='store_true')
    args = ap.parse_args(argv)
    try:
        print(json.dumps(train(args.config, args.resume)))
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    np.seterr(all='ignore')
    sys.exit(main())
