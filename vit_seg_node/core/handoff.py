"""The hand-off between a ROS executor and the inference thread: latest-value slots.

The executor's callback ``offer``s each frame and returns at once; a worker thread takes the
newest and handles it. A frame still waiting when the next one of the same source arrives is
replaced, so the worker always starts on the latest frame and the executor never blocks on
inference. Several sources (cameras) each have their own slot, keyed by name, served in a fair
round-robin order: after a source's frame the worker looks at the next source first, so a
camera that floods cannot starve one that does not. One source is the single slot of a
one-camera node. A worker with ``batch`` N > 1 takes up to N waiting items at once (one per
source, in the same round-robin order) and hands them to its handler together: the frames of
several cameras in one call of a model with a static batch of N. The node and the model-free
relay share this class, so the relay's floor pays exactly the node's hand-off.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Hashable


class LatestFrameWorker:
    """A worker thread fed through one latest-value slot per source, served round-robin.

    ``handle(item)`` runs on the worker thread for every item taken; it must not raise (the
    node's handler counts and logs its own failures). With ``batch`` N > 1 it is called with
    a list of 1..N items of different sources instead: those waiting when the worker was free,
    in round-robin order from the source after the one served last (nothing is waited for).
    """

    def __init__(self, handle: Callable[[Any], None], name: str = 'worker',
                 batch: int = 1) -> None:
        if batch < 1:
            raise ValueError(f'batch must be >= 1, got {batch}')
        self._handle = handle
        self.batch = batch
        self._cv = threading.Condition()
        self._slots: dict[Hashable, Any] = {}   # source -> item waiting
        self._order: list[Hashable] = []        # sources in the order they first offered
        self._last: Hashable = None             # the source served last
        self._busy = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> 'LatestFrameWorker':
        """Start the worker thread; return self."""
        self._thread.start()
        return self

    def offer(self, item: Any, source: Hashable = None) -> bool:
        """Put ``item`` in ``source``'s slot without blocking; True if it replaced a waiting one.

        With a batch of 1 it then lets go of the interpreter lock for a moment
        (``time.sleep(0)``), so that the worker it woke starts now: rclpy's Python executor
        otherwise keeps the lock through its own bookkeeping until it next waits, and the worker
        with it (a hand-off of 0.40-0.48 against 0.12 ms, ``bench-node`` with the single
        executor, 2-core Xeon; docs/node.md). A worker taking batches gains from the frames of
        other sources that arrive meanwhile, and is left to wake as it does.
        """
        with self._cv:
            replaced = source in self._slots
            if not replaced and source not in self._order:
                self._order.append(source)
            self._slots[source] = item
            self._cv.notify()
        if self.batch == 1:
            time.sleep(0)
        return replaced

    def drain(self, timeout: float = 5.0) -> int:
        """Discard the items waiting and wait until the one being handled is done.

        Returns how many were discarded. Offers made meanwhile are served as usual: the caller
        stops offering first.
        """
        with self._cv:
            discarded = len(self._slots)
            self._slots.clear()
            self._cv.wait_for(lambda: not self._busy, timeout)
        return discarded

    def is_alive(self) -> bool:
        """Return whether the worker thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking items (one being handled finishes) and join the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout)

    def _take(self, most: int = 1) -> list:
        """Return up to ``most`` waiting items, from the first source after the one served last.

        The sources are visited round-robin; the last one taken counts as served last.
        """
        n = len(self._order)
        start = self._order.index(self._last) + 1 if self._last in self._order else 0
        items = []
        for i in range(n):
            source = self._order[(start + i) % n]
            if source in self._slots:
                self._last = source
                items.append(self._slots.pop(source))
                if len(items) == most:
                    break
        if not items:
            raise LookupError('no item waiting')
        return items

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._slots and not self._stopping:
                    self._cv.wait(0.5)
                if self._stopping:
                    return
                items = self._take(self.batch)
                self._busy = True
            try:
                self._handle(items if self.batch > 1 else items[0])
            finally:
                with self._cv:
                    self._busy = False
                    self._cv.notify_all()
