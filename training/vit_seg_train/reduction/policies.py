"""Token-reduction policies and their fixed per-layer schedules.

A policy turns a budget into a *schedule*: for each encoder block, ``None`` or a step with
static counts, derived once from the input size, so every tensor shape depends on the input size
alone (ToMe's fixed ``r`` list, made general). Policies use the block's own ``norm1`` (and, for
EViT, its q/k projection weights) and the pure functions in ``ops``.

Deviations from the papers, all forced by static shapes or chosen for equal cost, are stated in
each class docstring.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from vit_seg_train.reduction import ops


@dataclasses.dataclass(frozen=True)
class Step:
    """One reduction before a block: how many tokens go (static)."""

    kind: str
    count: int
    radius: float = 0.0


class Policy:
    """Base class: a name, a schedule builder and the step implementation."""

    name = 'none'
    proportional_attention = False

    def __init__(self, **params: Any) -> None:
        self.params = params

    def schedule(self, grid: tuple[int, int], depth: int) -> list[Optional[Step]]:
        """Return one entry per block (``None``: no reduction before that block)."""
        return [None] * depth

    def apply(self, step: Step, block: nn.Module, prefix: torch.Tensor, state: ops.TokenState,
              grid: tuple[int, int]) -> ops.TokenState:
        """Apply ``step`` before ``block``."""
        raise NotImplementedError

    def describe(self, grid: tuple[int, int], depth: int) -> dict[str, Any]:
        """Return the JSON-ready schedule: parameters and tokens entering each block."""
        return {'policy': self.name, 'params': dict(self.params),
                'tokens_per_block': token_counts(self, grid, depth)}


def token_counts(policy: Policy, grid: tuple[int, int], depth: int) -> list[int]:
    """Return the number of patch tokens each block processes under ``policy``."""
    n = grid[0] * grid[1]
    counts = []
    for step in policy.schedule(grid, depth):
        if step is not None:
            n = n - step.count + (1 if step.kind == 'prune_fuse' else 0)
        counts.append(n)
    return counts


class NoReduction(Policy):
    """The unpruned model."""

    name = 'none'


class EViT(Policy):
    """EViT: keep the tokens the class token attends to most, fuse the rest into one token.

    Liang et al., "Not All Patches Are What You Need: Expediting Vision Transformers via Token
    Reorganizations", ICLR 2022. Keep rate ``keep_rate`` at blocks ``locations`` (the paper's
    4th, 7th and 10th of 12). Deviation: the class attention is computed with the block's own
    q/k projections *before* the block (the paper prunes between its attention and MLP), which
    selects from the same attention map at the cost of one extra key projection.
    """

    name = 'evit'

    def schedule(self, grid, depth):
        rate = float(self.params.get('keep_rate', 1.0))
        locations = list(self.params.get('locations', [3, 6, 9]))
        out: list[Optional[Step]] = [None] * depth
        if rate >= 1.0:
            return out
        n = grid[0] * grid[1]
        for loc in locations:
            keep = max(1, int(math.ceil(n * rate)))
            out[loc] = Step('prune_fuse', n - keep)
            n = keep + 1
        return out

    def apply(self, step, block, prefix, state, grid):
        attn = class_attention(block, prefix[:, :1], state.x)          # B x n
        attn = ops.snap(attn.clamp_min(1e-12).log(), 2.0 ** -10).exp()  # relative grid
        keep = state.x.shape[1] - step.count
        order = ops.argsort(attn, descending=True)
        out_idx = order[:, keep:]
        w = torch.gather(attn, 1, out_idx).unsqueeze(-1)
        fused = (ops.gather_tokens(state.x, out_idx) * w).sum(1, keepdim=True) / \
            w.sum(1, keepdim=True).clamp_min(1e-12)
        new = ops.prune(state, attn, keep)
        b = fused.shape[0]
        return ops.TokenState(
            torch.cat([new.x, fused], 1),
            torch.cat([new.size, torch.full((b, 1, 1), float(step.count), dtype=new.size.dtype,
                                            device=fused.device)], 1),
            torch.cat([new.pos, new.pos.new_zeros(b, 1, 2)], 1), new.assign, new.store)


def class_attention(block: nn.Module, cls: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Return the class token's head-averaged attention over the patch tokens (B x n)."""
    attn = block.attn
    c = x.shape[-1]
    h = attn.num_heads
    d = c // h
    w, b = attn.qkv.weight, attn.qkv.bias
    q = F.linear(block.norm1(cls), w[:c], None if b is None else b[:c])
    k = F.linear(block.norm1(x), w[c:2 * c], None if b is None else b[c:2 * c])
    q = attn.q_norm(q.reshape(-1, 1, h, d).transpose(1, 2))
    k = attn.k_norm(k.reshape(k.shape[0], -1, h, d).transpose(1, 2))
    logits = (q.float() @ k.float().transpose(-1, -2)) * (d ** -0.5)   # B x h x 1 x n
    return logits.softmax(-1).mean(1)[:, 0]


