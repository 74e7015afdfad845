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
from typing import Any, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save

from vit_seg_train.config import build_model, card_from_config, load_config, save_config
from vit_seg_train.copy_paste import copy_paste_settings
from vit_seg_train.ema import WeightAverage
from vit_seg_node.core.datasets import (class_frequencies, median_frequency_weights,
                                        SegmentationDataset)
from vit_seg_train.evaluate import evaluate_model
from vit_seg_train.fakequant import plain_state_dict
from vit_seg_train.models.segmenter import Segmenter
from vit_seg_train.sampling import class_presence, rcs_order, rcs_probabilities
from vit_seg_train.transforms import TrainTransform
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import atomic_write_bytes, write_json

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
                  rank: int = 0, order: Optional[list[int]] = None
                  ) -> list[list[tuple[int, int]]]:
    """Return this rank's batches of ``(epoch, index)`` keys for one epoch (drop last).

    ``order``: the epoch's frame indices (rare-class sampling); default a seeded permutation.
    """
    if order is None:
        g = torch.Generator().manual_seed(seed * 100003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    perm = order
    per_step = batch * world
    steps = n // per_step
    out = []
    for s in range(steps):
        lo = s * per_step + rank * batch
        out.append([(epoch, i) for i in perm[lo:lo + batch]])
    return out


def _learns(name: str, trainable: str | Sequence[str]) -> bool:
    """Return whether the parameter or module ``name`` learns under ``train.trainable``."""
    if trainable == 'all':
        return True
    if trainable == 'decoder':
        return not name.startswith('encoder.')
    return any(name == p or name.startswith(p + '.') for p in trainable)


def freeze_parameters(model: nn.Module, trainable: str | Sequence[str]) -> None:
    """Apply ``train.trainable``: ``all``, ``decoder`` (encoder frozen) or a list of names.

    A list (e.g. ``[decoder.fine]``) trains only the modules it names, and
    ``set_train_mode`` keeps every other BatchNorm's statistics too: the rest of the
    model is exactly the checkpoint it came from.
    """
    named = isinstance(trainable, str)
    if not (trainable in ('all', 'decoder') if named else isinstance(trainable, (list, tuple))
            and trainable and all(isinstance(p, str) for p in trainable)):
        raise UserError(f'train.trainable must be all, decoder or a list of module names, '
                        f'got {trainable!r}')
    names = [n for n, _ in model.named_parameters()]
    if not named:
        unknown = [p for p in trainable if not any(_learns(n, [p]) for n in names)]
        if unknown:
            raise UserError(f'train.trainable names no parameter of the model: {unknown}')
    for name, p in model.named_parameters():
        if not _learns(name, trainable):
            p.requires_grad_(False)


def set_train_mode(model: nn.Module, freeze_bn: bool | str,
                   trainable: str | Sequence[str] = 'all') -> None:
    """Set train mode; ``freeze_bn`` keeps BatchNorm's running statistics (fine-tuning).

    ``true``: everywhere; ``encoder``: in the encoder only (a decoder with new layers on it).
    With ``trainable`` a list of names, BatchNorms outside them keep their statistics anyway.
    """
    model.train()
    everywhere = bool(freeze_bn) and freeze_bn != 'encoder'
    for name, m in model.named_modules():
        if not isinstance(m, nn.modules.batchnorm._BatchNorm):
            continue
        in_encoder = freeze_bn == 'encoder' and name.startswith('encoder.')
        outside_list = not isinstance(trainable, str) and not _learns(name, trainable)
        if everywhere or in_encoder or outside_list:
            m.eval()


def load_initial_weights(model: nn.Module, path: str, missing_ok: Sequence[str] = ()) -> None:
    """Load ``train.init_from``: every tensor must match, but new layers may be absent.

    ``missing_ok`` (``train.init_missing``): name prefixes, e.g. ``decoder.fine``, whose
    tensors the checkpoint need not have; they keep their initialisation.
    """
    from vit_seg_train.checkpoint import load_state_dict

    try:
        missing, unexpected = model.load_state_dict(load_state_dict(path), strict=False)
    except RuntimeError as exc:   # a tensor of another shape: torch's multi-line report
        raise UserError(f'train.init_from {path} does not fit the model: '
                        f'{str(exc).splitlines()[-1].strip()}') from None
    missing = [k for k in missing if not k.startswith(tuple(missing_ok))]
    if missing or unexpected:
        raise UserError(f'train.init_from {path} does not fit the model: missing '
                        f'{missing[:3]}{"..." if len(missing) > 3 else ""}, unexpected '
                        f'{unexpected[:3]}{"..." if len(unexpected) > 3 else ""}')


def _collate(items):
    xs, ys = zip(*items)
    return torch.stack(xs), torch.stack(ys)


class CsvLog:
    """Append-only CSV of scalars; on resume rows past the checkpoint's step are dropped."""

    FIELDS = ['step', 'epoch', 'loss', 'lr', 'val_miou', 'val_pixel_acc', 'seconds',
              'data_seconds', 'val_miou_live']

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
    rcs = d.get('rare_class_sampling')
    if rcs and 'class_probs' not in rcs:
        freq = class_frequencies([train_set.load(i)[1] for i in range(len(train_set))],
                                 len(d['classes']))
        try:
            probs = rcs_probabilities(freq, float(rcs.get('temperature', 0.01)))
        except ValueError as exc:
            raise UserError(f'data.rare_class_sampling: {exc}') from None
        rcs['class_probs'] = [round(float(v), 6) for v in probs]
    cfg['resolved'] = True
    return cfg


def load_run_config(config_path: str, resume: bool, overrides: Optional[dict]) -> dict:
    """Return the run's config: the file's, or on resume the resolved one saved beside it."""
    cfg = load_config(config_path)
    if overrides:
        from vit_seg_train.config import _merge
        cfg = _merge(cfg, overrides)
    out = Path(cfg['output_dir'])
    last = out / LAST
    if last.exists() and not resume:
        raise UserError(f'{last} exists: pass --resume to continue it, or choose another '
                        f'output_dir')
    if resume and last.exists():
        # The resolved config saved beside the checkpoint wins: rebuild from it, not from flags.
        saved = load_config(out / 'config.yaml')
        saved['train']['epochs'] = cfg['train']['epochs']  # allow extending a finished run
        return saved
    return cfg


def make_datasets(cfg: dict) -> tuple[SegmentationDataset, SegmentationDataset]:
    """Return the augmented training set and the raw validation set of a config."""
    d = cfg['data']
    paste_ids, paste_prob = copy_paste_settings(d.get('copy_paste'), d['classes'])
    transform = TrainTransform(crop=d.get('crop') or cfg['model']['img_size'], mean=d['mean'],
                               std=d['std'], ignore_index=d['ignore_index'], seed=cfg['seed'],
                               scale_range=d['scale_range'], jitter=d['jitter'],
                               stretch=d.get('stretch', False), size=cfg['model']['img_size'],
                               paste_ids=paste_ids, paste_prob=paste_prob)
    train_set = SegmentationDataset(d['root'], d['train_split'], transform, cache=d['cache'])
    if paste_ids:   # copy-paste draws its source frames from the training set itself
        transform.source, transform.num_frames = train_set.load, len(train_set)
    return (train_set, SegmentationDataset(d['root'], d['val_split'], None, cache=d['cache']))


def _needs_dynamic_size(model: nn.Module, crop, img_size) -> bool:
    """Whether a ViT must resample its position embeddings to train on ``crop``-sized inputs.

    Crops smaller than the network input cost fewer tokens per step (attention is quadratic in
    them). timm's ``dynamic_img_size`` resamples the ``img_size`` position embeddings to each
    input's grid; the parameters are the same, so the checkpoint rebuilds as the static-shape
    ``img_size`` model everywhere else. Token reductions are static-shape: they need full crops.
    """
    if not crop or list(crop) == list(img_size) or not isinstance(model, Segmenter):
        return False
    if model.reduction is not None:
        raise UserError(f'data.crop {list(crop)} differs from model.img_size {list(img_size)}: a '
                        f'token reduction needs training crops of the network input size')
    if any(c % p for c, p in zip(crop, model.patch_size)):
        raise UserError(f'data.crop {list(crop)} must be a multiple of the patch size '
                        f'{list(model.patch_size)}')
    return True


def make_optimizer(model: nn.Module, tc: dict) -> torch.optim.Optimizer:
    """Return AdamW with weight decay on weights only (not norms, biases, embeddings)."""
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or n.endswith(('pos_embed', 'cls_token', 'cls_emb')) else
         decay).append(p)
    return torch.optim.AdamW([{'params': decay, 'weight_decay': tc['weight_decay']},
                              {'params': no_decay, 'weight_decay': 0.0}], lr=tc['lr'])


