"""The hand-off between a ROS executor and the inference thread: a one-item latest-value slot.

The executor's callback ``offer``s each frame and returns at once; a worker thread takes the
newest and handles it. A frame still waiting when the next one arrives is replaced, so the worker
always starts on the latest frame and the executor never blocks on inference. The node and the
model-free relay share this class, so the relay's floor pays exactly the node's hand-off.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional


class LatestFrameWorker:
    """A worker thread fed through a one-item slot (latest frame wins).

    ``handle(item)`` runs on the worker thread for every item taken; it must not raise (the
    node's handler counts and logs its own failures).
    """

    def __init__(self, handle: Callable[[Any], None], name: str = 'worker') -> None:
        self._handle = handle
        self._cv = threading.Condition()
        self._item: Optional[Any] = None
        self._has_item = False
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> 'LatestFrameWorker':
        """Start the worker thread; return self."""
        self._thread.start()
        return self

    def offer(self, item: Any) -> bool:
        """Put ``item`` in the slot without blocking; return True if it replaced a waiting one."""
        with self._cv:
            replaced = self._has_item
            self._item, self._has_item = item, True
            self._cv.notify()
        return replaced

    def is_alive(self) -> bool:
        """Return whether the worker thread runs."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking items (one being handled finishes) and join the thread."""
        with self._cv:
            self._stopping = True
            self._cv.notify()
        if self._thread.is_alive():
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._has_item and not self._stopping:
                    self._cv.wait(0.5)
                if self._stopping:
                    return
                item, self._item, self._has_item = self._item, None, False
            self._handle(item)