class ToMe(Policy):
    """ToMe: bipartite soft matching, merging ``r`` tokens before every block from ``start``.

    Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023; unmerge for dense outputs as
    in Bolya & Hoffman, "Token Merging for Fast Stable Diffusion", CVPRW 2023. Size-weighted
    averages and proportional attention as in the paper. Deviation: the similarity metric is the
    block's LayerNorm'd input rather than the attention keys (same cost for every policy here;
    the keys would need a second key projection outside timm's fused attention).
    """

    name = 'tome'
    proportional_attention = True

    def schedule(self, grid, depth):
        r = int(self.params.get('r', 0))
        start = int(self.params.get('start', 0))
        n = grid[0] * grid[1]
        out: list[Optional[Step]] = [None] * depth
        for i in range(start, depth):
            rr = min(r, n // 2 - 1)
            if rr > 0:
                out[i] = Step('merge', rr)
                n -= rr
        return out

    def apply(self, step, block, prefix, state, grid):
        return ops.bipartite_merge(state, block.norm1(state.x), step.count)


class WindowMerge(Policy):
    """CTS/ALGM-style local merging: the ``windows`` most uniform 2x2 windows become one token.

    Lu et al., "Content-aware Token Sharing for Efficient Semantic Segmentation with Vision
    Transformers", CVPR 2023 (2x2 windows, fixed budget), with the training-free cosine-similarity
    window score of Norouzi et al., "ALGM: Adaptive Local-then-Global Token Merging for Efficient
    Semantic Segmentation with Plain Vision Transformers", CVPR 2024 (ALGM's first, local stage;
    its threshold is replaced by a fixed count so shapes stay static). Applied once, before block
    ``at`` (ALGM: after the first block).
    """

    name = 'window'

    def schedule(self, grid, depth):
        frac = float(self.params.get('merge_fraction', 0.0))
        at = int(self.params.get('at', 1))
        out: list[Optional[Step]] = [None] * depth
        nw = (grid[0] // 2) * (grid[1] // 2)
        m = min(int(round(frac * nw)), nw - 1)   # keep one window: no empty tensors
        if m > 0:
            out[at] = Step('window', 3 * m)
        return out

    def apply(self, step, block, prefix, state, grid):
        return ops.window_merge(state, grid, block.norm1(state.x), step.count // 3)


class NeighborMerge(Policy):
    """This project's method: progressive, spatially local token merging ("neighbour merge").

    Segmentation needs every position back, and unmerging gives a position the features of the
    token it was merged into. ToMe may merge two similar patches anywhere in the image (a shadow
    on the road with a dark car across the frame); after unmerging, both positions share one
    feature vector and one label. Neighbour merge keeps ToMe's cheap bipartite matching and fixed
    ``r`` per block, but only lets a token merge with tokens whose centroid lies within
    ``radius`` patches of its own (centroids are tracked, size-weighted), and re-sorts the
    running tokens in raster order of their centroids before each step so that the even/odd
    bipartite split pairs spatial neighbours. Merged regions therefore stay connected, grow like
    superpixels along homogeneous areas (sky, road, facades) and stop at boundaries. The radius
    grows with the mean region size (``radius * sqrt(N / n)``). Unlike ToMe's merge before every
    block, it merges a fraction ``ratio`` of the running tokens at a few ``locations`` only: at
    batch 1 on a CPU each reduction step has a fixed cost, so fewer, larger steps are faster for
    the same token budget. With ``window_first`` the first step is the exact 2x2-window merge
    (``WindowMerge``) of that fraction of windows, and the neighbour steps follow at the later
    locations: uniform windows are cheapest to find on the full grid, progressive neighbour
    merging then continues region growing where windows cannot. The similarity is computed in
    float32 on LayerNorm'd features, outside any INT8 path, so quantized blocks do not reorder
    the TopK that selects merges. Static shapes: TopK, Gather, one-hot MatMul only.
    """

    name = 'neighbor'
    proportional_attention = True

    def schedule(self, grid, depth):
        ratio = float(self.params.get('ratio', 0.0))
        locations = list(self.params.get('locations', [1, 3, 5, 7]))
        radius = float(self.params.get('radius', 1.5))
        window = float(self.params.get('window_first', 0.0))
        n0 = n = grid[0] * grid[1]
        out: list[Optional[Step]] = [None] * depth
        if (ratio > 0 or window > 0) and any(not 0 <= loc < depth for loc in locations):
            raise ValueError(f'neighbour merge locations {locations} must be blocks 0..{depth - 1}')
        if window > 0:
            out = WindowMerge(merge_fraction=window, at=locations[0]).schedule(grid, depth)
            n -= out[locations[0]].count
            locations = locations[1:]
        for loc in locations:
            rr = min(int(round(ratio * n)), n // 2 - 1)   # at least one A token stays
            if rr > 0:
                out[loc] = Step('neighbor', rr, radius * math.sqrt(n0 / n))
                n -= rr
        return out

    def metric(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Return the similarity features: LayerNorm'd tokens, float unless ``score_int8``.

        ``score_int8: true`` rounds them to symmetric per-tensor INT8 first, to measure what
        scoring inside an INT8 path would do (see docs/mixed-precision.md); not for deployment.
        """
        m = block.norm1(x)
        if self.params.get('score_int8'):
            scale = (m.detach().abs().amax() / 127).clamp_min(1e-12)
            m = torch.clamp(torch.round(m / scale), -127, 127) * scale
        return m

    def apply(self, step, block, prefix, state, grid):
        if step.kind == 'window':
            return ops.window_merge(state, grid, self.metric(block, state.x), step.count // 3)
        key = state.pos[..., 0] * (grid[1] + 1) + state.pos[..., 1]
        state = ops.reorder(state, ops.argsort(key))
        n = state.x.shape[1]
        pa, pb = state.pos[:, 0:n:2], state.pos[:, 1:n:2]
        # squared distances as one small MatMul plus broadcasts (cheap in ONNX Runtime)
        d2 = (pa * pa).sum(-1, keepdim=True) + (pb * pb).sum(-1).unsqueeze(1) - \
            2.0 * pa @ pb.transpose(1, 2)
        return ops.bipartite_merge(state, self.metric(block, state.x), step.count,
                                   allowed=d2 <= step.radius ** 2)


POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (NoReduction, EViT, ToMe, WindowMerge, NeighborMerge)}


def make_policy(spec: Optional[dict[str, Any]]) -> Policy:
    """Build a policy from ``{'policy': name, **params}`` (exact name lookup)."""
    spec = dict(spec or {'policy': 'none'})
    name = spec.pop('policy', 'none')
    if name not in POLICIES:
        raise KeyError(f'unknown reduction policy {name!r}; known: {sorted(POLICIES)}')
    return POLICIES[name](**spec)
