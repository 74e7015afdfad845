"""Static-shape token-reduction primitives: small pure functions, no module state.

Every function keeps shapes a function of the input size only and uses ops that ONNX and
TensorRT hold with fixed shapes: TopK with a constant k (also used as argsort), Gather,
MatMul with one-hot matrices instead of scatter-reduce, Concat.

Bookkeeping for dense restoration (``TokenState``): every original patch position ``p`` points,
through ``assign[:, p]``, into a virtual array ``V = concat(store..., x)`` -- ``store`` holds the
last features of tokens that left the encoder early (pruned), ``x`` the tokens still running.
A reduction step maps old token slots to new ones (``old_to_new``) and ``assign`` follows by one
gather. At the end ``gather(V, assign)`` restores the dense grid: pruned positions get their last
features, merged positions the features of the token they were merged into (ToMe's unmerge).
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F


def gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Return ``x[b, idx[b, i]]`` for B x n x C ``x`` and B x k ``idx``.

    One row Gather on the flattened batch (ONNX Gather): far cheaper on CPU than GatherElements
    with an index expanded to every channel.
    """
    b, n, c = x.shape
    offsets = (torch.arange(b, device=idx.device) * n).unsqueeze(-1)
    return x.reshape(b * n, c)[(idx + offsets).reshape(-1)].reshape(b, idx.shape[1], c)


def argsort(values: torch.Tensor, descending: bool = False) -> torch.Tensor:
    """Argsort along the last axis; exports as ONNX TopK with k = n (static).

    Ties go to the lower index, as ONNX TopK specifies; in eager mode a stable sort gives the
    same order, so exported and eager models pick the same tokens even when scores tie exactly
    (they do: tokens merged into one have identical features).
    """
    if torch.onnx.is_in_onnx_export():
        return torch.topk(values, values.shape[-1], dim=-1, largest=descending,
                          sorted=True).indices
    return torch.sort(values, dim=-1, descending=descending, stable=True).indices


def snap(values: torch.Tensor, step: float = 2.0 ** -12) -> torch.Tensor:
    """Round selection scores to a grid so that float noise between runtimes rarely flips them.

    PyTorch and ONNX Runtime compute similarities a few ULPs apart; an exact near-tie at a TopK
    boundary could then select different tokens. On the grid, near-ties become exact ties,
    which both resolve by index.
    """
    return torch.round(values / step) * step


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """Return ``inv`` with ``inv[perm[i]] = i`` (a TopK on the permutation, no scatter)."""
    return argsort(perm.to(torch.float32))