class Run:
    """One training run: model, optimiser, schedule, logs and checkpoints of ``output_dir``."""

    def __init__(self, cfg: dict, resume: bool) -> None:
        self.world, self.rank, self.local = _dist_info()
        if self.world > 1:
            dist.init_process_group('nccl' if torch.cuda.is_available() else 'gloo')
        self.device = f'cuda:{self.local}' if torch.cuda.is_available() else 'cpu'
        if self.device.startswith('cuda'):
            torch.cuda.set_device(self.local)
        if cfg['train']['threads']:
            torch.set_num_threads(int(cfg['train']['threads']))
        self.out = Path(cfg['output_dir'])
        self.last = self.out / LAST
        self.resuming = resume and self.last.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        self.train_set, self.val_set = make_datasets(cfg)
        if not cfg.get('resolved'):
            cfg = resolve(cfg, self.train_set)
        cfg['command'] = ' '.join(shlex.quote(a) for a in sys.argv)
        if self.rank == 0:
            save_config(cfg, self.out / 'config.yaml')
        self.cfg, self.tc = cfg, cfg['train']
        self.card = card_from_config(cfg, name=self.out.name)
        torch.manual_seed(cfg['seed'])
        self.model = self._build_model()
        self.teacher = build_teacher(cfg, self.device) if self.tc.get('distill') else None
        self.steps_per_epoch = len(self.train_set) // (self.tc['batch_size'] * self.world)
        if self.steps_per_epoch == 0:
            raise UserError(f'{len(self.train_set)} training frames cannot fill one batch of '
                            f'{self.tc["batch_size"] * self.world}')
        self.total = self.tc['epochs'] * self.steps_per_epoch
        if self.tc['max_steps']:
            self.total = min(self.total, int(self.tc['max_steps']))
        self.opt = make_optimizer(self.model, self.tc)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lr_lambda(self.tc, self.total))
        self.weights = torch.tensor(cfg['data']['class_weights'], dtype=torch.float32,
                                    device=self.device)
        self.step, self.best, self.t_used = 0, -1.0, 0.0
        self.ema = make_average(self.model, self.tc.get('ema')) if self.rank == 0 else None
        if self.resuming:
            self._restore()
        self.log = CsvLog(self.out / 'metrics.csv', self.step if resume else None) \
            if self.rank == 0 else None
        self.ddp = nn.parallel.DistributedDataParallel(
            self.model, device_ids=[self.local] if self.device != 'cpu' else None) \
            if self.world > 1 else self.model
        amp = self.tc['amp']
        use_amp = amp == 'bf16' or (amp == 'auto' and self.device.startswith('cuda'))
        self.amp_dtype = torch.bfloat16 if use_amp else None
        self.loader_gen = torch.Generator().manual_seed(cfg['seed'])
        rcs = cfg['data'].get('rare_class_sampling')
        self.rcs_probs = rcs['class_probs'] if rcs else None
        self.presence = class_presence([self.train_set.load(i)[1]
                                        for i in range(len(self.train_set))],
                                       len(cfg['data']['classes'])) if rcs else None
        pipeline = cfg['data'].get('pipeline', 'host')
        if pipeline not in ('host', 'device'):
            raise UserError(f'data.pipeline must be host or device, got {pipeline!r}')
        self.device_aug = None
        if pipeline == 'device':
            from vit_seg_train.device_augment import DeviceAugment

            self.device_aug = DeviceAugment(self.train_set, self.train_set.transform,
                                            self.device, cfg['seed'])
        self.data_time, self.data_steps = 0.0, 0   # waiting for batches since the last log row

    def _build_model(self) -> nn.Module:
        tc, d = self.tc, self.cfg['data']
        model = build_model(self.cfg)
        if _needs_dynamic_size(model, d.get('crop'), self.cfg['model']['img_size']):
            model = build_model(self.cfg, dynamic_img_size=True)
        if tc.get('init_from') and not self.resuming:
            load_initial_weights(model, tc['init_from'], tc.get('init_missing') or ())
        if tc.get('fake_quant'):
            # decoder adaptation / QAT under INT8 fake quantization (vit_seg_train.fakequant):
            # scales calibrated once here, or restored with the model state on resume
            from vit_seg_train.fakequant import calibrate_on_split, quantize_model

            fq = tc['fake_quant']
            quantize_model(model, fq.get('plan'), calibrator=fq.get('calibrator', 'minmax'))
            if not self.resuming:
                calibrate_on_split(model, d['root'], d['train_split'], self.card,
                                   int(fq.get('frames', 16)))
        model = model.to(self.device)
        freeze_parameters(model, tc.get('trainable', 'all'))
        if tc.get('freeze_bn', False) not in (True, False, 'encoder'):
            raise UserError(f'train.freeze_bn must be true, false or encoder, got '
                            f'{tc["freeze_bn"]!r}')
        return model

    def _train_mode(self) -> None:
        set_train_mode(self.model, self.tc.get('freeze_bn', False),
                       self.tc.get('trainable', 'all'))

    def _restore(self) -> None:
        try:
            ck = torch.load(self.last, map_location='cpu', weights_only=True)
        except Exception as exc:   # truncated or corrupt: zip and pickle raise their own types
            raise UserError(f'cannot resume from {self.last}: {type(exc).__name__}: {exc} '
                            f'(remove it to start the run again)') from None
        self.model.load_state_dict(ck['model'])
        if self.ema is not None:   # a run that gains the average on resume starts it here
            self.ema.load(ck.get('ema', self.model.state_dict()))
        self.opt.load_state_dict(ck['optimizer'])
        self.sched.load_state_dict(ck['scheduler'])
        torch.set_rng_state(ck['rng_cpu'])
        if self.device.startswith('cuda') and 'rng_cuda' in ck:
            torch.cuda.set_rng_state(ck['rng_cuda'])
        self.step, self.best, self.t_used = int(ck['step']), float(ck['best']), \
            float(ck['seconds'])

    def state(self) -> dict[str, Any]:
        """Return everything a bit-exact resume needs."""
        s = {'model': self.model.state_dict(), 'optimizer': self.opt.state_dict(),
             'scheduler': self.sched.state_dict(), 'rng_cpu': torch.get_rng_state(),
             'step': self.step, 'best': self.best, 'seconds': self.seconds()}
        if self.device.startswith('cuda'):
            s['rng_cuda'] = torch.cuda.get_rng_state()
        if self.ema is not None:
            s['ema'] = self.ema.state()
        return s

    def seconds(self) -> float:
        """Return the training time so far, over all resumed pieces of the run."""
        return self.t_used + time.time() - self.t_start

    def batches(self, epoch: int, skip: int) -> Iterator:
        """Return this rank's batches of ``epoch`` from batch ``skip`` on."""
        n = len(self.train_set)
        order = rcs_order(self.presence, self.rcs_probs, n, self.cfg['seed'], epoch) \
            if self.rcs_probs else None
        keys = epoch_batches(n, self.tc['batch_size'], self.cfg['seed'], epoch, self.world,
                             self.rank, order)
        if self.device_aug is not None:
            return (self.device_aug.batch(epoch, s, [i for _, i in keys[s]])
                    for s in range(skip, len(keys)))
        return iter(torch.utils.data.DataLoader(
            self.train_set, batch_sampler=keys[skip:], num_workers=self.tc['num_workers'],
            collate_fn=_collate, generator=self.loader_gen, pin_memory=self.device != 'cpu',
            persistent_workers=False))

    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One optimisation step; return the loss."""
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        with torch.autocast(device_type=self.device.split(':')[0],
                            dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            logits = self.ddp(x).float()
        loss = F.cross_entropy(logits, y, weight=self.weights,
                               ignore_index=self.cfg['data']['ignore_index'])
        if self.teacher is not None:
            with torch.no_grad():
                target = self.teacher(x).float()
            loss = loss + distillation_loss(logits, target, self.tc['distill'])
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.tc['grad_clip']:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.tc['grad_clip'])
        self.opt.step()
        self.sched.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        return loss

    def validate(self, epoch: int, progress) -> None:
        """Score on the validation split; keep the best weights (rank 0): the average's, if any."""
        model = self.model if self.ema is None else self.ema.module
        rep = evaluate_model(model, self.val_set, self.card, self.device,
                             amp_dtype=self.amp_dtype)
        live = '' if self.ema is None else f'{self._score_live():.5f}'
        self.log.write(step=self.step, epoch=epoch, val_miou=f'{rep["miou"]:.5f}',
                       val_pixel_acc=f'{rep["pixel_acc"]:.5f}', seconds=f'{self.seconds():.1f}',
                       val_miou_live=live)
        progress.write(f'epoch {epoch} step {self.step}: val mIoU {rep["miou"]:.4f}'
                       + (f' (live weights {live})' if live else ''))
        if rep['miou'] > self.best:
            self.best = rep['miou']
            data = save({k: v.detach().cpu().contiguous() for k, v in
                         plain_state_dict(model).items()})
            atomic_write_bytes(self.out / BEST, data)
            write_json(self.out / 'best.json', {'step': self.step, 'epoch': epoch, **rep})

    def _score_live(self) -> float:
        """Return the live weights' mIoU beside the average's (what the average adds)."""
        rep = evaluate_model(self.model, self.val_set, self.card, self.device,
                             amp_dtype=self.amp_dtype)
        return float(rep['miou'])

    def run(self) -> dict:
        """Train to the end (or on from a checkpoint); return the summary."""
        tc = self.tc
        self.t_start = time.time()
        progress = _progress(self.total, self.step, disable=self.rank != 0)
        while self.step < self.total:
            epoch, in_epoch = divmod(self.step, self.steps_per_epoch)
            self._train_mode()
            batches = self.batches(epoch, in_epoch)
            while True:
                t0 = time.perf_counter()
                x, y = next(batches, (None, None))
                self.data_time += time.perf_counter() - t0
                self.data_steps += 1
                if x is None:
                    break
                loss = self.train_step(x, y)
                progress.update(1)
                if self.rank == 0 and (self.step % tc['log_every'] == 0
                                       or self.step == self.total):
                    self.log.write(step=self.step, epoch=epoch, loss=f'{loss.item():.5f}',
                                   lr=f'{self.sched.get_last_lr()[0]:.3e}',
                                   seconds=f'{self.seconds():.1f}',
                                   data_seconds=f'{self.data_time / self.data_steps:.4f}')
                    self.data_time, self.data_steps = 0.0, 0
                    progress.set_postfix(loss=f'{loss.item():.3f}', epoch=epoch)
                epoch_end = self.step % self.steps_per_epoch == 0
                if epoch_end and ((epoch + 1) % tc['eval_every'] == 0 or self.step == self.total):
                    if self.rank == 0:
                        self.validate(epoch, progress)
                        self._train_mode()
                if self.rank == 0 and (self.step % tc['checkpoint_every'] == 0 or epoch_end
                                       or self.step == self.total):
                    save_checkpoint(self.last, self.state())
                if self.world > 1 and epoch_end:
                    dist.barrier()
                if self.step >= self.total:
                    break
        progress.close()
        summary = {'best_val_miou': self.best, 'steps': self.step, 'seconds': self.seconds(),
                   'device': torch.cuda.get_device_name(self.local) if self.device != 'cpu'
                   else 'cpu'}
        if self.rank == 0:
            write_json(self.out / 'summary.json', summary)
        if self.world > 1:
            dist.destroy_process_group()
        return summary


