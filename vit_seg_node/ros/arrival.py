"""Noticing a camera whose frames never arrive: a publisher is matched, no frame comes.

Pure bookkeeping, and the diagnostic level it leads to.
"""

from __future__ import annotations

from typing import Any, Optional

from diagnostic_msgs.msg import DiagnosticStatus

# seconds a publisher must be matched without a frame arriving before the node says so
SILENT_AFTER_S = 3.0


class ArrivalWatch:
    """Track matched publishers and received frames; ``silent_for`` says how long it is wrong.

    Silent: publishers have been matched for ``after_s`` seconds and not one frame has arrived
    since the first of them was matched (frames lost in transport, or a publisher that never
    publishes). A camera that stops after frames did arrive is not silent here (that is the
    node's ``stale_timeout``). ``first_report`` is true once, the first time the node is silent.
    """

    def __init__(self, after_s: float = SILENT_AFTER_S) -> None:
        self.after_s = after_s
        self.publishers = 0
        self._matched_at: Optional[float] = None
        self._frames_at_match = 0
        self._arrived = False
        self._reported = False

    def update(self, publishers: int, frames: int, now: float) -> Optional[float]:
        """Record the matched publishers and the frames received so far; return ``silent_for``."""
        self.publishers = publishers
        if publishers == 0:
            self._matched_at, self._arrived = None, False
        elif self._matched_at is None:
            self._matched_at, self._frames_at_match = now, frames
        elif frames != self._frames_at_match:
            self._arrived = True
        return self.silent_for(now)

    def silent_for(self, now: float) -> Optional[float]:
        """Return how long matched publishers have sent no frame, once past ``after_s``."""
        if self._matched_at is None or self._arrived or now - self._matched_at < self.after_s:
            return None
        return now - self._matched_at

    def first_report(self, now: float) -> bool:
        """Return true once: the first time the node is silent."""
        if self._reported or self.silent_for(now) is None:
            return False
        self._reported = True
        return True


def silent_level(watch: ArrivalWatch, subscription: Any, hint: str, now: float
                 ) -> Optional[tuple[int, str]]:
    """Return the diagnostic level and message of a silent camera (None: it is not silent)."""
    silent = watch.silent_for(now)
    if silent is None or subscription is None:
        return None
    return DiagnosticStatus.ERROR, (f'{watch.publishers} publisher(s) matched on '
                                    f'{subscription.topic_name}, no frame for {silent:.0f} s: '
                                    f'{hint}')