def one_hot(idx: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """Return B x k x n one-hot rows for B x k indices (a comparison, no scatter)."""
    return (idx.unsqueeze(-1) == torch.arange(n, device=idx.device)).to(dtype)


def cosine_similarity_matrix(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Return B x na x nb cosine similarities (computed in float32)."""
    a = F.normalize(a.float(), dim=-1)
    b = F.normalize(b.float(), dim=-1)
    return a @ b.transpose(1, 2)


@dataclasses.dataclass
class TokenState:
    """Tokens still in the encoder plus what dense restoration needs.

    ``x``: B x n x C running patch tokens; ``size``: B x n x 1 number of original patches each
    token stands for; ``pos``: B x n x 2 (row, col) centroid on the patch grid; ``assign``:
    B x N index into ``concat(store + [x])`` for each original position; ``store``: features of
    tokens that left early.
    """

    x: torch.Tensor
    size: torch.Tensor
    pos: torch.Tensor
    assign: torch.Tensor
    store: list[torch.Tensor]

    @property
    def store_len(self) -> int:
        """Return the number of stored (exited) tokens, a static Python int."""
        return sum(s.shape[1] for s in self.store)

    @classmethod
    def start(cls, x: torch.Tensor, grid: tuple[int, int]) -> 'TokenState':
        """Return the state of a full B x N x C patch grid (row-major)."""
        b, n, _ = x.shape
        gh, gw = grid
        ar = torch.arange(n, device=x.device)
        pos = torch.stack([(ar // gw).float(), (ar % gw).float()], -1)
        pos = pos.unsqueeze(0).expand(b, -1, -1)
        return cls(x, torch.ones(b, n, 1, dtype=x.dtype, device=x.device), pos,
                   ar.unsqueeze(0).expand(b, -1), [])

    def values(self) -> torch.Tensor:
        """Return the virtual array ``concat(store + [x])`` that ``assign`` points into."""
        return torch.cat(self.store + [self.x], dim=1) if self.store else self.x

    def restore(self) -> torch.Tensor:
        """Return the dense B x N x C grid (gather from stored and running tokens)."""
        return gather_tokens(self.values(), self.assign)


def multiplicity(assign: torch.Tensor, n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Return B x n: how many original positions point at each of ``n`` tokens (no scatter)."""
    return one_hot(assign, n, dtype).sum(1)


def multiplicity_bias(assign: torch.Tensor, n: int, dtype: torch.dtype) -> torch.Tensor:
    """Return B x n attention logit offsets ``log(multiplicity)`` (-1e4 for tokens with none).

    Attention over a dense grid where ``m`` positions hold copies of one token equals attention
    over the unique tokens with ``log m`` added to that key's logits (proportional attention):
    the decoder can run on the reduced tokens and give the dense result.
    """
    m = multiplicity(assign, n, torch.float32)
    return torch.where(m > 0, m.clamp_min(1.0).log(), torch.full_like(m, -1e4)).to(dtype)


def follow(state: TokenState, old_to_new: torch.Tensor, x: torch.Tensor, size: torch.Tensor,
           pos: torch.Tensor, exited: Optional[torch.Tensor] = None) -> TokenState:
    """Return the state after a reduction step.

    ``old_to_new`` (B x n_old) gives, for every running token, its slot in the new virtual array
    ``concat(store + [exited] + [x])``; stored slots keep their index.
    """
    s = state.store_len
    b = old_to_new.shape[0]
    keep = torch.arange(s, device=old_to_new.device).unsqueeze(0).expand(b, -1)
    full = torch.cat([keep, old_to_new], dim=1) if s else old_to_new
    assign = torch.gather(full, 1, state.assign)
    store = state.store + ([exited] if exited is not None and exited.shape[1] else [])
    return TokenState(x, size, pos, assign, store)


def prune(state: TokenState, scores: torch.Tensor, keep: int) -> TokenState:
    """Keep the ``keep`` highest-scoring tokens; the others exit with their current features."""
    n = state.x.shape[1]
    order = argsort(scores, descending=True)          # kept first, exited after
    kept_idx, exit_idx = order[:, :keep], order[:, keep:]
    e = n - keep
    new_order = torch.cat([exit_idx, kept_idx], dim=1)
    old_to_new = inverse_permutation(new_order) + state.store_len
    x = gather_tokens(state.x, kept_idx)
    size = gather_tokens(state.size, kept_idx)
    pos = gather_tokens(state.pos, kept_idx)
    exited = gather_tokens(state.x, exit_idx) if e else None
    return follow(state, old_to_new, x, size, pos, exited)


def reorder(state: TokenState, perm: torch.Tensor) -> TokenState:
    """Permute the running tokens (``new[i] = old[perm[i]]``)."""
    old_to_new = inverse_permutation(perm) + state.store_len
    return follow(state, old_to_new, gather_tokens(state.x, perm),
                  gather_tokens(state.size, perm), gather_tokens(state.pos, perm))


def weighted_merge(dst_x: torch.Tensor, dst_w: torch.Tensor, src_x: torch.Tensor,
                   src_w: torch.Tensor, dst_idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge source tokens into destinations by weighted average, with a one-hot matmul.

    ``dst_x`` B x nd x C, ``dst_w`` B x nd x 1, ``src_x`` B x r x C, ``src_w`` B x r x 1, and
    ``dst_idx`` B x r (destination of each source). Returns merged features and summed weights.
    """
    m = one_hot(dst_idx, dst_x.shape[1], dst_x.dtype).transpose(1, 2)   # B x nd x r
    w = dst_w + m @ src_w
    x = (dst_x * dst_w + m @ (src_x * src_w)) / w
    return x, w


def bipartite_merge(state: TokenState, metric: torch.Tensor, r: int,
                    allowed: Optional[torch.Tensor] = None) -> TokenState:
    """Merge by ToMe's bipartite soft matching: the ``r`` best-matched A tokens into B tokens.

    A = running tokens at even slots, B = at odd slots; each A token's best B match by cosine
    similarity of ``metric``; the ``r`` A tokens with the highest match merge (size-weighted
    average of features and centroids). ``allowed`` (B x nA x nB bool) restricts the matches.
    New order: unmerged A tokens (in their previous order), then B tokens.
    """
    n = state.x.shape[1]
    ia, ib = list(range(0, n, 2)), list(range(1, n, 2))
    na, nb = len(ia), len(ib)
    r = min(r, na - 1)   # never an empty tensor
    if r <= 0:
        return state
    sim = snap(cosine_similarity_matrix(metric[:, ia], metric[:, ib]))
    if allowed is not None:
        sim = sim.masked_fill(~allowed, -2.0)
    best = sim.max(dim=-1).values                       # B x nA
    # first index of the maximum: ties resolved identically in PyTorch and ONNX Runtime
    cols = torch.arange(nb, device=sim.device)
    best_b = torch.where(sim == best.unsqueeze(-1), cols, nb).min(dim=-1).values
    edge_order = argsort(best, descending=True)         # merged first
    is_src = inverse_permutation(edge_order) < r         # B x nA
    # unmerged A tokens keep their relative order (a canonical order: near-equal scores that
    # PyTorch and ONNX Runtime round differently cannot reorder the tokens of later blocks)
    ar = torch.arange(na, device=sim.device)
    a_order = argsort((is_src.to(torch.int64) * na + ar).to(torch.float32))
    src, unm = edge_order[:, :r], a_order[:, :na - r]
    dst = torch.gather(best_b, 1, src)
    xa, xb = state.x[:, ia], state.x[:, ib]
    sa, sb = state.size[:, ia], state.size[:, ib]
    pa, pb = state.pos[:, ia], state.pos[:, ib]
    xb_new, sb_new = weighted_merge(xb, sb, gather_tokens(xa, src), gather_tokens(sa, src), dst)
    pb_new, _ = weighted_merge(pb, sb, gather_tokens(pa, src), gather_tokens(sa, src), dst)
    x = torch.cat([gather_tokens(xa, unm), xb_new], dim=1)
    size = torch.cat([gather_tokens(sa, unm), sb_new], dim=1)
    pos = torch.cat([gather_tokens(pa, unm), pb_new], dim=1)
    # new slot of every A token: its rank among unmerged, or its destination's slot
    a_new = torch.where(is_src, (na - r) + best_b, inverse_permutation(a_order))
    b_new = (na - r) + torch.arange(nb, device=x.device).unsqueeze(0).expand(x.shape[0], -1)
    ab = torch.cat([a_new, b_new], dim=1)               # indexed by (A slots, B slots)
    back = torch.tensor(inverse_of(ia + ib), device=x.device)
    old_to_new = ab[:, back] + state.store_len
    return follow(state, old_to_new, x, size, pos)


def inverse_of(order: list[int]) -> list[int]:
    """Return the inverse of a Python permutation list (static, computed at trace time)."""
    inv = [0] * len(order)
    for i, j in enumerate(order):
        inv[j] = i
    return inv


def window_merge(state: TokenState, grid: tuple[int, int], metric: torch.Tensor,
                 m: int) -> TokenState:
    """Merge the ``m`` most uniform 2x2 windows of a full patch grid into one token each.

    CTS/ALGM-style local merging: a window's score is the mean pairwise cosine similarity of its
    four tokens. Requires the running tokens to be the full row-major grid (even sides).
    New order: merged windows (by decreasing score), then the four tokens of each other window.
    """
    b, n, c = state.x.shape
    gh, gw = grid
    if n != gh * gw or gh % 2 or gw % 2:
        raise ValueError('window_merge needs the full grid with even sides')
    nw = n // 4
    # static index: window w, slot s -> grid position
    win = [((2 * (w // (gw // 2)) + s // 2) * gw + 2 * (w % (gw // 2)) + s % 2)
           for w in range(nw) for s in range(4)]
    widx = torch.tensor(win, device=state.x.device)

    def windows(t: torch.Tensor) -> torch.Tensor:
        return t[:, widx].reshape(b, nw, 4, t.shape[-1])
    f = F.normalize(windows(metric).float(), dim=-1)
    sim = f @ f.transpose(-1, -2)                        # B x nw x 4 x 4
    score = snap((sim.sum(dim=(-1, -2)) - 4.0) / 12.0)   # mean of the 6 off-diagonal pairs
    order = argsort(score, descending=True)
    merged_w, kept_w = order[:, :m], order[:, m:]
    xw, sw, pw = windows(state.x), windows(state.size), windows(state.pos)

    def pick(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return torch.gather(t, 1, idx[:, :, None, None].expand(-1, -1, 4, t.shape[-1]))
    sm = pick(sw, merged_w)
    x_m = (pick(xw, merged_w) * sm).sum(2) / sm.sum(2)
    p_m = (pick(pw, merged_w) * sm).sum(2) / sm.sum(2)
    x_k = pick(xw, kept_w).reshape(b, -1, c)
    x = torch.cat([x_m, x_k], dim=1)
    size = torch.cat([sm.sum(2), pick(sw, kept_w).reshape(b, -1, 1)], dim=1)
    pos = torch.cat([p_m, pick(pw, kept_w).reshape(b, -1, 2)], dim=1)
    rank = inverse_permutation(order)                    # B x nw
    slot = torch.arange(4, device=x.device)
    new_w = torch.where((rank < m).unsqueeze(-1), rank.unsqueeze(-1),
                        m + 4 * (rank.unsqueeze(-1) - m) + slot)    # B x nw x 4
    back = torch.tensor(inverse_of(win), device=x.device)
    old_to_new = new_w.reshape(b, n)[:, back] + state.store_len
    return follow(state, old_to_new, x, size, pos)
