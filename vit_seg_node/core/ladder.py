"""Holding a latency budget with a ladder of models: the switching logic, pure and clock-free.

A ladder is an ordered list of models from most accurate (rung 0) to fastest, each with a
reference latency measured on this machine when the node starts. ``LadderController`` watches
the latencies of the frames the active rung serves and decides which rung serves the next:

* down, when the p90 of the latencies of the last ``window_s`` seconds (at least the last
  ``min_samples`` frames) exceeds the budget: to the most accurate rung whose expected p90
  fits. A frame's latency is split into its inference and the rest (conversion, copies,
  publishing); the expected latency of rung j for that frame keeps the rest and scales the
  inference by ``reference[j] / reference[active]`` -- the machine's current slowdown carries
  over, the fixed costs do not;
* up one rung, when the better rung's expected p90 fits within ``up_margin`` x budget;
* never twice within ``min_dwell_s`` (no oscillation), and after a switch only samples of the
  new rung count;
* a rung that fails ``max_failures`` frames in a row is left for good (``fail``): the next
  working rung, faster if there is one, serves instead; the last working rung is never left.

Budget 0 means off: rung 0, always. Times are seconds from any monotonic clock, latencies ms.
"""

from __future__ import annotations

import collections
import dataclasses
import os
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np

from vit_seg_node.core import schema
from vit_seg_node.core.errors import UserError
from vit_seg_node.core.io import load_yaml
from vit_seg_node.core.schema import SchemaError


@dataclasses.dataclass(frozen=True)
class LadderPolicy:
    """The controller's knobs (defaults suit camera rates of 5-30 Hz)."""

    window_s: float = 1.0      # latency samples considered
    min_samples: int = 3       # before any decision
    up_margin: float = 0.8     # go up when the better rung's expected p90 <= margin x budget
    min_dwell_s: float = 1.0   # at least this long on a rung between switches
    max_failures: int = 3      # frames failed in a row before a rung is left for good


@dataclasses.dataclass
class RungStats:
    """Time spent on a rung and frames served by it."""

    seconds: float = 0.0
    frames: int = 0


class LadderController:
    """Chooses the rung of each frame; see the module docstring."""

    def __init__(self, reference_ms: Sequence[float], budget_ms: float = 0.0,
                 policy: LadderPolicy = LadderPolicy(), now: float = 0.0) -> None:
        if not reference_ms or any(not r > 0 for r in reference_ms):
            raise ValueError(f'reference latencies must be positive, got {list(reference_ms)}')
        self.reference = [float(r) for r in reference_ms]
        self.policy = policy
        self.budget_ms = float(budget_ms)
        self.rung = 0
        self.switches = 0
        self.stats = [RungStats() for _ in self.reference]
        self._samples: collections.deque[tuple[float, float, float]] = collections.deque()
        self._since = now       # when the active rung started
        self._last = now        # last time accounted in stats
        self.failed: dict[int, str] = {}               # rung left for good -> why
        self._failures = [0 for _ in self.reference]   # frames failed in a row, per rung

    @property
    def working(self) -> list[int]:
        """Return the rungs not left for failing, most accurate first."""
        return [i for i in range(len(self.reference)) if i not in self.failed]

    def fail(self, rung: int, reason: str, now: float) -> bool:
        """Record that ``rung`` failed a frame; return True when it is left for good now."""
        self._failures[rung] += 1
        if rung in self.failed or self._failures[rung] < self.policy.max_failures or \
                len(self.working) < 2:
            return False
        self.failed[rung] = reason
        if rung == self.rung:
            faster = [i for i in self.working if i > rung]
            self._switch(faster[0] if faster else self.working[-1], now)
        return True

    def set_budget(self, budget_ms: float, now: float) -> None:
        """Change the budget (0: off, back to rung 0 at once)."""
        self.budget_ms = float(budget_ms)
        if self.budget_ms <= 0 and self.rung != self.working[0]:
            self._switch(self.working[0], now)

    def observe(self, latency_ms: float, now: float, infer_ms: Optional[float] = None) -> int:
        """Record a frame the active rung served; return the rung of the next frame.

        ``latency_ms``: what the budget applies to; ``infer_ms``: its inference part (default:
        all of it).
        """
        self._account(now)
        self.stats[self.rung].frames += 1
        self._failures[self.rung] = 0
        infer = float(latency_ms if infer_ms is None else min(infer_ms, latency_ms))
        self._samples.append((now, float(latency_ms), infer))
        while len(self._samples) > self.policy.min_samples and \
                self._samples[0][0] < now - self.policy.window_s:
            self._samples.popleft()
        target = self.decide(now)
        if target != self.rung:
            self._switch(target, now)
        return self.rung

    def decide(self, now: float) -> int:
        """Return the rung the next frame should use (no state change)."""
        working = self.working
        if self.budget_ms <= 0:
            return working[0]
        p = self.policy
        if len(self._samples) < p.min_samples or now - self._since < p.min_dwell_s:
            return self.rung
        s = np.array([(total, infer) for _, total, infer in self._samples])
        rest, scale = s[:, 0] - s[:, 1], s[:, 1] / self.reference[self.rung]
        expected_p90 = [float(np.percentile(rest + r * scale, 90)) for r in self.reference]
        p90 = expected_p90[self.rung]   # the observed p90 itself
        if p90 > self.budget_ms:
            fits = [i for i in working if i > self.rung and expected_p90[i] <= self.budget_ms]
            return fits[0] if fits else working[-1]
        better = [i for i in working if i < self.rung]
        if better and expected_p90[better[-1]] <= p.up_margin * self.budget_ms:
            return better[-1]
        return self.rung

    def _account(self, now: float) -> None:
        self.stats[self.rung].seconds += max(0.0, now - self._last)
        self._last = now

    def _switch(self, rung: int, now: float) -> None:
        self._account(now)
        self.rung = rung
        self.switches += 1
        self._since = now
        self._samples.clear()

    def time_on_rungs(self, now: Optional[float] = None) -> list[float]:
        """Return the seconds spent on each rung so far."""
        if now is not None:
            self._account(now)
        return [s.seconds for s in self.stats]


LADDER_SUFFIX = '.ladder.yaml'
MAX_RUNGS = 8       # every rung is loaded and warmed up at start


def load_ladder(path: Union[str, os.PathLike],
                warn: Optional[Callable[[str], None]] = None) -> list[Path]:
    """Read a ladder file: ``rungs:`` a list of model paths, most accurate first.

    The ladder's schema: one key, ``rungs``, a list of 1..``MAX_RUNGS`` non-empty paths,
    relative ones taken from the file's folder. A model listed twice is loaded once (``warn``
    says so). Returns the model paths; one UserError naming the file and the key when the file
    is unreadable or malformed, or names a missing model.
    """
    p = Path(path)
    try:
        doc = schema.mapping(load_yaml(p, 'model ladder'), 'model ladder', ('rungs',))
        rungs = schema.sequence(schema.required(doc, 'rungs'), 'rungs', 1, MAX_RUNGS)
        names = [schema.text(r, f'rungs[{i}]', 4096, empty=False) for i, r in enumerate(rungs)]
    except SchemaError as exc:
        raise UserError(f'model ladder {p}: {exc}') from None
    models = list(dict.fromkeys((p.parent / r).resolve() for r in names))
    if len(models) < len(names) and warn is not None:
        warn(f'model ladder {p}: {len(names) - len(models)} rung(s) listed twice, loaded once')
    missing = [str(m) for m in models if not m.is_file()]
    if missing:
        raise UserError(f'model ladder {p}: models not found: {missing}')
    return models