def make_average(model: nn.Module, spec: Any) -> Optional[WeightAverage]:
    """Return the weight average that ``train.ema`` asks for ({decay: d}), or None (null)."""
    if spec is None or spec is False:
        return None
    decay = spec.get('decay') if isinstance(spec, dict) else None
    if not isinstance(decay, (int, float)) or not 0.0 < decay < 1.0:
        raise UserError(f'train.ema must be {{decay: d}} with 0 < d < 1, got {spec!r}')
    return WeightAverage(model, float(decay))


def train(config_path: str, resume: bool = False, overrides: Optional[dict] = None) -> dict:
    """Train from a config file; return the final summary (best val mIoU, steps, seconds)."""
    return Run(load_run_config(config_path, resume, overrides), resume).run()


def build_teacher(cfg: dict[str, Any], device: str) -> nn.Module:
    """Return the frozen model the student is distilled from.

    ``distill.teacher`` with a ``config.yaml`` beside it: that model, whatever its architecture
    (a CNN teacher for a ViT, DeiT-style); otherwise the student's own architecture without a
    token reduction, loaded from ``distill.teacher`` or ``init_from`` (self-distillation of a
    reduced model).
    """
    from vit_seg_train.checkpoint import config_path_for, load_model, load_state_dict

    dc = cfg['train']['distill']
    src = dc.get('teacher') or cfg['train'].get('init_from')
    if not src:
        raise UserError('train.distill needs distill.teacher or train.init_from')
    if dc.get('teacher') and config_path_for(src).is_file():
        teacher, _ = load_model(src)
    else:
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
        # one write per rank (a line under PIPE_BUF is atomic): unbuffered print() writes the
        # text and the newline separately, and torchrun's ranks share one stdout
        sys.stdout.write(json.dumps(train(args.config, args.resume)) + '\n')
    except UserError as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    np.seterr(all='ignore')
    sys.exit(main())
