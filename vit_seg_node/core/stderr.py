"""Capture what C libraries print to the process's stderr (libjpeg, libpng, OpenCV).

Decoders report a corrupt frame by printing to file descriptor 2, one line per frame, which
bypasses a node's throttled logging. ``captured_stderr`` points fd 2 at a temporary file for the
duration of a call and hands back what was written, so the caller can log it its own way.
Anything another thread writes in that window is captured too and handed back, not lost.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading
from typing import Iterator

_LOCK = threading.Lock()


@contextlib.contextmanager
def captured_stderr() -> Iterator[list[str]]:
    """Redirect fd 2 to a temporary file; after the block the list holds the captured text."""
    out: list[str] = []
    with _LOCK, tempfile.TemporaryFile(mode='w+b') as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text = tmp.read().decode('utf-8', 'replace').strip()
            if text:
                out.append(text)
